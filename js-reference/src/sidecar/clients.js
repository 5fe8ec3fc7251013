// Named y-websocket client providers held by the sidecar, each with its own doc: of
// y-websocket 2.1.0 (the version y-redis 0.1.6 was captured with) or 3.1.0 (what
// applications use today), chosen per client.

import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider as WebsocketProvider2 } from 'y-websocket'
import { WebsocketProvider as WebsocketProvider3 } from 'y-websocket3'

/** The provider class of each supported y-websocket major version. */
const providers = new Map([[2, WebsocketProvider2], [3, WebsocketProvider3]])
import { applyOps, docContent } from './docs.js'

/**
 * @typedef {{ doc: Y.Doc, provider: WebsocketProvider2 | WebsocketProvider3, onClose: Set<() => void> }} Client
 */

/**
 * Resolves true once the provider has synced; rejects on timeout or when the client is closed.
 * @param {Client} client
 * @param {number} timeoutMs
 */
const waitSynced = ({ provider, onClose }, timeoutMs) => new Promise((resolve, reject) => {
  if (provider.synced) return resolve(true)
  const done = () => {
    clearTimeout(timer)
    provider.off('synced', onSynced)
    onClose.delete(closed)
  }
  const onSynced = (/** @type {boolean} */ state) => {
    if (!state) return
    done()
    resolve(true)
  }
  const closed = () => {
    done()
    reject(new Error('client closed before it synced'))
  }
  const timer = setTimeout(() => {
    done()
    reject(new Error(`not synced within ${timeoutMs} ms`))
  }, timeoutMs)
  provider.on('synced', onSynced)
  onClose.add(closed)
})

export class Clients {
  constructor () {
    /** @type {Map<string, Client>} */
    this.clients = new Map()
  }

  /** @param {unknown} name */
  get (name) {
    const c = this.clients.get(String(name))
    if (c == null) throw new Error(`no client named ${JSON.stringify(name)}`)
    return c
  }

  /**
   * @param {{ client: string, url: string, room: string, token?: string, tokenVia?: 'query' | 'protocol', ywsMajor?: number, timeoutMs?: number }} args
   */
  async open ({ client, url, room, token, tokenVia = 'query', ywsMajor = 2, timeoutMs = 10000 }) {
    if (typeof client !== 'string' || client === '') throw new Error('client name required')
    if (typeof url !== 'string' || typeof room !== 'string') throw new Error('url and room required')
    if (this.clients.has(client)) throw new Error(`client ${client} already open`)
    const WebsocketProvider = providers.get(ywsMajor)
    if (WebsocketProvider == null) throw new Error(`no y-websocket ${JSON.stringify(ywsMajor)}: 2 or 3`)
    const doc = new Y.Doc()
    const viaProtocol = token != null && tokenVia === 'protocol'
    const provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: /** @type {any} */ (WebSocket),
      params: token != null && !viaProtocol ? { yauth: token } : {},
      protocols: viaProtocol ? [`yauth-${token}`] : [],
      disableBc: true
    })
    const entry = { doc, provider, onClose: new Set() }
    this.clients.set(client, entry)
    try {
      return await waitSynced(entry, timeoutMs)
    } catch (err) {
      if (this.clients.get(client) === entry) this.close({ client })
      throw err
    }
  }

  /** @param {{ client: string, ops: Array<any> }} args */
  edit ({ client, ops }) {
    applyOps(this.get(client).doc, ops)
    return true
  }

  /** @param {{ client: string, state: any }} args */
  awareness ({ client, state }) {
    this.get(client).provider.awareness.setLocalState(state === undefined ? null : state)
    return true
  }

  /** @param {{ client: string }} args */
  awarenessStates ({ client }) {
    const states = this.get(client).provider.awareness.getStates()
    return Object.fromEntries(Array.from(states, ([id, state]) => [String(id), state]))
  }

  /** @param {{ client: string }} args */
  content ({ client }) {
    return docContent(this.get(client).doc)
  }

  /** @param {{ client: string }} args */
  disconnect ({ client }) {
    this.get(client).provider.disconnect()
    return true
  }

  /** @param {{ client: string, timeoutMs?: number }} args */
  async connect ({ client, timeoutMs = 10000 }) {
    const entry = this.get(client)
    entry.provider.connect()
    return waitSynced(entry, timeoutMs)
  }

  /**
   * The WebSocket extensions the server agreed to on the provider's current
   * connection (`ws` offers permessage-deflate, as browsers do).
   * @param {{ client: string }} args
   */
  extensions ({ client }) {
    const { ws } = this.get(client).provider
    return ws == null ? null : ws.extensions
  }

  /** @param {{ client: string, timeoutMs?: number }} args */
  waitSynced ({ client, timeoutMs = 10000 }) {
    return waitSynced(this.get(client), timeoutMs)
  }

  /** @param {{ client: string }} args */
  close ({ client }) {
    const { doc, provider, onClose } = this.get(client)
    this.clients.delete(String(client))
    Array.from(onClose).forEach(f => f())
    provider.destroy()
    doc.destroy()
    return true
  }

  closeAll () {
    for (const client of Array.from(this.clients.keys())) this.close({ client })
  }
}
