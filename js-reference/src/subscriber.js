// One read loop per server instance that follows every doc stream with a local
// connection (docs/protocol.md §2.4, §2.7 and §8). A stream's first subscriber
// starts it at id '0', so the whole backlog is broadcast once more (defect 6).

import { createApiClient, isSmallerRedisId } from './api.js'

/**
 * @typedef {(stream: string, messages: Array<Uint8Array>) => void} SubHandler
 * @typedef {{ id: string, handlers: Set<SubHandler> }} Sub
 */

export class Subscriber {
  /** @param {import('./api.js').Api} client a connection of its own: the read blocks */
  constructor (client) {
    this.client = client
    /** @type {Map<string, Sub>} */
    this.subs = new Map()
    this.running = true
    this.loop = this._run()
  }

  /**
   * @param {string} stream
   * @param {SubHandler} handler
   * @return {{ redisId: string }} where the subscription stands
   */
  subscribe (stream, handler) {
    let sub = this.subs.get(stream)
    if (sub == null) {
      sub = { id: '0', handlers: new Set() }
      this.subs.set(stream, sub)
    }
    sub.handlers.add(handler)
    return { redisId: sub.id }
  }

  /**
   * @param {string} stream
   * @param {SubHandler} handler
   */
  unsubscribe (stream, handler) {
    const sub = this.subs.get(stream)
    if (sub == null) return
    sub.handlers.delete(handler)
    if (sub.handlers.size === 0) {
      this.subs.delete(stream)
    }
  }

  /**
   * Rewind the subscription to `id` if it already stands past it.
   * @param {string} stream
   * @param {string} id
   */
  ensureSubId (stream, id) {
    const sub = this.subs.get(stream)
    if (sub != null && isSmallerRedisId(id, sub.id)) {
      sub.id = id
    }
  }

  async _run () {
    while (this.running) {
      const reads = Array.from(this.subs, ([key, sub]) => ({ key, id: sub.id, sub }))
      let results
      try {
        results = await this.client.getMessages(reads.map(({ key, id }) => ({ key, id })))
      } catch (err) {
        if (!this.running) break
        console.error('subscriber read failed:', /** @type {Error} */ (err).message)
        await new Promise(resolve => setTimeout(resolve, 1000))
        continue
      }
      for (const { stream, messages, lastId } of results) {
        const read = reads.find(r => r.key === stream)
        const sub = this.subs.get(stream)
        // the stream was dropped (or dropped and subscribed anew) while reading
        if (read == null || sub == null || sub !== read.sub) continue
        // a rewind during the read wins over the position reached
        if (sub.id === read.id) sub.id = lastId
        if (messages.length === 0) continue
        for (const handler of sub.handlers) {
          try {
            handler(stream, messages)
          } catch (err) {
            console.error('subscriber handler failed:', /** @type {Error} */ (err).message)
          }
        }
      }
    }
  }

  async destroy () {
    this.running = false
    await this.client.destroy({ force: true })
    await this.loop.catch(() => {})
  }
}

/**
 * @param {import('./api.js').Storage} store
 * @param {{ redisUrl: string, prefix: string }} opts
 */
export const createSubscriber = async (store, opts) => new Subscriber(await createApiClient(store, opts))
