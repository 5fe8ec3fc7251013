// Per-process document store, used when no storage is configured. Same contract as
// the persistent stores: each persisted item is the doc's full state, v2-encoded.

import * as Y from 'yjs'
import { randomUUID } from 'node:crypto'

export class MemoryStorage {
  constructor () {
    /** @type {Map<string, Map<string, Map<string, Uint8Array>>>} room → docid → reference → v2 state */
    this.docs = new Map()
  }

  /** @param {string} room @param {string} docname */
  _items (room, docname) {
    let byDoc = this.docs.get(room)
    if (byDoc == null) this.docs.set(room, (byDoc = new Map()))
    let items = byDoc.get(docname)
    if (items == null) byDoc.set(docname, (items = new Map()))
    return items
  }

  /** @param {string} room @param {string} docname @param {Y.Doc} ydoc */
  async persistDoc (room, docname, ydoc) {
    this._items(room, docname).set(randomUUID(), Y.encodeStateAsUpdateV2(ydoc))
  }

  /** @param {string} room @param {string} docname */
  async retrieveDoc (room, docname) {
    const items = this.docs.get(room)?.get(docname)
    if (items == null || items.size === 0) return null
    return { doc: Y.mergeUpdatesV2(Array.from(items.values())), references: Array.from(items.keys()) }
  }

  /** @param {string} room @param {string} docname */
  async retrieveStateVector (room, docname) {
    const stored = await this.retrieveDoc(room, docname)
    return stored == null ? null : Y.encodeStateVectorFromUpdateV2(stored.doc)
  }

  /** @param {string} room @param {string} docname @param {Array<string>} references */
  async deleteReferences (room, docname, references) {
    const items = this.docs.get(room)?.get(docname)
    if (items == null) return
    references.forEach(r => items.delete(r))
  }

  async destroy () {}
}

export const createMemoryStorage = () => new MemoryStorage()
