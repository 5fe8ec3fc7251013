// The compaction worker's loop (docs/protocol.md §5) and its optional update
// callback: `PUT {callback}/{room}` with a multipart field `ydoc` holding the v2 state.

import * as Y from 'yjs'
import { createApiClient, sleep } from './api.js'

/**
 * @param {string} callback base URL
 * @return {(room: string, ydoc: Y.Doc) => Promise<void>}
 */
export const createUpdateCallback = callback => async (room, ydoc) => {
  const base = callback.endsWith('/') ? callback.slice(0, -1) : callback
  const form = new FormData()
  form.append('ydoc', new Blob([Y.encodeStateAsUpdateV2(ydoc)]))
  const res = await fetch(`${base}/${room}`, { method: 'PUT', body: form })
  if (!res.ok) throw new Error(`update callback answered ${res.status}`)
}

/**
 * @param {import('./api.js').Storage} store
 * @param {object} opts
 * @param {string} opts.redisUrl
 * @param {string} opts.redisPrefix
 * @param {number} opts.taskDebounce
 * @param {number} opts.minMessageLifetime
 * @param {string} [opts.updateCallback]
 */
export const createWorker = async (store, { redisUrl, redisPrefix, taskDebounce, minMessageLifetime, updateCallback }) => {
  const client = await createApiClient(store, { redisUrl, prefix: redisPrefix, taskDebounce, minMessageLifetime })
  const callback = updateCallback ? createUpdateCallback(updateCallback) : undefined
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        await client.consumeWorkerQueue({ tryClaimCount: 5, updateCallback: callback })
      } catch (err) {
        if (!running) break
        // e.g. NOGROUP after the group was flushed away: logged on every pass (defect 5)
        console.error('worker pass failed:', /** @type {Error} */ (err).message)
        await sleep(1000)
      }
    }
  })()
  return {
    client,
    async destroy () {
      running = false
      // let a pass in progress finish, but do not wait out a whole idle sleep
      await Promise.race([loop, sleep(1200)])
      await client.destroy({ force: true })
      await loop
    }
  }
}
