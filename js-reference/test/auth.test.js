// Auth at the upgrade: ES384 tokens by query and by subprotocol, read-only users
// whose messages are dropped, and the millisecond `exp` rule refusing seconds.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { webcrypto } from 'node:crypto'
import { startRedis, startServer, startSidecar, RawClient, freePort, sleep } from '../testlib/helpers.js'

const subtle = webcrypto.subtle
const b64url = data => Buffer.from(data).toString('base64url')

const sign = async (privateKey, payload) => {
  const head = b64url(JSON.stringify({ alg: 'ES384', typ: 'JWT' })) + '.' + b64url(JSON.stringify(payload))
  const sig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, privateKey, new TextEncoder().encode(head))
  return head + '.' + b64url(new Uint8Array(sig))
}

const rejected = async promise => {
  try {
    const c = await promise
    await c.close()
    return null
  } catch (err) {
    return err
  }
}

test('auth: tokens by query and subprotocol, read-only, exp in ms', async t => {
  const { publicKey, privateKey } = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])
  const jwk = await subtle.exportKey('jwk', publicKey)
  const otherKeys = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])

  // permission callback: users named writer* may write
  const permPort = await freePort()
  const asked = []
  const perm = http.createServer((req, res) => {
    asked.push(req.url)
    const user = req.url.split('/').at(-1)
    res.writeHead(200, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ yaccess: user.startsWith('writer') ? 'rw' : 'r', yuserid: user }))
  })
  await new Promise(resolve => perm.listen(permPort, '127.0.0.1', resolve))
  t.after(() => perm.close())

  const redis = await startRedis()
  t.after(() => redis.stop())
  const server = await startServer(redis.url, {
    AUTH_PUBLIC_KEY: JSON.stringify(jwk),
    AUTH_PERM_CALLBACK: `http://127.0.0.1:${permPort}/auth/perm`
  })
  t.after(() => server.stop())

  const hour = 3600 * 1000
  const writer = await sign(privateKey, { yuserid: 'writer1', exp: Date.now() + hour })
  const reader = await sign(privateKey, { yuserid: 'reader1', exp: Date.now() + hour })
  const secondsExp = await sign(privateKey, { yuserid: 'writer1', exp: Math.floor(Date.now() / 1000) + 3600 })
  const expiredMs = await sign(privateKey, { yuserid: 'writer1', exp: Date.now() - 60 * 1000 })
  const noUser = await sign(privateKey, { exp: Date.now() + hour })
  const forged = await sign(otherKeys.privateKey, { yuserid: 'writer1' })
  const update = '00020f01010100040101740568656c6c6f00'

  // rw token by query: can write (gets its own update back)
  const a = await RawClient.connect(`${server.url}/authroom?yauth=${writer}`)
  assert.deepEqual(await a.nextHex(2), ['00000100', '0001020000'])
  assert.equal(asked.at(-1), '/auth/perm/authroom/writer1')
  await sleep(150)
  a.send(update)
  assert.deepEqual(await a.nextHex(1), [update])

  // rw token by subprotocol: answered with exactly that entry
  const b = await RawClient.connect(`${server.url}/authroom`, { protocols: ['other', `yauth-${writer}`] })
  assert.equal(b.ws.protocol, `yauth-${writer}`)
  assert.deepEqual(await b.nextHex(2), ['000003010105', '00010f01010100040101740568656c6c6f00'])

  // r token: connects and reads, but every message is dropped
  const r = await RawClient.connect(`${server.url}/authroom?yauth=${reader}`)
  await r.nextHex(2)
  r.send('00020d01010200040101740361626300')
  r.send('0110010a010c7b2275736572223a2261227d')
  assert.ok(await r.quiet(800), 'nothing from the reader was distributed')
  assert.equal((await redis.xrangeHex('y:room:authroom:index')).length, 1)
  await r.close()
  assert.ok(await b.quiet(300), 'no awareness null for a reader')

  // refused with 401 before the upgrade
  for (const [what, url, protocols] of [
    ['exp in seconds', `${server.url}/authroom?yauth=${secondsExp}`],
    ['exp in seconds, subprotocol', `${server.url}/authroom`, [`yauth-${secondsExp}`]],
    ['expired (ms)', `${server.url}/authroom?yauth=${expiredMs}`],
    ['no yuserid', `${server.url}/authroom?yauth=${noUser}`],
    ['wrong key', `${server.url}/authroom?yauth=${forged}`],
    ['no token', `${server.url}/authroom`],
    ['garbage token', `${server.url}/authroom?yauth=abc.def`]
  ]) {
    const err = await rejected(RawClient.connect(url, { protocols }))
    assert.equal(err?.statusCode, 401, what)
  }

  // the sidecar's provider authenticates too
  const sidecar = await startSidecar()
  t.after(() => sidecar.stop())
  assert.equal(await sidecar.call('clientOpen', { client: 'q', url: server.url, room: 'authroom', token: writer }), true)
  assert.equal((await sidecar.call('clientContent', { client: 'q' })).t, 'hello')
  assert.equal(await sidecar.call('clientOpen', { client: 'p', url: server.url, room: 'authroom', token: writer, tokenVia: 'protocol' }), true)
  assert.match((await sidecar.raw('clientOpen', { client: 's', url: server.url, room: 'authroom', token: secondsExp, timeoutMs: 1000 })).error, /not synced/)

  await a.close()
  await b.close()
})
