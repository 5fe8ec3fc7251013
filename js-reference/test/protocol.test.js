// The merge cases, encodings, stream keys and id order of protocol.json, checked
// through the sidecar (as other test suites use it) and against the modules directly.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { loadFixture, startSidecar, hex, unhex } from '../testlib/helpers.js'
import { normaliseFrame, normaliseMessages } from '../testlib/normalize.js'
import { computeRedisRoomStreamName, decodeRedisRoomStreamName, isSmallerRedisId } from '../src/api.js'
import * as protocol from '../src/protocol.js'

const fixture = loadFixture('protocol.json')

test('sidecar mergeMessages equals every mergeMessages case', async t => {
  const sidecar = await startSidecar()
  t.after(() => sidecar.stop())
  for (const c of fixture.mergeMessages) {
    const frames = await sidecar.call('mergeMessages', { messages: c.input })
    assert.equal(frames.length, 1, `${c.name}: one frame`)
    assert.deepEqual(normaliseFrame(frames[0]), normaliseMessages(c.output), c.name)
    const parts = await sidecar.call('splitFrame', { frame: frames[0] })
    assert.equal(parts.length, c.output.length, `${c.name}: message count`)
    if (c.input.length >= 2) {
      assert.equal(normaliseFrame(frames[0]).at(-1).phantoms, 1, `${c.name}: phantom entry`)
    }
  }
})

test('sidecar Yjs commands reproduce the encodings', async t => {
  const sidecar = await startSidecar()
  t.after(() => sidecar.stop())
  const e = fixture.encodes
  const updates = [...e.updates_client1_v1, ...e.updates_client2_v1]
  const content = { t: e.doc_text_t, m: e.doc_map_m, a: e.doc_array_a }
  assert.equal(await sidecar.call('mergeUpdates', { updates }), e.mergeUpdates_v1_all)
  assert.equal(await sidecar.call('encodeStateAsUpdate', { updates }), e.encodeStateAsUpdate_doc)
  assert.equal(await sidecar.call('encodeStateAsUpdate', { updates, v2: false }), e.encodeStateAsUpdate_doc)
  const v2 = await sidecar.call('encodeStateAsUpdate', { updates: [e.encodeStateAsUpdateV2_doc], v2: true })
  assert.equal(v2, e.encodeStateAsUpdateV2_doc)
  assert.deepEqual(await sidecar.call('content', { updates }), content)
  assert.deepEqual(await sidecar.call('content', { updates: [e.encodeStateAsUpdateV2_doc], v2: true }), content)
  assert.deepEqual(await sidecar.call('applyUpdates', { updates }), { content })
  const sv = await sidecar.call('encodeStateVector', { updates })
  assert.equal(hex(protocol.encodeSyncStep1(unhex(sv))), e.syncStep1_doc)
  const v2merged = await sidecar.call('mergeUpdatesV2', { updates: [e.encodeStateAsUpdateV2_doc, e.encodeStateAsUpdateV2_doc] })
  assert.deepEqual(await sidecar.call('content', { updates: [v2merged], v2: true }), content)
  assert.equal(await sidecar.call('awarenessUserDisconnected', { clientID: 10, clock: 4 }), e.awarenessUserDisconnected_10_4)
  // bad requests answer with an error and the sidecar lives on
  assert.match((await sidecar.raw('noSuchCommand')).error, /unknown command/)
  assert.ok((await sidecar.raw('mergeUpdates', { updates: ['zz'] })).error)
  assert.ok((await sidecar.raw('clientContent', { client: 'nobody' })).error)
  assert.equal(await sidecar.call('ping'), 'pong')
})

test('protocol encodings', () => {
  const e = fixture.encodes
  assert.equal(hex(protocol.encodeSyncStep1(new Uint8Array([0]))), e.syncStep1_emptyDoc)
  assert.equal(hex(protocol.encodeSyncStep2(new Uint8Array([0, 0]))), e.syncStep2_emptyDoc)
  assert.equal(hex(protocol.encodeAwarenessUserDisconnected(10, 4)), e.awarenessUserDisconnected_10_4)
  assert.equal(hex(protocol.encodeAwarenessUserDisconnected(300, 128)), e.awarenessUserDisconnected_300_128)
})

test('stream keys and id order', () => {
  for (const k of fixture.streamKeys) {
    const prefix = k.prefix ?? 'y'
    assert.equal(computeRedisRoomStreamName(k.room, k.docid, prefix), k.key)
    assert.deepEqual(decodeRedisRoomStreamName(k.key, prefix), { room: k.room, docid: k.docid })
  }
  assert.throws(() => decodeRedisRoomStreamName('other:room:r:index', 'y'))
  for (const c of fixture.isSmallerRedisId) {
    assert.equal(isSmallerRedisId(c.a, c.b), c.aSmaller, `${c.a} < ${c.b}`)
  }
})
