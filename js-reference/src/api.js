// Everything the server and the worker do against Redis (docs/protocol.md §3–§5):
// the key layout, the two Lua scripts, the batched stream read with its merge, loading
// a doc from storage plus its stream, and one pass of the compaction worker.

import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import * as awarenessProtocol from 'y-protocols/awareness'
import { createClient, defineScript, commandOptions } from 'redis'
import { randomUUID } from 'node:crypto'
import * as protocol from './protocol.js'

/** @param {number} ms */
export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/**
 * Doc stream key: `{prefix}:room:{enc(room)}:{enc(docid)}`.
 * @param {string} room
 * @param {string} docid
 * @param {string} prefix
 */
export const computeRedisRoomStreamName = (room, docid, prefix) =>
  `${prefix}:room:${encodeURIComponent(room)}:${encodeURIComponent(docid)}`

/**
 * Parse a doc stream key back into room and docid (greedy pattern of docs/protocol.md §3).
 * @param {string} key
 * @param {string} expectedPrefix
 * @return {{ room: string, docid: string }}
 */
export const decodeRedisRoomStreamName = (key, expectedPrefix) => {
  const match = key.match(/^(.*):room:(.*):(.*)$/)
  if (match == null || match[1] !== expectedPrefix) {
    throw new Error(`Malformed stream name! prefix="${match?.[1]}" expectedPrefix="${expectedPrefix}", key="${key}"`)
  }
  return { room: decodeURIComponent(match[2]), docid: decodeURIComponent(match[3]) }
}

/** @param {string} id stream id, `ms-seq` or just `ms` (seq 0) */
const parseRedisId = id => {
  const [ms, seq = '0'] = id.split('-')
  return [Number(ms), Number(seq)]
}

/**
 * `a < b` for stream ids.
 * @param {string} a
 * @param {string} b
 */
export const isSmallerRedisId = (a, b) => {
  const [ams, aseq] = parseRedisId(a)
  const [bms, bseq] = parseRedisId(b)
  return ams < bms || (ams === bms && aseq < bseq)
}

/** Lua string literal for arbitrary text (bytes outside printable ASCII escaped). */
const luaString = s => '"' + Array.from(Buffer.from(s, 'utf8'), b =>
  (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) ? String.fromCharCode(b) : '\\' + String(b).padStart(3, '0')
).join('') + '"'

/**
 * Append script: KEYS[1] doc stream, ARGV[1] message. A new doc stream first gets a
 * compaction task, parked in the pending list of the consumer named `pending`.
 * @param {string} prefix
 */
export const addMessageScript = prefix => {
  const worker = luaString(`${prefix}:worker`)
  return `
if redis.call("EXISTS", KEYS[1]) == 0 then
  redis.call("XADD", ${worker}, "*", "compact", KEYS[1])
  redis.call("XREADGROUP", "GROUP", ${worker}, "pending", "STREAMS", ${worker}, ">")
end
redis.call("XADD", KEYS[1], "*", "m", ARGV[1])
`
}

/** Delete script: KEYS[1] is deleted only if it is an empty stream. */
export const DELETE_IF_EMPTY_SCRIPT = `
if redis.call("XLEN", KEYS[1]) == 0 then
  redis.call("DEL", KEYS[1])
end
`

/**
 * @typedef {object} Storage
 * @property {(room: string, docname: string, ydoc: Y.Doc) => Promise<void>} persistDoc
 * @property {(room: string, docname: string) => Promise<{ doc: Uint8Array, references: Array<any> } | null>} retrieveDoc
 * @property {(room: string, docname: string, references: Array<any>) => Promise<void>} deleteReferences
 * @property {() => Promise<void>} destroy
 */

