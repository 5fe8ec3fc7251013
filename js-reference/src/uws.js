// uWebSockets.js, the WebSocket server y-redis 0.1.6 runs on, loaded from the native
// binary of @trufflesuite/uws-js-unofficial for this platform and Node ABI. The
// package's own entry point silently falls back to a slower `ws`-based imitation when
// the binary does not load; a yardstick must not change its nature quietly, so a
// missing binary is an error here.

import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const binary = `@trufflesuite/uws-js-unofficial/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`

/** @type {typeof import('@trufflesuite/uws-js-unofficial')} */
const uws = require(binary)

export default uws
