// The worker's footprint in Redis over time (worker.json): with task debounce 500 ms
// and message lifetime 1000 ms, the task is parked under `pending`, replaced on every
// pass, the doc stream trimmed once older than the lifetime, and finally the empty
// stream and its task removed. The compacted doc is served from storage afterwards.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { loadFixture, startRedis, startServer, startWorker, RawClient, sleep, waitFor } from '../testlib/helpers.js'

const fixture = loadFixture('worker.json')
const snap = label => fixture.snapshots.find(s => s.label.startsWith(label))
const docKey = 'y:room:workerroom:index'

/** XINFO GROUPS / XINFO CONSUMERS rows as name → value maps, ids and idle times left out. */
const rows = list => list.map(row => {
  const o = {}
  for (let i = 0; i < row.length; i += 2) o[String(row[i])] = String(row[i + 1])
  delete o.idle
  delete o.inactive
  return o
})
const consumerPending = list => Object.fromEntries(rows(list).map(c => [c.name === 'pending' ? 'pending' : '<worker>', c.pending]))
const groupCounts = list => rows(list).map(({ name, consumers, pending, 'entries-read': entriesRead, lag }) => ({ name, consumers, pending, entriesRead, lag }))

test('worker compaction pattern of worker.json', async t => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  // the server keeps its docs in memory; the worker is the one persisting, so the
  // server does not see compacted state: this test only looks at Redis
  const server = await startServer(redis.url)
  t.after(() => server.stop())
  const worker = await startWorker(redis.url, { REDIS_TASK_DEBOUNCE: '500', REDIS_MIN_MESSAGE_LIFETIME: '1000' })
  const workerStarted = Date.now()
  t.after(() => worker.stop())
  const snapshot = async () => ({
    stream: (await redis.xrangeHex(docKey)).map(e => e.fields),
    streamIds: (await redis.xrangeHex(docKey)).map(e => e.id),
    exists: await redis.client.exists(docKey),
    tasks: await redis.xrangeHex('y:worker'),
    groups: await redis.client.sendCommand(['XINFO', 'GROUPS', 'y:worker']),
    consumers: await redis.client.sendCommand(['XINFO', 'CONSUMERS', 'y:worker', 'y:worker']),
    pending: (await redis.client.sendCommand(['XPENDING', 'y:worker', 'y:worker', '-', '+', '10'])).map(p => [p[0], p[1]])
  })

  const client = await RawClient.connect(`${server.url}/workerroom`)
  await client.nextHex(2)
  // append ~300 ms into the worker's 1 s polling period, so its first claim comes
  // ~700 ms after the append, as in the capture
  await sleep(Math.max(0, workerStarted + 300 - Date.now()))
  const s1 = snap('after 2 appends')
  s1['y:room:workerroom:index'].forEach(e => client.send(e.fields[1]))
  await waitFor(async () => (await redis.xrangeHex(docKey)).length === 2, 2000, 'two appends')

  // 1. after two appends, before any compaction
  let s = await snapshot()
  assert.deepEqual(s.stream, s1['y:room:workerroom:index'].map(e => e.fields))
  assert.deepEqual(s.tasks.map(e => e.fields), s1['y:worker'].map(e => e.fields))
  // added by the same script call as the first entry (same millisecond in the capture)
  const ms = id => Number(id.split('-')[0])
  assert.ok(ms(s.tasks[0].id) <= ms(s.streamIds[0]) && ms(s.streamIds[0]) - ms(s.tasks[0].id) < 50, 'task added with the first entry')
  assert.deepEqual(groupCounts(s.groups), groupCounts(s1.groups))
  assert.deepEqual(consumerPending(s.consumers), consumerPending(s1.consumers))
  assert.deepEqual(s.pending, [[s.tasks[0].id, 'pending']])
  const firstTask = s.tasks[0].id

  // 2. after the first compaction pass: task replaced, still parked under `pending`
  await waitFor(async () => {
    const tasks = await redis.xrangeHex('y:worker')
    return tasks.length === 1 && tasks[0].id !== firstTask
  }, 3000, 'the first compaction pass')
  await sleep(200)
  const s2 = snap('after first compaction pass')
  s = await snapshot()
  assert.deepEqual(s.stream, s2['y:room:workerroom:index'].map(e => e.fields), 'nothing trimmed yet')
  assert.deepEqual(s.tasks.map(e => e.fields), s2['y:worker'].map(e => e.fields))
  assert.deepEqual(groupCounts(s.groups), groupCounts(s2.groups))
  assert.deepEqual(consumerPending(s.consumers), consumerPending(s2.consumers))
  assert.deepEqual(s.pending, [[s.tasks[0].id, 'pending']])

  // 3./4. later passes trim the stream; the empty stream and its task are removed
  await waitFor(async () => (await redis.client.exists(docKey)) === 0 && (await redis.xrangeHex('y:worker')).length === 0,
    8000, 'stream and task removal')
  const s4 = snap('client gone')
  s = await snapshot()
  assert.deepEqual(s.tasks, s4['y:worker'])
  assert.deepEqual(groupCounts(s.groups), groupCounts(s4.groups))
  assert.deepEqual(consumerPending(s.consumers), consumerPending(s4.consumers))
  assert.deepEqual(s.pending, s4.pending)
  await client.close()
})
