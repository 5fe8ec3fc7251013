// The WebSocket server: one connection's life as y-redis 0.1.6 lives it (docs/protocol.md
// §2): auth at upgrade, subscribe + load + initial messages, client messages
// appended to the room's stream unvalidated (defect 4), awareness null on close, and
// every merged stream batch sent to the room's connections as one frame (defect 3).

import http from 'node:http'
import { WebSocketServer, WebSocket } from 'ws'
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { createApiClient, computeRedisRoomStreamName } from './api.js'
import { createSubscriber } from './subscriber.js'
import { getAuthSubprotocol } from './auth.js'
import * as protocol from './protocol.js'

/**
 * @param {import('node:net').Socket | import('node:stream').Duplex} socket
 * @param {string} status
 */
const refuse = (socket, status) => {
  try {
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(status)}\r\n\r\n${status}`)
  } catch {}
  socket.destroy()
}

/**
 * The room of a request: the raw (not percent-decoded) single path segment.
 * @param {string} url
 * @return {string | null}
 */
export const roomFromUrl = url => {
  const path = url.split('?')[0]
  const match = path.match(/^\/([^/]*)$/)
  return match == null ? null : match[1]
}

/**
 * @param {object} opts
 * @param {number} opts.port
 * @param {string} [opts.host]
 * @param {import('./api.js').Storage} opts.store
 * @param {string} opts.redisUrl
 * @param {string} opts.redisPrefix
 * @param {{ authorize: (req: import('node:http').IncomingMessage, room: string) => Promise<{ userid: string, hasWriteAccess: boolean }> } | null} opts.auth
 */
export const createYWebsocketServer = async ({ port, host, store, redisUrl, redisPrefix, auth }) => {
  const client = await createApiClient(store, { redisUrl, prefix: redisPrefix })
  const subscriber = await createSubscriber(store, { redisUrl, prefix: redisPrefix })
  /** @type {Set<WebSocket>} */
  const sockets = new Set()

  const httpServer = http.createServer((_req, res) => {
    res.writeHead(404, { 'Content-Type': 'text/plain' })
    res.end('Not Found')
  })
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (_protocols, req) => getAuthSubprotocol(req) ?? false
  })

  httpServer.on('upgrade', async (req, socket, head) => {
    socket.on('error', () => {})
    const room = roomFromUrl(req.url ?? '')
    if (room == null) return refuse(socket, '404 Not Found')
    let hasWriteAccess = true
    if (auth != null) {
      try {
        hasWriteAccess = (await auth.authorize(req, room)).hasWriteAccess
      } catch (err) {
        console.error(`refused a connection to room ${room}:`, /** @type {Error} */ (err).message)
        return refuse(socket, '401 Unauthorized')
      }
    }
    if (socket.destroyed) return
    wss.handleUpgrade(req, socket, head, ws => {
      sockets.add(ws)
      ws.once('close', () => sockets.delete(ws))
      openConnection(ws, room, hasWriteAccess)
    })
  })

  /**
   * @param {WebSocket} ws
   * @param {string} room
   * @param {boolean} hasWriteAccess
   */
  const openConnection = (ws, room, hasWriteAccess) => {
    const stream = computeRedisRoomStreamName(room, 'index', redisPrefix)
    const user = { awarenessId: /** @type {number | null} */ (null), awarenessLastClock: 0 }
    /** @param {Uint8Array} frame */
    const send = frame => {
      if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: true })
    }
    /** @type {import('./subscriber.js').SubHandler} */
    const handler = (_stream, messages) => send(protocol.concatFrame(messages))
    /** @param {Uint8Array} m */
    const append = m => {
      client.addMessage(room, 'index', m).catch(/** @param {Error} err */ err => {
        console.error(`appending to ${stream} failed:`, err.message)
      })
    }

    ws.on('error', err => console.error('websocket error:', err.message))
    ws.on('message', (/** @type {Buffer} */ data) => {
      if (!hasWriteAccess) return
      const m = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncUpdate) {
        append(m)
      } else if (m.length >= 1 && m[0] === protocol.messageAwareness) {
        append(m)
        rememberAwareness(user, m)
      } else if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncStep2) {
        if (m.length >= 4) {
          const update = m.slice()
          update[1] = protocol.messageSyncUpdate
          append(update)
        }
      } else if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncStep1) {
        // the server has already sent the whole doc
      } else {
        console.error(`dropping an unexpected message from a client of ${room}: ${Buffer.from(m.subarray(0, 8)).toString('hex')}`)
      }
    })
    ws.on('close', () => {
      if (user.awarenessId !== null) {
        append(protocol.encodeAwarenessUserDisconnected(user.awarenessId, user.awarenessLastClock))
      }
      subscriber.unsubscribe(stream, handler)
    })

    subscriber.subscribe(stream, handler)
    // Not caught on purpose: a doc that cannot be loaded takes the process down (defect 4).
    const opened = (async () => {
      const indexDoc = await client.getDoc(room, 'index')
      try {
        send(protocol.encodeSyncStep1(Y.encodeStateVector(indexDoc.ydoc)))
        send(protocol.encodeSyncStep2(Y.encodeStateAsUpdate(indexDoc.ydoc)))
        const states = indexDoc.awareness.getStates()
        if (states.size > 0) {
          send(protocol.encodeAwarenessMessage(indexDoc.awareness, Array.from(states.keys())))
        }
        // rewind the live subscription if it already stands past what was loaded
        subscriber.ensureSubId(stream, indexDoc.redisLastId)
      } finally {
        indexDoc.awareness.destroy()
        indexDoc.ydoc.destroy()
      }
    })()
    void opened
  }

  await new Promise((resolve, reject) => {
    httpServer.once('error', reject)
    httpServer.listen(port, host, () => resolve(undefined))
  })

  return {
    httpServer,
    /** the port actually bound (useful with port 0) */
    get port () {
      const addr = httpServer.address()
      return typeof addr === 'object' && addr != null ? addr.port : port
    },
    async destroy () {
      httpServer.close()
      const closed = Array.from(sockets, ws => new Promise(resolve => {
        ws.once('close', resolve)
        ws.terminate()
      }))
      await Promise.race([Promise.all(closed), new Promise(resolve => setTimeout(resolve, 1000))])
      wss.close()
      await subscriber.destroy()
      await client.destroy()
    }
  }
}

/**
 * Remember the client of a single-entry awareness message: the first clientID seen
 * on the connection, and the clock of its latest entry.
 * @param {{ awarenessId: number | null, awarenessLastClock: number }} user
 * @param {Uint8Array} m
 */
const rememberAwareness = (user, m) => {
  try {
    const decoder = decoding.createDecoder(m)
    decoding.readVarUint(decoder) // message type
    decoding.readVarUint(decoder) // length of the awareness update
    const count = decoding.readVarUint(decoder)
    if (count !== 1) return
    const clientID = decoding.readVarUint(decoder)
    const clock = decoding.readVarUint(decoder)
    if (user.awarenessId === null || user.awarenessId === clientID) {
      user.awarenessId = clientID
      user.awarenessLastClock = clock
    }
  } catch {
    // a malformed awareness message is still appended; there is just nothing to remember
  }
}
