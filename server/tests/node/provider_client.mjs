// An unmodified y-websocket 2.1.0 client provider, driven from a Rust test.
// Usage: node provider_client.mjs <serverUrl> <room> <text-to-insert> <text-to-wait-for>
// Prints the final text of `t` as JSON on stdout, exits 0 on success.
import { createRequire } from 'node:module'
import path from 'node:path'

const jsDir = process.env.CONFORMANCE_JS_DIR || path.resolve(import.meta.dirname, '../../../js-reference')
const require = createRequire(path.join(jsDir, 'package.json'))
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

const [serverUrl, room, insert, waitFor] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: WebSocket })
const text = doc.getText('t')
const fail = (why) => { console.error(why); process.exit(1) }
const timer = setTimeout(() => fail(`timed out; text is ${JSON.stringify(text.toString())}`), 15000)

provider.on('sync', (synced) => {
  if (!synced) return
  text.insert(text.length, insert)
  const check = () => {
    if (text.toString().includes(waitFor)) {
      clearTimeout(timer)
      // Give the provider a moment to flush its own update.
      setTimeout(() => {
        console.log(JSON.stringify(text.toString()))
        provider.destroy()
        process.exit(0)
      }, 200)
    }
  }
  text.observe(check)
  check()
})
