// Auth at the upgrade: ES384 tokens by query and by subprotocol, read-only users
// whose messages are dropped, and the millisecond `exp` rule refusing seconds.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { webcrypto } from 'node:crypto'
import net from 'node:net'
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

/**
 * An upgrade request written by hand; resolves to the status line and the
 * Sec-WebSocket-Protocol answered.
 * @param {number} port
 * @param {string} path
 * @param {Array<string>} protocolLines
 */
const handshake = (port, path, protocolLines = []) => new Promise((resolve, reject) => {
  const socket = net.connect(port, '127.0.0.1', () => {
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
      protocolLines.map(line => `Sec-WebSocket-Protocol: ${line}\r\n`).join('') + '\r\n')
  })
  let head = ''
  socket.on('data', data => {
    head += data.toString('latin1')
    const end = head.indexOf('\r\n\r\n')
    if (end < 0) return
    socket.destroy()
    const lines = head.slice(0, end).split('\r\n')
    const protocol = lines.find(l => l.toLowerCase().startsWith('sec-websocket-protocol:'))
    resolve({ status: Number(lines[0].split(' ')[1]), protocol: protocol?.slice(protocol.indexOf(':') + 1).trim() ?? null })
  })
  socket.on('error', reject)
})

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

  // rw token by subprotocol: answered with the first offered entry (uWebSockets.js)
  const b = await RawClient.connect(`${server.url}/authroom`, { protocols: [`yauth-${writer}`, 'other'] })
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

test('auth: y-redis 0.1.6 corners (lib0 key import and JWT, callback body, subprotocol rules, routing)', async t => {
  const { publicKey, privateKey } = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])
  const jwk = await subtle.exportKey('jwk', publicKey)
  assert.deepEqual(jwk.key_ops, ['verify'])

  // the callback answers 403 with a granting body for the user "denied"
  const permPort = await freePort()
  const perm = http.createServer((req, res) => {
    const user = req.url.split('/').at(-1)
    res.writeHead(user === 'denied' ? 403 : 200, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ yaccess: 'rw', yuserid: user }))
  })
  await new Promise(resolve => perm.listen(permPort, '127.0.0.1', resolve))
  t.after(() => perm.close())
  const redis = await startRedis()
  t.after(() => redis.stop())

  // a public key without key_ops: lib0 asks WebCrypto for ['sign', 'verify'], which it refuses
  const { key_ops: _, ...withoutKeyOps } = jwk
  await assert.rejects(startServer(redis.url, { AUTH_PUBLIC_KEY: JSON.stringify(withoutKeyOps), AUTH_PERM_CALLBACK: `http://127.0.0.1:${permPort}` }),
    /Unsupported key usage/)

  const server = await startServer(redis.url, { AUTH_PUBLIC_KEY: JSON.stringify(jwk), AUTH_PERM_CALLBACK: `http://127.0.0.1:${permPort}` })
  t.after(() => server.stop())
  const token = await sign(privateKey, { yuserid: 'alice' })
  const signText = async (headerText, payloadText, pad = false) => {
    const enc = text => pad ? Buffer.from(text).toString('base64').replaceAll('+', '-').replaceAll('/', '_') : b64url(text)
    const head = enc(headerText) + '.' + enc(payloadText)
    const sig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, privateKey, new TextEncoder().encode(head))
    return head + '.' + b64url(new Uint8Array(sig))
  }
  const padded = await signText('{"alg":"ES384","typ":"JWT"}', '{"yuserid":"alice1"}', true)
  assert.match(padded.split('.')[1], /=$/)
  const headerNotJson = await signText('not json', '{"yuserid":"alice"}')
  const denied = await sign(privateKey, { yuserid: 'denied' })

  const cases = [
    ['four parts', `/r1?yauth=${token}.extra`, [], 101, null],
    ['payload with = padding', `/r2?yauth=${padded}`, [], 101, null],
    ['callback 403 with a granting body', `/r3?yauth=${denied}`, [], 101, null],
    ['header not JSON', `/r4?yauth=${headerNotJson}`, [], 401, null],
    ['space after the comma', '/r5', [`other, yauth-${token}`], 401, null],
    ['no space after the comma: the first entry is answered', '/r6', [`other,yauth-${token}`], 101, 'other'],
    ['token on the second header line', '/r7', ['other', `yauth-${token}`], 401, null],
    ['query token, other protocol offered: echoed', `/r8?yauth=${token}`, ['other'], 101, 'other'],
    ['protocol token first', '/r9', [`yauth-${token},other`], 101, `yauth-${token}`],
    ['empty room', `/?yauth=${token}`, [], 404, null],
    ['two segments', `/a/b?yauth=${token}`, [], 404, null]
  ]
  for (const [what, path, lines, status, protocol] of cases) {
    const answer = await handshake(server.port, path, lines)
    assert.deepEqual(answer, { status, protocol }, what)
  }
})

test('routing without auth: one non-empty segment, else 404', async t => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const server = await startServer(redis.url)
  t.after(() => server.stop())
  assert.deepEqual(await handshake(server.port, '/room'), { status: 101, protocol: null })
  assert.deepEqual(await handshake(server.port, '/'), { status: 404, protocol: null })
  assert.deepEqual(await handshake(server.port, '/a/'), { status: 404, protocol: null })
})
