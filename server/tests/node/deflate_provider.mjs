// An unmodified y-websocket 2.1.0 provider on Node's `ws` (which offers
// permessage-deflate, as browsers do), driven from a Rust test.
// Usage: node deflate_provider.mjs <serverUrl> <room> <file-of-text-to-insert> <text-to-wait-for> <result-file>
// Inserts its text once synced, waits for the other text, and writes JSON to
// the result file: the final text of `t`, the extensions the server agreed
// to, and the bytes its socket read and wrote.
import { createRequire } from 'node:module'
import path from 'node:path'
import fs from 'node:fs'

const jsDir = process.env.CONFORMANCE_JS_DIR || path.resolve(import.meta.dirname, '../../../js-reference')
const require = createRequire(path.join(jsDir, 'package.json'))
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

const [serverUrl, room, insertFile, waitFor, resultFile] = process.argv.slice(2)
const insert = fs.readFileSync(insertFile, 'utf8')
const sockets = []
class RecordedWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    sockets.push(this)
  }
}
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: RecordedWebSocket })
const text = doc.getText('t')
const fail = (why) => { console.error(why); process.exit(1) }
const timer = setTimeout(() => fail(`timed out; text has ${text.length} characters`), 20000)

provider.on('sync', (synced) => {
  if (!synced) return
  text.insert(text.length, insert)
  const check = () => {
    if (!text.toString().includes(waitFor)) return
    clearTimeout(timer)
    // Give the provider a moment to flush its own update.
    setTimeout(() => {
      const ws = sockets[sockets.length - 1]
      fs.writeFileSync(resultFile, JSON.stringify({
        text: text.toString(),
        extensions: ws.extensions,
        connections: sockets.length,
        bytesRead: ws._socket.bytesRead,
        bytesWritten: ws._socket.bytesWritten
      }))
      provider.destroy()
      process.exit(0)
    }, 300)
  }
  text.observe(check)
  check()
})
