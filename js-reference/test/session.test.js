// Replays the scripted session of session.json against bin/server.js (with a worker
// whose debounce lets one compaction pass happen mid-session, as in the capture) and
// compares the frames both clients receive and the resulting Redis keys.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { loadFixture, startRedis, startServer, startWorker, RawClient, sleep, waitFor, within } from '../testlib/helpers.js'
import { normaliseFrame } from '../testlib/normalize.js'
import { isSmallerRedisId } from '../src/api.js'

const session = loadFixture('session.json')
const step = name => session.log.find(s => s.step.startsWith(name))
const docKey = 'y:room:fixture%2520room:index'

test('session.json replayed gives the same frames and Redis keys', async t => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const server = await startServer(redis.url)
  t.after(() => server.stop())
  const worker = await startWorker(redis.url, { REDIS_TASK_DEBOUNCE: '2000' })
  t.after(() => worker.stop())

  // 1. A connects to the empty room
  const A = await RawClient.connect(`${server.url}/fixture%20room`)
  assert.deepEqual(await A.nextHex(2), step('A connected').A_received)
  await sleep(200) // the subscriber has picked the room up

  // 2. step1 (ignored), two updates, awareness of client 10
  const s2 = step('A sent step1')
  A.sendTogether(['00000100', ...s2.sent])
  const got2 = await A.nextHex(2)
  assert.equal(got2[0], s2.A_received[0], 'first update comes back alone')
  assert.deepEqual(normaliseFrame(got2[1]), normaliseFrame(s2.A_received[1]), 'second update + merged awareness in one frame')
  assert.equal(normaliseFrame(got2[1])[1].phantoms, 1)

  // 3. B connects: step1, step2 with the whole doc, awareness of client 10
  const B = await RawClient.connect(`${server.url}/fixture%20room`)
  assert.deepEqual(await B.nextHex(3), step('B connected').B_received)

  // 4. third update reaches both
  const taskBefore = (await redis.xrangeHex('y:worker'))[0].id
  await sleep(400)
  const s4 = step('A sent 3rd update')
  A.send(s4.sent)
  assert.deepEqual(await A.nextHex(1), s4.A_received)
  assert.deepEqual(await B.nextHex(1), s4.B_received)

  // the worker compacts once, replacing the task (as between steps 4 and 5 of the capture)
  const taskAfter = await waitFor(async () => {
    const tasks = await redis.xrangeHex('y:worker')
    return tasks.length === 1 && tasks[0].id !== taskBefore && tasks[0].id
  }, 6000, 'the first compaction pass')

  // 5. empty step2 and the 4-byte poison step2, both rewritten to updates
  A.send('0001020000')
  A.send('00010100')
  assert.deepEqual(await B.nextHex(2), step('A sent empty step2').B_received)
  assert.deepEqual(await A.nextHex(2), step('A sent empty step2').B_received)

  // 6. A closes: B learns client 10 left
  await A.close()
  assert.deepEqual(await B.nextHex(1), step('A closed').B_received)

  // Redis: the doc stream entries, by order
  const expected = session.redis
  const entries = await redis.xrangeHex(docKey)
  assert.deepEqual(entries.map(e => e.fields), expected[docKey].map(e => e.fields))
  for (let i = 1; i < entries.length; i++) assert.ok(isSmallerRedisId(entries[i - 1].id, entries[i].id))
  assert.deepEqual(await redis.client.sendCommand(['XINFO', 'GROUPS', docKey]), expected[`${docKey} (XINFO GROUPS)`])

  // the worker queue: one compact task, parked under `pending`
  const tasks = await redis.xrangeHex('y:worker')
  assert.deepEqual(tasks.map(e => e.fields), expected['y:worker'].map(e => e.fields))
  assert.equal(tasks[0].id, taskAfter)
  // ordered like the capture: after the third update, before the step2s
  const order = id => entries.filter(e => isSmallerRedisId(e.id, id)).length
  const capturedOrder = expected[docKey].filter(e => isSmallerRedisId(e.id, expected['y:worker'][0].id)).length
  assert.equal(order(tasks[0].id), capturedOrder)
  const groups = await redis.client.sendCommand(['XINFO', 'GROUPS', 'y:worker'])
  const withId = g => g.map((v, i) => g[i - 1] === 'last-delivered-id' ? '<id>' : String(v))
  assert.deepEqual(groups.map(withId), expected['y:worker (XINFO GROUPS)'].map(withId))
  assert.equal(groups[0][groups[0].indexOf('last-delivered-id') + 1], tasks[0].id)
  const pending = await redis.client.sendCommand(['XPENDING', 'y:worker', 'y:worker', '-', '+', '10'])
  assert.deepEqual(pending.map(p => [p[0], p[1]]), [[tasks[0].id, 'pending']])
  await worker.stop()

  // defect 4: the poison entry makes every load of the room throw; the server exits
  // when the next client opens the room
  await B.close()
  const C = await RawClient.connect(`${server.url}/fixture%20room`).catch(() => null)
  const exit = await within(server.exited, 5000)
  assert.ok(exit != null, 'server process exited')
  assert.notEqual(exit.code, 0)
  if (C != null) await C.closed
})
