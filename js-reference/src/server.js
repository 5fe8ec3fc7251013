// The WebSocket server: one connection's life as y-redis 0.1.6 lives it (docs/protocol.md
// §2), on uWebSockets.js with y-redis's settings: route `/:room`, auth in the
// upgrade handler (401 on failure), subscribe + load + initial messages on open, client
// messages appended to the room's stream unvalidated (defect 4), awareness null on
// close, and every stream read of a room published to the room's topic as one frame
// (defect 3).

import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import uws from './uws.js'
import { createApiClient, computeRedisRoomStreamName, isSmallerRedisId } from './api.js'
import { createSubscriber } from './subscriber.js'
import * as protocol from './protocol.js'

/**
 * What one accepted connection carries (uWebSockets.js user data).
 * @typedef {object} User
 * @property {string} room
 * @property {boolean} hasWriteAccess
 * @property {string} stream the room's doc stream, also the uWS topic of the room
 * @property {number | null} awarenessId
 * @property {number} awarenessLastClock
 * @property {boolean} isClosed
 */

/**
 * @typedef {object} Authorizer
 * @property {(request: { room: string, protocolHeader: string, queryToken: string | undefined }) => Promise<{ userid: string, hasWriteAccess: boolean }>} authorize
 */

/**
 * @param {object} opts
 * @param {number} opts.port
 * @param {string} [opts.host]
 * @param {import('./api.js').Storage} opts.store
 * @param {string} opts.redisUrl
 * @param {string} opts.redisPrefix
 * @param {Authorizer | null} opts.auth
 */
