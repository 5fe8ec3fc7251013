// Authentication at the WebSocket upgrade as y-redis 0.1.6 does it (docs/protocol.md
// §6): an ES384 JWT checked against a JWK public key, an `exp` compared in
// milliseconds, then a permission callback deciding between read-write and read-only.

import { webcrypto } from 'node:crypto'

const subtle = webcrypto.subtle

/** @param {string} s base64url text */
const fromBase64Url = s => {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('invalid base64url')
  return new Uint8Array(Buffer.from(s, 'base64url'))
}

/**
 * The token offered by a request: the `yauth-<token>` entry of
 * Sec-WebSocket-Protocol, else the `yauth` query parameter.
 * @param {import('node:http').IncomingMessage} req
 * @return {string | null}
 */
export const getToken = req => {
  const offered = getAuthSubprotocol(req)
  if (offered != null) return offered.slice('yauth-'.length)
  const query = (req.url ?? '').split('?')[1]
  if (query == null) return null
  return new URLSearchParams(query).get('yauth')
}

/**
 * The `yauth-<token>` entry of Sec-WebSocket-Protocol, if any.
 * @param {import('node:http').IncomingMessage} req
 */
export const getAuthSubprotocol = req => {
  const header = req.headers['sec-websocket-protocol']
  if (typeof header !== 'string') return null
  return header.split(',').map(s => s.trim()).find(s => s.startsWith('yauth-')) ?? null
}

/**
 * @param {CryptoKey} key
 * @param {string} jwt
 * @return {Promise<any>} the payload
 */
export const verifyJwt = async (key, jwt) => {
  const parts = jwt.split('.')
  if (parts.length !== 3) throw new Error('malformed JWT')
  const [header, payload, signature] = parts
  const ok = await subtle.verify(
    { name: 'ECDSA', hash: 'SHA-384' },
    key,
    fromBase64Url(signature),
    new TextEncoder().encode(header + '.' + payload)
  )
  if (!ok) throw new Error('invalid JWT signature')
  const claims = JSON.parse(new TextDecoder().decode(fromBase64Url(payload)))
  // exp is compared with the current time in milliseconds: a seconds-based exp is always expired
  if (claims != null && claims.exp != null && Date.now() > claims.exp) throw new Error('expired JWT')
  return claims
}

/**
 * @param {object} opts
 * @param {string} opts.publicKey JWK as JSON text
 * @param {string} [opts.permCallback] base URL of the permission callback
 */
export const createAuth = async ({ publicKey, permCallback }) => {
  const jwk = JSON.parse(publicKey)
  delete jwk.key_ops
  const key = await subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['verify'])
  const base = permCallback == null ? null : (permCallback.endsWith('/') ? permCallback : permCallback + '/')
  if (base == null) console.error('AUTH_PERM_CALLBACK is not set: every connection will be refused')
  return {
    /**
     * Resolves to the user's access, rejects on any failure (answered with 401).
     * @param {import('node:http').IncomingMessage} req
     * @param {string} room
     * @return {Promise<{ userid: string, hasWriteAccess: boolean }>}
     */
    async authorize (req, room) {
      const token = getToken(req)
      if (token == null) throw new Error('no token')
      const claims = await verifyJwt(key, token)
      const userid = claims?.yuserid
      if (userid == null) throw new Error('token without yuserid')
      if (base == null) throw new Error('no permission callback')
      const res = await fetch(`${base}${room}/${userid}`)
      if (!res.ok) throw new Error(`permission callback answered ${res.status}`)
      const { yaccess } = await res.json()
      return { userid, hasWriteAccess: yaccess === 'rw' }
    }
  }
}