export class Api {
  /**
   * @param {Storage} store
   * @param {object} opts
   * @param {string} opts.redisUrl
   * @param {string} opts.prefix
   * @param {number} [opts.taskDebounce] ms a task must be idle before a worker claims it
   * @param {number} [opts.minMessageLifetime] ms a message stays in the stream after compaction
   */
  constructor (store, { redisUrl, prefix, taskDebounce = 10000, minMessageLifetime = 60000 }) {
    this.store = store
    this.prefix = prefix
    this.consumername = randomUUID()
    this.redisTaskDebounce = taskDebounce
    this.redisMinMessageLifetime = minMessageLifetime
    this.redisWorkerStreamName = `${prefix}:worker`
    this.redisWorkerGroupName = `${prefix}:worker`
    this._destroyed = false
    this.redis = createClient({
      url: redisUrl,
      scripts: {
        addMessage: defineScript({
          NUMBER_OF_KEYS: 1,
          SCRIPT: addMessageScript(prefix),
          /** @param {string} key @param {Buffer} message */
          transformArguments (key, message) { return [key, message] },
          transformReply (x) { return x }
        })
      }
    })
    this.redis.on('error', err => {
      if (!this._destroyed) console.error('redis error:', err.message)
    })
  }

  /** Connect and make sure the worker group exists (BUSYGROUP ignored). */
  async init () {
    await this.redis.connect()
    // loaded up front: a NOSCRIPT fallback could reorder the first appends
    await this.redis.scriptLoad(addMessageScript(this.prefix))
    try {
      await this.redis.xGroupCreate(this.redisWorkerStreamName, this.redisWorkerGroupName, '0', { MKSTREAM: true })
    } catch (err) {
      if (!String(/** @type {Error} */ (err).message).includes('BUSYGROUP')) throw err
    }
    return this
  }

  /**
   * Append one message to the doc stream (creates the compaction task on first write).
   * @param {string} room
   * @param {string} docid
   * @param {Uint8Array} m
   */
  addMessage (room, docid, m) {
    const key = computeRedisRoomStreamName(room, docid, this.prefix)
    return /** @type {any} */ (this.redis).addMessage(key, Buffer.from(m.buffer, m.byteOffset, m.byteLength))
  }

  /**
   * One blocking read over many streams; per stream the entries are merged.
   * @param {Array<{ key: string, id: string }>} streams
   * @return {Promise<Array<{ stream: string, messages: Array<Uint8Array>, lastId: string }>>}
   */
  async getMessages (streams) {
    if (streams.length === 0) {
      await sleep(50)
      return []
    }
    const reads = await this.redis.xRead(
      commandOptions({ returnBuffers: true }),
      streams,
      { COUNT: 1000, BLOCK: 1000 }
    )
    if (reads == null) return []
    return reads.map(({ name, messages }) => {
      const stream = name.toString()
      const ms = messages.map(entry => entry.message.m).filter(m => m != null).map(m => protocol.asUint8Array(m))
      let merged = []
      try {
        merged = protocol.mergeMessages(ms)
      } catch (err) {
        console.error(`dropping a batch of ${ms.length} messages of ${stream} that cannot be merged:`, /** @type {Error} */ (err).message)
      }
      return { stream, messages: merged, lastId: messages[messages.length - 1].id.toString() }
    })
  }

  /**
   * Load a doc: storage state plus every stream entry (docs/protocol.md §4).
   * Throws when a stream entry cannot be applied.
   * @param {string} room
   * @param {string} docid
   */
  async getDoc (room, docid) {
    const key = computeRedisRoomStreamName(room, docid, this.prefix)
    const [stored, reads] = await Promise.all([
      this.store.retrieveDoc(room, docid),
      this.redis.xRead(commandOptions({ returnBuffers: true }), { key, id: '0' })
    ])
    const entries = reads?.[0]?.messages ?? []
    const ydoc = new Y.Doc()
    const awareness = new awarenessProtocol.Awareness(ydoc)
    awareness.setLocalState(null) // the loader's own state is never part of the result
    if (stored != null) {
      Y.applyUpdateV2(ydoc, stored.doc)
    }
    let docChanged = false
    ydoc.on('update', () => { docChanged = true })
    try {
      for (const entry of entries) {
        const m = entry.message.m
        if (m == null) continue
        const decoder = decoding.createDecoder(protocol.asUint8Array(m))
        const messageType = decoding.readVarUint(decoder)
        if (messageType === protocol.messageSync) {
          if (decoding.readVarUint(decoder) === protocol.messageSyncUpdate) {
            Y.applyUpdate(ydoc, decoding.readVarUint8Array(decoder))
          }
        } else if (messageType === protocol.messageAwareness) {
          awarenessProtocol.applyAwarenessUpdate(awareness, decoding.readVarUint8Array(decoder), null)
        }
      }
    } catch (err) {
      awareness.destroy()
      ydoc.destroy()
      throw err
    }
    return {
      ydoc,
      awareness,
      redisLastId: entries.length > 0 ? entries[entries.length - 1].id.toString() : '0',
      storeReferences: stored?.references ?? null,
      docChanged
    }
  }

