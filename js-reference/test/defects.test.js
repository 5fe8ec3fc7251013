// Observable behaviours of y-redis 0.1.6 beyond the captured session: the first
// connection of a room gets the stream backlog broadcast again (defect 6), short
// step2 messages are dropped, step1 and unknown messages are not appended.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, startServer, RawClient, sleep } from '../testlib/helpers.js'
import { normaliseFrame } from '../testlib/normalize.js'

test('first connection of a room replays the backlog; message filtering', async t => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const server = await startServer(redis.url)
  t.after(() => server.stop())
  const u1 = '00020f01010100040101740568656c6c6f00'
  const u2 = '00020f010101058401040620776f726c6400'

  const x = await RawClient.connect(`${server.url}/backlog`)
  await x.nextHex(2)
  await sleep(150)
  x.send('000100') // step2 shorter than 4 bytes: dropped
  x.send('0701') // unknown type: dropped
  x.send('00000100') // step1: ignored
  x.send(u1)
  assert.deepEqual(await x.nextHex(1), [u1])
  x.send(u2)
  assert.deepEqual(await x.nextHex(1), [u2])
  await x.close()
  const entries = await redis.xrangeHex('y:room:backlog:index')
  assert.deepEqual(entries.map(e => e.fields[1]), [u1, u2])
  await sleep(200) // the instance stops following the room

  const y = await RawClient.connect(`${server.url}/backlog`)
  const frames = await y.nextHex(3)
  assert.ok(frames.includes('00000301010b'), 'step1 of the doc')
  assert.ok(frames.includes('00011501010100040101740b68656c6c6f20776f726c6400'), 'step2 of the doc')
  const backlog = frames.find(f => f.startsWith('0002'))
  assert.ok(backlog != null, 'the backlog is broadcast again')
  const [update, awareness] = normaliseFrame(backlog)
  assert.equal(update.message, '00021901020100040101740568656c6c6f8401040620776f726c6400')
  assert.deepEqual(awareness, { awareness: [], phantoms: 1 })
  assert.ok(await y.quiet(300))
  await y.close()
})
