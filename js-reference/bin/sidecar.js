#!/usr/bin/env node
// A long-running helper for conformance tests in other languages: JSON line requests
// on stdin, one JSON line response each on stdout. It exposes the JavaScript Yjs
// reference (yjs 13.6.33), the y-redis 0.1.6 stream merge, lib0's key import and
// JWTs, and y-websocket 2.1.0 and 3.1.0 client providers. Binary values are lowercase
// hex strings.

import * as readline from 'node:readline'
import * as Y from 'yjs'
import * as ecdsa from 'lib0/crypto/ecdsa'
import * as jwt from 'lib0/crypto/jwt'
import * as protocol from '../src/protocol.js'
import { computeRedisRoomStreamName, isSmallerRedisId } from '../src/api.js'
import { fromHex, fromHexList, toHex, docContent, docFromUpdates } from '../src/sidecar/docs.js'
import { Clients } from '../src/sidecar/clients.js'

// stdout carries responses only
console.log = console.error
console.info = console.error
process.on('uncaughtException', err => console.error('sidecar: uncaught', err))
process.on('unhandledRejection', err => console.error('sidecar: unhandled rejection', err))

const clients = new Clients()

/**
 * @param {Array<Uint8Array>} updates
 * @param {boolean} v2
 * @param {(doc: Y.Doc) => any} f
 */
const withDoc = (updates, v2, f) => {
  const doc = docFromUpdates(updates, v2)
  try {
    return f(doc)
  } finally {
    doc.destroy()
  }
}

/** @type {Record<string, (args: any) => any>} */
const commands = {
  ping: () => 'pong',
  mergeUpdates: ({ updates }) => toHex(Y.mergeUpdates(fromHexList(updates))),
  mergeUpdatesV2: ({ updates }) => toHex(Y.mergeUpdatesV2(fromHexList(updates))),
  applyUpdates: ({ updates, v2 = false }) => withDoc(fromHexList(updates), !!v2, doc => ({ content: docContent(doc) })),
  encodeStateAsUpdate: ({ updates, v2 = false }) => withDoc(fromHexList(updates), !!v2, doc =>
    toHex(v2 ? Y.encodeStateAsUpdateV2(doc) : Y.encodeStateAsUpdate(doc))),
  encodeStateVector: ({ updates, v2 = false }) => withDoc(fromHexList(updates), !!v2, doc => toHex(Y.encodeStateVector(doc))),
  content: ({ updates, v2 = false }) => withDoc(fromHexList(updates), !!v2, docContent),
  mergeMessages: ({ messages }) => {
    const merged = protocol.mergeMessages(fromHexList(messages))
    return merged.length === 0 ? [] : [toHex(protocol.concatFrame(merged))]
  },
  splitFrame: ({ frame }) => protocol.splitFrame(fromHex(frame)).map(toHex),
  awarenessUserDisconnected: ({ clientID, clock }) => toHex(protocol.encodeAwarenessUserDisconnected(Number(clientID), Number(clock))),
  streamKey: ({ room, docid = 'index', prefix = 'y' }) => computeRedisRoomStreamName(String(room), String(docid), String(prefix)),
  isSmallerRedisId: ({ a, b }) => isSmallerRedisId(String(a), String(b)),
  lib0Jwt: async ({ publicKey, privateKey, token, payload }) => {
    // keys imported exactly as y-redis's server (public) and token tools (private) do
    const verifying = await ecdsa.importKeyJwk(JSON.parse(String(publicKey)))
    const signing = privateKey == null ? null : await ecdsa.importKeyJwk(JSON.parse(String(privateKey)))
    return {
      verified: token == null ? null : (await jwt.verifyJwt(verifying, String(token))).payload,
      signed: signing == null || payload == null ? null : await jwt.encodeJwt(signing, payload)
    }
  },
  clientOpen: args => clients.open(args),
  clientEdit: args => clients.edit(args),
  clientAwareness: args => clients.awareness(args),
  clientDisconnect: args => clients.disconnect(args),
  clientConnect: args => clients.connect(args),
  clientContent: args => clients.content(args),
  clientExtensions: args => clients.extensions(args),
  clientAwarenessStates: args => clients.awarenessStates(args),
  clientClose: args => clients.close(args),
  clientWaitSynced: args => clients.waitSynced(args)
}

/** @param {any} response */
const respond = response => {
  process.stdout.write(JSON.stringify(response) + '\n')
}

/** @param {string} line */
const handle = async line => {
  if (line.trim() === '') return
  let request
  try {
    request = JSON.parse(line)
  } catch {
    return respond({ id: null, error: 'request is not JSON' })
  }
  const id = request?.id ?? null
  try {
    if (request == null || typeof request !== 'object' || Array.isArray(request)) throw new Error('request must be an object')
    const command = Object.hasOwn(commands, request.cmd) ? commands[request.cmd] : null
    if (command == null) throw new Error(`unknown command ${JSON.stringify(request.cmd)}`)
    const args = { ...request, ...(request.args != null && typeof request.args === 'object' ? request.args : {}) }
    const result = command(args)
    // synchronous commands answer at once, so their answers keep the request order
    const ok = result instanceof Promise ? await result : result
    respond({ id, ok: ok === undefined ? null : ok })
  } catch (err) {
    respond({ id, error: String(/** @type {Error} */ (err)?.message ?? err) })
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', line => { void handle(line) })
rl.on('close', () => {
  clients.closeAll()
  setTimeout(() => process.exit(0), 100)
})
process.on('SIGTERM', () => { clients.closeAll(); process.exit(0) })
process.on('SIGINT', () => { clients.closeAll(); process.exit(0) })