  /**
   * One worker pass: claim up to `tryClaimCount` idle tasks and compact them.
   * Sleeps 1 s when there is nothing to claim.
   * @param {object} [opts]
   * @param {number} [opts.tryClaimCount]
   * @param {(room: string, ydoc: Y.Doc) => Promise<void>} [opts.updateCallback]
   */
  async consumeWorkerQueue ({ tryClaimCount = 5, updateCallback = async () => {} } = {}) {
    const reclaimed = await this.redis.xAutoClaim(
      this.redisWorkerStreamName, this.redisWorkerGroupName, this.consumername,
      this.redisTaskDebounce, '0', { COUNT: tryClaimCount }
    )
    const tasks = reclaimed.messages
      .filter(m => m != null && m.message.compact != null)
      .map(m => ({ stream: m.message.compact.toString(), id: m.id.toString() }))
    if (tasks.length === 0) {
      await sleep(1000)
      return tasks
    }
    for (const task of tasks) {
      try {
        await this.compactTask(task, updateCallback)
      } catch (err) {
        console.error(`compaction of ${task.stream} (task ${task.id}) failed:`, /** @type {Error} */ (err).message)
      }
    }
    return tasks
  }

  /**
   * @param {{ stream: string, id: string }} task
   * @param {(room: string, ydoc: Y.Doc) => Promise<void>} updateCallback
   */
  async compactTask ({ stream, id }, updateCallback) {
    const len = await this.redis.xLen(stream)
    if (len === 0) {
      await this.redis.multi()
        .addCommand(['EVAL', DELETE_IF_EMPTY_SCRIPT, '1', stream])
        .xDel(this.redisWorkerStreamName, id)
        .exec()
      return
    }
    const { room, docid } = decodeRedisRoomStreamName(stream, this.prefix)
    const { ydoc, awareness, redisLastId, storeReferences, docChanged } = await this.getDoc(room, docid)
    try {
      const lastId = Math.max(parseRedisId(redisLastId)[0], parseRedisId(id)[0])
      if (docChanged) {
        try {
          await updateCallback(room, ydoc)
        } catch (err) {
          console.error(`update callback for ${room} failed:`, /** @type {Error} */ (err).message)
        }
        await this.store.persistDoc(room, docid, ydoc)
        if (storeReferences != null && storeReferences.length > 0) {
          await this.store.deleteReferences(room, docid, storeReferences)
        }
      }
      await this.redis.multi()
        .xTrim(stream, 'MINID', lastId - this.redisMinMessageLifetime)
        .xAdd(this.redisWorkerStreamName, '*', { compact: stream })
        .xReadGroup(this.redisWorkerGroupName, 'pending', { key: this.redisWorkerStreamName, id: '>' }, { COUNT: 50 })
        .xDel(this.redisWorkerStreamName, id)
        .exec()
    } finally {
      awareness.destroy()
      ydoc.destroy()
    }
  }

  /** @param {{ force?: boolean }} [opts] force: drop pending commands (a blocked read) */
  async destroy ({ force = false } = {}) {
    this._destroyed = true
    try {
      if (force) await this.redis.disconnect()
      else await this.redis.quit()
    } catch {
      try { await this.redis.disconnect() } catch {}
    }
  }
}

/**
 * @param {Storage} store
 * @param {ConstructorParameters<typeof Api>[1]} opts
 */
export const createApiClient = (store, opts) => new Api(store, opts).init()
