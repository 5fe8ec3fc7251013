// Normalisation for comparing frames with the captures: frames are split into
// messages, and awareness messages are decoded with the phantom entry of a merge
// (a random clientID at clock 0 with state {}) counted instead of compared.

import { splitFrame, decodeAwarenessMessage } from '../src/protocol.js'
import { hex, unhex } from './helpers.js'

/** @param {any} state */
const isEmptyObject = state => state != null && typeof state === 'object' && !Array.isArray(state) && Object.keys(state).length === 0

/** @param {string} message hex */
export const normaliseMessage = message => {
  const bytes = unhex(message)
  if (bytes[0] !== 1) return { message }
  const entries = decodeAwarenessMessage(bytes)
  const phantoms = entries.filter(e => e.clock === 0 && isEmptyObject(e.state))
  return { awareness: entries.filter(e => !phantoms.includes(e)), phantoms: phantoms.length }
}

/** @param {Array<string>} messages hex messages */
export const normaliseMessages = messages => messages.map(normaliseMessage)

/** @param {string} frame hex frame @return {Array<any>} */
export const normaliseFrame = frame => normaliseMessages(splitFrame(unhex(frame)).map(hex))
