// An unmodified y-websocket provider (2.x as `y-websocket`, 3.x as
// `y-websocket3`) on Node's `ws`, opening a room with a large document.
// Usage: node slow_link_provider.mjs <serverUrl> <room> <package>
// Prints JSON once synced: how many connections the provider opened and
// closed itself, how many messages it received, and the size of map `m`. A
// provider closes a connection on which no message arrived for 30 s (and
// opens a new one), so `closes` is 0 only when the document arrived without
// such a silence.
import { createRequire } from 'node:module'
import path from 'node:path'

const jsDir = process.env.CONFORMANCE_JS_DIR || path.resolve(import.meta.dirname, '../../../js-reference')
const require = createRequire(path.join(jsDir, 'package.json'))
const [serverUrl, room, pkg] = process.argv.slice(2)
const Y = require('yjs')
const { WebsocketProvider } = require(pkg)
const WebSocket = require('ws')

let connections = 0
let messages = 0
let closes = 0
class CountedWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    connections += 1
    this.addEventListener('message', () => { messages += 1 })
  }

  close (...args) {
    closes += 1
    super.close(...args)
  }
}
const started = Date.now()
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: CountedWebSocket })
const timer = setTimeout(() => {
  console.error(`not synced after 150 s: ${connections} connections, ${messages} messages`)
  process.exit(1)
}, 150000)
provider.on('sync', (synced) => {
  if (!synced) return
  clearTimeout(timer)
  console.log(JSON.stringify({ connections, closes, messages, entries: doc.getMap("m").size, ms: Date.now() - started }))
  provider.destroy()
  setTimeout(() => process.exit(0), 100)
})
