// A y-websocket 2.1.0 provider on the npm `ws` client, authenticating with the
// subprotocol `yauth-<token>` offered next to a second protocol, driven from a Rust test.
// `ws` refuses a handshake whose answer names a protocol it did not offer, or none.
// Usage: node auth_provider_client.mjs <serverUrl> <room> <token> <text-to-insert> <text-to-wait-for>
// Prints `{"protocol": <the protocol the server chose>, "text": <final text of t>}` on
// stdout and exits 0 on success.
import { createRequire } from 'node:module'
import path from 'node:path'

const jsDir = process.env.CONFORMANCE_JS_DIR || path.resolve(import.meta.dirname, '../../../js-reference')
const require = createRequire(path.join(jsDir, 'package.json'))
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

const [serverUrl, room, token, insert, waitFor] = process.argv.slice(2)
const offered = [`yauth-${token}`, 'y-second']
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  protocols: offered
})
const text = doc.getText('t')
const fail = (why) => { console.error(why); process.exit(1) }
const timer = setTimeout(() => fail(`timed out; text is ${JSON.stringify(text.toString())}`), 15000)

let done = false
provider.on('connection-error', (event) => fail(`connection error: ${event?.message ?? event?.error?.message ?? event?.type}`))
provider.on('connection-close', (event) => { if (!done) fail(`connection closed: ${event?.code} ${event?.reason ?? ''}`) })

provider.on('sync', (synced) => {
  if (!synced) return
  const protocol = provider.ws?.protocol
  if (protocol !== offered[0]) fail(`server chose protocol ${JSON.stringify(protocol)}`)
  text.insert(text.length, insert)
  const check = () => {
    if (text.toString().includes(waitFor)) {
      clearTimeout(timer)
      // Give the provider a moment to flush its own update.
      setTimeout(() => {
        console.log(JSON.stringify({ protocol, text: text.toString() }))
        done = true
        provider.destroy()
        process.exit(0)
      }, 200)
    }
  }
  text.observe(check)
  check()
})
