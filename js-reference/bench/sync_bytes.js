// Bytes on the wire of one initial sync, as a client that offers
// permessage-deflate (Node's `ws`, like browsers) receives it.
// Usage: node bench/sync_bytes.js <roomUrl>
// Sends sync step 1 with an empty state vector, waits for sync step 2 and
// prints JSON: the bytes the socket read (handshake and frames, compressed
// where deflate was agreed), the document's bytes as messages, the extension
// the server agreed to.
import WebSocket from 'ws'

const [url] = process.argv.slice(2)
const ws = new WebSocket(url)
ws.binaryType = 'nodebuffer'
let documentBytes = 0
let messages = 0
const timer = setTimeout(() => { console.error('no sync step 2 within 60 s'); process.exit(1) }, 60000)
ws.on('open', () => ws.send(Buffer.from([0, 0, 1, 0])))
ws.on('message', (data) => {
  messages++
  if (data[0] !== 0) return
  if (data[1] === 2 || data[1] === 1) documentBytes += data.length
  if (data[1] !== 1) return
  clearTimeout(timer)
  console.log(JSON.stringify({ bytesRead: ws._socket.bytesRead, documentBytes, messages, extensions: ws.extensions }))
  ws.terminate()
  process.exit(0)
})
ws.on('error', (err) => { console.error(String(err)); process.exit(1) })
