// S3 document store with y-redis 0.1.6's object layout (docs/protocol.md §7):
// bucket `ydocs`, objects `{enc(room)}/{enc(docid)}/{uuid v4}`, each a full v2 state.

import * as Y from 'yjs'
import * as Minio from 'minio'
import { randomUUID } from 'node:crypto'

/** @param {string} room @param {string} docname */
const docPath = (room, docname) => `${encodeURIComponent(room)}/${encodeURIComponent(docname)}/`

/** @param {NodeJS.ReadableStream} stream */
const readAll = async stream => {
  const chunks = []
  for await (const chunk of stream) chunks.push(chunk)
  return new Uint8Array(Buffer.concat(chunks))
}

export class S3Storage {
  /** @param {Minio.Client} client @param {string} bucket */
  constructor (client, bucket) {
    this.client = client
    this.bucket = bucket
  }

  /** @param {string} room @param {string} docname @param {Y.Doc} ydoc */
  async persistDoc (room, docname, ydoc) {
    const name = docPath(room, docname) + randomUUID()
    await this.client.putObject(this.bucket, name, Buffer.from(Y.encodeStateAsUpdateV2(ydoc)))
  }

  /** @param {string} room @param {string} docname */
  async _list (room, docname) {
    /** @type {Array<string>} */
    const names = []
    const stream = this.client.listObjectsV2(this.bucket, docPath(room, docname), true)
    for await (const obj of stream) {
      if (obj.name != null) names.push(obj.name)
    }
    return names
  }

  /** @param {string} room @param {string} docname */
  async retrieveDoc (room, docname) {
    const references = await this._list(room, docname)
    if (references.length === 0) return null
    const updates = await Promise.all(references.map(async name => readAll(await this.client.getObject(this.bucket, name))))
    return { doc: Y.mergeUpdatesV2(updates), references }
  }

  /** @param {string} room @param {string} docname */
  async retrieveStateVector (room, docname) {
    const stored = await this.retrieveDoc(room, docname)
    return stored == null ? null : Y.encodeStateVectorFromUpdateV2(stored.doc)
  }

  /** @param {string} _room @param {string} _docname @param {Array<string>} references */
  async deleteReferences (_room, _docname, references) {
    await this.client.removeObjects(this.bucket, references)
  }

  async destroy () {}
}

/**
 * @param {object} opts
 * @param {string} opts.endPoint
 * @param {number} [opts.port]
 * @param {boolean} opts.useSSL
 * @param {string} opts.accessKey
 * @param {string} opts.secretKey
 * @param {string} opts.bucket
 */
export const createS3Storage = async ({ bucket, ...conf }) => {
  const client = new Minio.Client(conf)
  if (!(await client.bucketExists(bucket))) {
    try {
      await client.makeBucket(bucket)
    } catch (err) {
      // another instance may have created it meanwhile
      if (!(await client.bucketExists(bucket))) throw err
    }
  }
  return new S3Storage(client, bucket)
}
