// Message encoding for the y-websocket framing, and the merge that y-redis 0.1.6
// applies to every batch of stream entries before it sends them to clients
// (docs/protocol.md §1 and §8). The merge keeps the observable defects of 0.1.6:
// the merging awareness instance's own entry travels along (defect 1), removals
// inside a batch are lost (defect 2), and the caller concatenates the output into
// one frame (defect 3).

import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as awarenessProtocol from 'y-protocols/awareness'

export const messageSync = 0
export const messageAwareness = 1
export const messageAuth = 2
export const messageQueryAwareness = 3

export const messageSyncStep1 = 0
export const messageSyncStep2 = 1
export const messageSyncUpdate = 2

/**
 * @param {number} subtype
 * @param {Uint8Array} payload
 */
const encodeSync = (subtype, payload) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageSync)
  encoding.writeVarUint(encoder, subtype)
  encoding.writeVarUint8Array(encoder, payload)
  return encoding.toUint8Array(encoder)
}

/** @param {Uint8Array} stateVector */
export const encodeSyncStep1 = stateVector => encodeSync(messageSyncStep1, stateVector)
/** @param {Uint8Array} update v1 update */
export const encodeSyncStep2 = update => encodeSync(messageSyncStep2, update)
/** @param {Uint8Array} update v1 update */
export const encodeSyncUpdate = update => encodeSync(messageSyncUpdate, update)

/**
 * Awareness message holding the given clients of an awareness instance.
 * @param {awarenessProtocol.Awareness} awareness
 * @param {Array<number>} clients
 */
export const encodeAwarenessMessage = (awareness, clients) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageAwareness)
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
  return encoding.toUint8Array(encoder)
}

/**
 * Awareness message that sets `clientID` to null with clock `lastClock + 1`.
 * @param {number} clientID
 * @param {number} lastClock
 */
export const encodeAwarenessUserDisconnected = (clientID, lastClock) => {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, 1)
  encoding.writeVarUint(inner, clientID)
  encoding.writeVarUint(inner, lastClock + 1)
  encoding.writeVarString(inner, JSON.stringify(null))
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageAwareness)
  encoding.writeVarUint8Array(encoder, encoding.toUint8Array(inner))
  return encoding.toUint8Array(encoder)
}

/**
 * A plain Uint8Array view of the same bytes (Buffers from node-redis are views too).
 * @param {Uint8Array} buf
 */
export const asUint8Array = buf => new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)

/**
 * Merge the `m` values read from one stream in one read (docs/protocol.md §8).
 * A single message is passed through untouched. Otherwise all sync-update payloads
 * are merged into one v1 update and all awareness messages are applied in order to
 * one fresh awareness instance; the result is the update message (if any) followed
 * by one awareness message with every state that instance holds, which always
 * includes its own `{}` entry at clock 0 (defect 1) and never a removal (defect 2).
 * Messages that fail to parse are skipped. A failure of the update merge itself is
 * thrown to the caller.
 *
 * @param {Array<Uint8Array>} messages
 * @return {Array<Uint8Array>}
 */
export const mergeMessages = messages => {
  if (messages.length < 2) {
    return messages
  }
  const ydoc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(ydoc)
  try {
    /** @type {Array<Uint8Array>} */
    const updates = []
    for (const m of messages) {
      try {
        const decoder = decoding.createDecoder(asUint8Array(m))
        const messageType = decoding.readVarUint(decoder)
        if (messageType === messageSync) {
          const syncType = decoding.readVarUint(decoder)
          if (syncType === messageSyncUpdate) {
            updates.push(decoding.readVarUint8Array(decoder))
          }
        } else if (messageType === messageAwareness) {
          awarenessProtocol.applyAwarenessUpdate(awareness, decoding.readVarUint8Array(decoder), null)
        }
      } catch (err) {
        console.error('skipping a stream message that does not parse:', /** @type {Error} */ (err).message)
      }
    }
    /** @type {Array<Uint8Array>} */
    const out = []
    if (updates.length > 0) {
      out.push(encodeSyncUpdate(Y.mergeUpdates(updates)))
    }
    if (awareness.getStates().size > 0) {
      out.push(encodeAwarenessMessage(awareness, Array.from(awareness.getStates().keys())))
    }
    return out
  } finally {
    awareness.destroy()
    ydoc.destroy()
  }
}

/**
 * Concatenate messages into one frame, the way the server sends a merged batch.
 * @param {Array<Uint8Array>} messages
 */
export const concatFrame = messages => {
  if (messages.length === 1) return messages[0]
  const len = messages.reduce((n, m) => n + m.length, 0)
  const frame = new Uint8Array(len)
  let pos = 0
  for (const m of messages) {
    frame.set(m, pos)
    pos += m.length
  }
  return frame
}

/**
 * Split a frame back into its messages (sync, awareness, auth, query-awareness).
 * Throws on bytes that do not form whole messages. Used by tests and the sidecar.
 * @param {Uint8Array} frame
 * @return {Array<Uint8Array>}
 */
export const splitFrame = frame => {
  const decoder = decoding.createDecoder(asUint8Array(frame))
  const out = []
  while (decoding.hasContent(decoder)) {
    const start = decoder.pos
    const messageType = decoding.readVarUint(decoder)
    switch (messageType) {
      case messageSync:
        decoding.readVarUint(decoder)
        decoding.readVarUint8Array(decoder)
        break
      case messageAwareness:
        decoding.readVarUint8Array(decoder)
        break
      case messageAuth:
        decoding.readVarUint(decoder)
        decoding.readVarString(decoder)
        break
      case messageQueryAwareness:
        break
      default:
        throw new Error(`unknown message type ${messageType}`)
    }
    out.push(frame.slice(start, decoder.pos))
  }
  return out
}

/**
 * Decode an awareness message into its entries.
 * @param {Uint8Array} message
 * @return {Array<{ clientID: number, clock: number, state: any }>}
 */
export const decodeAwarenessMessage = message => {
  const decoder = decoding.createDecoder(asUint8Array(message))
  if (decoding.readVarUint(decoder) !== messageAwareness) throw new Error('not an awareness message')
  const inner = decoding.createDecoder(decoding.readVarUint8Array(decoder))
  const len = decoding.readVarUint(inner)
  const entries = []
  for (let i = 0; i < len; i++) {
    const clientID = decoding.readVarUint(inner)
    const clock = decoding.readVarUint(inner)
    const state = JSON.parse(decoding.readVarString(inner))
    entries.push({ clientID, clock, state })
  }
  return entries
}
