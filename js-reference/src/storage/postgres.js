// PostgreSQL document store with y-redis 0.1.6's table layout (docs/protocol.md §7):
// one row per persisted full state (v2) with its v1 state vector, referenced by `r`.

import * as Y from 'yjs'
import postgres from 'postgres'

export class PostgresStorage {
  /** @param {postgres.Sql} sql */
  constructor (sql) {
    this.sql = sql
  }

  /** @param {string} room @param {string} docname @param {Y.Doc} ydoc */
  async persistDoc (room, docname, ydoc) {
    const update = Buffer.from(Y.encodeStateAsUpdateV2(ydoc))
    const sv = Buffer.from(Y.encodeStateVector(ydoc))
    await this.sql`INSERT INTO yredis_docs_v1 (room, doc, r, update, sv) VALUES (${room}, ${docname}, DEFAULT, ${update}, ${sv})`
  }

  /** @param {string} room @param {string} docname */
  async retrieveDoc (room, docname) {
    const rows = await this.sql`SELECT update, r FROM yredis_docs_v1 WHERE room = ${room} AND doc = ${docname}`
    if (rows.length === 0) return null
    const doc = Y.mergeUpdatesV2(rows.map(row => new Uint8Array(row.update)))
    return { doc, references: rows.map(row => row.r) }
  }

  /** @param {string} room @param {string} docname */
  async retrieveStateVector (room, docname) {
    const rows = await this.sql`SELECT sv FROM yredis_docs_v1 WHERE room = ${room} AND doc = ${docname} LIMIT 1`
    if (rows.length > 1) throw new Error('more than one state vector stored; the doc is not compacted')
    return rows.length === 0 ? null : new Uint8Array(rows[0].sv)
  }

  /** @param {string} room @param {string} docname @param {Array<number>} references */
  async deleteReferences (room, docname, references) {
    await this.sql`DELETE FROM yredis_docs_v1 WHERE room = ${room} AND doc = ${docname} AND r IN ${this.sql(references)}`
  }

  async destroy () {
    await this.sql.end({ timeout: 5 })
  }
}

/** @param {string} url postgres connection URL */
export const createPostgresStorage = async url => {
  const sql = postgres(url, { onnotice: () => {} })
  const create = () => sql`CREATE TABLE IF NOT EXISTS yredis_docs_v1 (
    room text,
    doc text,
    r SERIAL,
    update bytea,
    sv bytea,
    PRIMARY KEY (room, doc, r)
  )`
  try {
    await create()
  } catch (err) {
    // another instance may be creating the table at the same moment
    await new Promise(resolve => setTimeout(resolve, 200))
    await create()
  }
  return new PostgresStorage(sql)
}
