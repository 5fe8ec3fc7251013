// Document helpers of the sidecar: hex coding, the fixed content shape
// { t: text 't', m: map 'm', a: array 'a' }, and edit operations clamped into range.

import * as Y from 'yjs'

/** @param {unknown} hex */
export const fromHex = hex => {
  if (typeof hex !== 'string' || !/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new Error('expected a hex string')
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

/** @param {Uint8Array} bytes */
export const toHex = bytes => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')

/** @param {unknown} list */
export const fromHexList = list => {
  if (!Array.isArray(list)) throw new Error('expected an array of hex strings')
  return list.map(fromHex)
}

/** @param {Y.Doc} doc */
export const docContent = doc => ({
  t: doc.getText('t').toString(),
  m: doc.getMap('m').toJSON(),
  a: doc.getArray('a').toJSON()
})

/**
 * A fresh doc with the updates applied in order.
 * @param {Array<Uint8Array>} updates
 * @param {boolean} v2
 */
export const docFromUpdates = (updates, v2) => {
  const doc = new Y.Doc()
  for (const u of updates) {
    if (v2) Y.applyUpdateV2(doc, u)
    else Y.applyUpdate(doc, u)
  }
  return doc
}

/** @param {unknown} n @param {number} lo @param {number} hi */
const clamp = (n, lo, hi) => {
  const x = Number.isFinite(n) ? Math.trunc(/** @type {number} */ (n)) : lo
  return Math.min(Math.max(x, lo), hi)
}

/**
 * Apply edit operations to a doc in one transaction. Indexes are clamped into range.
 * @param {Y.Doc} doc
 * @param {Array<any>} ops
 */
export const applyOps = (doc, ops) => {
  if (!Array.isArray(ops)) throw new Error('ops must be an array')
  const known = ['text-insert', 'text-delete', 'map-set', 'map-delete', 'array-insert', 'array-delete']
  for (const op of ops) {
    if (op == null || !known.includes(op.type)) throw new Error(`unknown op ${JSON.stringify(op?.type)}`)
    if ((op.type === 'map-set' || op.type === 'map-delete') && typeof op.key !== 'string') throw new Error(`${op.type} needs a string key`)
    if (op.type === 'text-insert' && typeof op.text !== 'string') throw new Error('text-insert needs text')
    if (op.type === 'array-insert' && !Array.isArray(op.values)) throw new Error('array-insert needs values')
  }
  const text = doc.getText('t')
  const map = doc.getMap('m')
  const array = doc.getArray('a')
  doc.transact(() => {
    for (const op of ops) {
      switch (op.type) {
        case 'text-insert':
          text.insert(clamp(op.index, 0, text.length), op.text)
          break
        case 'text-delete': {
          const index = clamp(op.index, 0, text.length)
          const len = clamp(op.len, 0, text.length - index)
          if (len > 0) text.delete(index, len)
          break
        }
        case 'map-set':
          map.set(op.key, op.value === undefined ? null : op.value)
          break
        case 'map-delete':
          map.delete(op.key)
          break
        case 'array-insert':
          array.insert(clamp(op.index, 0, array.length), op.values)
          break
        case 'array-delete': {
          const index = clamp(op.index, 0, array.length)
          const len = clamp(op.len, 0, array.length - index)
          if (len > 0) array.delete(index, len)
          break
        }
      }
    }
  })
}