export const createYWebsocketServer = async ({ port, host, store, redisUrl, redisPrefix, auth }) => {
  const client = await createApiClient(store, { redisUrl, prefix: redisPrefix })
  const subscriber = await createSubscriber(store, { redisUrl, prefix: redisPrefix })
  /** @type {Set<import('@trufflesuite/uws-js-unofficial').WebSocket<User>>} */
  const sockets = new Set()
  const app = uws.App({})

  /** @type {import('./subscriber.js').SubHandler} */
  const redisMessageSubscriber = (stream, messages) => {
    if (app.numSubscribers(stream) === 0) {
      subscriber.unsubscribe(stream, redisMessageSubscriber)
    }
    app.publish(stream, protocol.concatFrame(messages), true, false)
  }

  /** @param {User} user @param {Uint8Array} m */
  const append = (user, m) => {
    client.addMessage(user.room, 'index', m).catch(/** @param {Error} err */ err => {
      console.error(`appending to ${user.stream} failed:`, err.message)
    })
  }

  app.ws('/:room', /** @type {import('@trufflesuite/uws-js-unofficial').WebSocketBehavior<User>} */ ({
    compression: uws.SHARED_COMPRESSOR,
    maxPayloadLength: 100 * 1024 * 1024,
    idleTimeout: 60,
    sendPingsAutomatically: true,
    upgrade: async (res, req, context) => {
      // the request is only readable before the first await
      const room = req.getParameter(0)
      const headerWsKey = req.getHeader('sec-websocket-key')
      const headerWsProtocol = req.getHeader('sec-websocket-protocol')
      const headerWsExtensions = req.getHeader('sec-websocket-extensions')
      const queryToken = req.getQuery('yauth')
      let aborted = false
      res.onAborted(() => { aborted = true })
      let hasWriteAccess = true
      if (auth != null) {
        try {
          hasWriteAccess = (await auth.authorize({ room, protocolHeader: headerWsProtocol, queryToken })).hasWriteAccess
        } catch (err) {
          console.error(`refused a connection to room ${room}:`, /** @type {Error} */ (err).message)
          if (aborted) return
          res.cork(() => { res.writeStatus('401 Unauthorized').end('Unauthorized') })
          return
        }
      }
      if (aborted) return
      /** @type {User} */
      const user = {
        room,
        hasWriteAccess,
        stream: computeRedisRoomStreamName(room, 'index', redisPrefix),
        awarenessId: null,
        awarenessLastClock: 0,
        isClosed: false
      }
      res.cork(() => {
        res.upgrade(user, headerWsKey, headerWsProtocol, headerWsExtensions, context)
      })
    },
    open: async ws => {
      sockets.add(ws)
      const user = ws.getUserData()
      ws.subscribe(user.stream)
      const initialRedisSubId = subscriber.subscribe(user.stream, redisMessageSubscriber).redisId
      // Not caught on purpose: a doc that cannot be loaded takes the process down (defect 4).
      const indexDoc = await client.getDoc(user.room, 'index')
      try {
        if (user.isClosed) return
        ws.cork(() => {
          ws.send(protocol.encodeSyncStep1(Y.encodeStateVector(indexDoc.ydoc)), true, false)
          ws.send(protocol.encodeSyncStep2(Y.encodeStateAsUpdate(indexDoc.ydoc)), true, true)
          const states = indexDoc.awareness.getStates()
          if (states.size > 0) {
            ws.send(protocol.encodeAwarenessMessage(indexDoc.awareness, Array.from(states.keys())), true, true)
          }
        })
        // rewind the live subscription if it already stands past what was loaded
        if (isSmallerRedisId(indexDoc.redisLastId, initialRedisSubId)) {
          subscriber.ensureSubId(user.stream, indexDoc.redisLastId)
        }
      } finally {
        indexDoc.awareness.destroy()
        indexDoc.ydoc.destroy()
      }
    },
    message: (ws, messageBuffer) => {
      const user = ws.getUserData()
      if (!user.hasWriteAccess) return
      // the buffer is only valid during this call
      const m = new Uint8Array(messageBuffer.slice(0))
      if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncUpdate) {
        append(user, m)
      } else if (m.length >= 1 && m[0] === protocol.messageAwareness) {
        append(user, m)
        rememberAwareness(user, m)
      } else if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncStep2) {
        if (m.length >= 4) {
          m[1] = protocol.messageSyncUpdate
          append(user, m)
        }
      } else if (m.length >= 2 && m[0] === protocol.messageSync && m[1] === protocol.messageSyncStep1) {
        // the server has already sent the whole doc
      } else {
        console.error(`dropping an unexpected message from a client of ${user.room}: ${Buffer.from(m.subarray(0, 8)).toString('hex')}`)
      }
    },
    close: ws => {
      sockets.delete(ws)
      const user = ws.getUserData()
      user.isClosed = true
      if (user.awarenessId !== null) {
        append(user, protocol.encodeAwarenessUserDisconnected(user.awarenessId, user.awarenessLastClock))
      }
      if (app.numSubscribers(user.stream) === 0) {
        subscriber.unsubscribe(user.stream, redisMessageSubscriber)
      }
    }
  }))

  // Every other request (a path that is not one non-empty segment, `/` included, or
  // plain HTTP) is answered 404, as y-redis's uWebSockets.js v20.40 answers requests
  // no route takes; this binary (v20.30) would close them without an answer.
  app.any('/*', res => { res.writeStatus('404 Not Found').end('Not Found') })

  /** @type {import('@trufflesuite/uws-js-unofficial').us_listen_socket} */
  const listenSocket = await new Promise((resolve, reject) => {
    const done = (/** @type {any} */ socket) => socket ? resolve(socket) : reject(new Error(`cannot listen on port ${port}`))
    if (host != null) app.listen(host, port, done)
    else app.listen(port, done)
  })
  const boundPort = uws.us_socket_local_port(listenSocket)

  return {
    /** the port actually bound (useful with port 0) */
    port: boundPort,
    async destroy () {
      uws.us_listen_socket_close(listenSocket)
      for (const ws of Array.from(sockets)) ws.close()
      await subscriber.destroy()
      await client.destroy()
    }
  }
}

/**
 * Remember the client of a single-entry awareness message: the first clientID seen
 * on the connection, and the clock of its latest entry.
 * @param {User} user
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
