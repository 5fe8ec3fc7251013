// A y-websocket 2.1.0 client provider (through the sidecar) and a raw WebSocket
// client on the same room converge; a 2.1.0 and a 3.1.0 provider converge, also
// after offline edits.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { startRedis, startServer, startSidecar, RawClient, hex, waitFor } from '../testlib/helpers.js'
import { splitFrame, encodeSyncUpdate, asUint8Array } from '../src/protocol.js'
import * as decoding from 'lib0/decoding'

const content = doc => ({ t: doc.getText('t').toString(), m: doc.getMap('m').toJSON(), a: doc.getArray('a').toJSON() })

/** Apply every sync message of a frame (step2 and update) to doc. */
const applyFrame = (doc, frame) => {
  for (const m of splitFrame(frame)) {
    const decoder = decoding.createDecoder(asUint8Array(m))
    if (decoding.readVarUint(decoder) !== 0) continue
    const sub = decoding.readVarUint(decoder)
    if (sub === 1 || sub === 2) Y.applyUpdate(doc, decoding.readVarUint8Array(decoder), 'remote')
  }
}

test('y-websocket provider and raw client converge', async t => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const server = await startServer(redis.url)
  t.after(() => server.stop())
  const sidecar = await startSidecar()
  t.after(() => sidecar.stop())

  assert.equal(await sidecar.call('clientOpen', { client: 'p1', url: server.url, room: 'conv room' }), true)
  await sidecar.call('clientEdit', { client: 'p1', ops: [{ type: 'text-insert', index: 0, text: 'hello' }, { type: 'map-set', key: 'k', value: 1 }] })
  await sidecar.call('clientAwareness', { client: 'p1', state: { user: 'p1' } })

  const raw = await RawClient.connect(`${server.url}/conv%20room`)
  const doc = new Y.Doc()
  raw.onFrame(frame => applyFrame(doc, frame))
  doc.on('update', (update, origin) => { if (origin !== 'remote') raw.send(hex(encodeSyncUpdate(update))) })
  await waitFor(() => doc.getText('t').toString() === 'hello', 5000, 'raw client to load the doc')

  doc.getText('t').insert(5, ' world')
  doc.getArray('a').insert(0, [1, 'two'])
  await sidecar.call('clientEdit', { client: 'p1', ops: [{ type: 'text-insert', index: 999, text: '!' }, { type: 'array-insert', index: -5, values: [0] }] })
  await waitFor(async () => {
    const c = await sidecar.call('clientContent', { client: 'p1' })
    return JSON.stringify(c) === JSON.stringify(content(doc)) && c.t.length === 12
  }, 5000, 'convergence')
  const final = await sidecar.call('clientContent', { client: 'p1' })
  assert.equal(final.t.length, 12)
  assert.deepEqual(final.m, { k: 1 })
  assert.equal(final.a.length, 3)

  // a second provider, of y-websocket 3, sees the same doc and p1's awareness
  assert.match((await sidecar.raw('clientOpen', { client: 'p9', url: server.url, room: 'conv room', ywsMajor: 1 })).error, /no y-websocket 1/)
  await sidecar.call('clientOpen', { client: 'p2', url: server.url, room: 'conv room', ywsMajor: 3 })
  assert.deepEqual(await sidecar.call('clientContent', { client: 'p2' }), final)
  // The awareness message follows sync step 2, so it may arrive just after `synced`.
  await waitFor(async () => {
    const states = await sidecar.call('clientAwarenessStates', { client: 'p2' })
    return Object.values(states).some(s => s?.user === 'p1')
  }, 5000, 'p2 to know p1\'s awareness')

  // offline edits on both sides, then reconnect
  await sidecar.call('clientDisconnect', { client: 'p2' })
  await sidecar.call('clientEdit', { client: 'p2', ops: [{ type: 'text-delete', index: 0, len: 1 }, { type: 'map-delete', key: 'k' }] })
  await sidecar.call('clientEdit', { client: 'p1', ops: [{ type: 'array-delete', index: 0, len: 100 }] })
  assert.equal(await sidecar.call('clientConnect', { client: 'p2' }), true)
  assert.equal(await sidecar.call('clientWaitSynced', { client: 'p2', timeoutMs: 2000 }), true)
  await waitFor(async () => {
    const [a, b] = [await sidecar.call('clientContent', { client: 'p1' }), await sidecar.call('clientContent', { client: 'p2' })]
    return JSON.stringify(a) === JSON.stringify(b) && JSON.stringify(b) === JSON.stringify(content(doc)) && b.a.length === 0 && !('k' in b.m)
  }, 5000, 'convergence after reconnect')

  assert.equal(await sidecar.call('clientClose', { client: 'p1' }), true)
  assert.equal(await sidecar.call('clientClose', { client: 'p2' }), true)
  assert.ok((await sidecar.raw('clientContent', { client: 'p1' })).error)
  await raw.close()
})
