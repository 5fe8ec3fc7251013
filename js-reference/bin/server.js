#!/usr/bin/env node
// Starts the WebSocket server, configured by y-redis's environment names only.
// Prints `listening on <port>` on stdout once connections are accepted.

import { createStorageFromEnv } from '../src/storage/index.js'
import { createAuth } from '../src/auth.js'
import { createYWebsocketServer } from '../src/server.js'

const env = process.env
const store = await createStorageFromEnv(env)
const auth = env.AUTH_PUBLIC_KEY
  ? await createAuth({ publicKey: env.AUTH_PUBLIC_KEY, permCallback: env.AUTH_PERM_CALLBACK })
  : null
if (auth == null) console.error('AUTH_PUBLIC_KEY is not set: every connection gets read-write access')

const server = await createYWebsocketServer({
  port: Number(env.PORT ?? 3002),
  store,
  redisUrl: env.REDIS || 'redis://localhost:6379',
  redisPrefix: env.REDIS_PREFIX || 'y',
  auth
})
process.stdout.write(`listening on ${server.port}\n`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(0), 3000).unref()
  try {
    await server.destroy()
    await store.destroy()
  } catch (err) {
    console.error('error while stopping:', /** @type {Error} */ (err).message)
  }
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
