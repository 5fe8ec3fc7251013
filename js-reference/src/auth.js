// Authentication at the WebSocket upgrade as y-redis 0.1.6 does it (docs/protocol.md
// §6), with lib0's own key import and JWT verification: the public JWK is
// imported by `ecdsa.importKeyJwk` (usages from `key_ops`, `['sign', 'verify']` when
// absent, which WebCrypto refuses for a public key), the token checked by
// `jwt.verifyJwt` (ES384, `exp` in milliseconds, the header parsed as JSON), then the
// permission callback's JSON body decides between read-write and read-only.

import * as ecdsa from 'lib0/crypto/ecdsa'
import * as jwt from 'lib0/crypto/jwt'

/**
 * The token of an upgrade request, found as y-redis finds it: a `yauth-` entry at the
 * start of the (first) Sec-WebSocket-Protocol header or right after a comma, up to the
 * next comma; else the `yauth` query parameter.
 * @param {string} protocolHeader
 * @param {string | undefined} queryToken
 * @return {string | null | undefined}
 */
export const findToken = (protocolHeader, queryToken) => {
  const [, , token] = /(^|,)yauth-(((?!,).)*)/.exec(protocolHeader) ?? [null, null, queryToken]
  return token
}

/**
 * @param {object} opts
 * @param {string} opts.publicKey JWK as JSON text
 * @param {string} [opts.permCallback] base URL of the permission callback
 * @return {Promise<import('./server.js').Authorizer>}
 */
export const createAuth = async ({ publicKey, permCallback }) => {
  // Throws at start for a key WebCrypto refuses, as y-redis's server does.
  const key = await ecdsa.importKeyJwk(JSON.parse(publicKey))
  const base = permCallback == null ? null : (permCallback.endsWith('/') ? permCallback : permCallback + '/')
  if (base == null) console.error('AUTH_PERM_CALLBACK is not set: every connection will be refused')
  return {
    async authorize ({ room, protocolHeader, queryToken }) {
      const token = findToken(protocolHeader, queryToken)
      if (token == null) throw new Error('no token')
      const { payload } = await jwt.verifyJwt(key, token)
      if (payload.yuserid == null) throw new Error('token without yuserid')
      if (base == null) throw new Error('no permission callback')
      // The answer's status is not looked at: only its JSON body decides.
      const perm = await fetch(new URL(`${room}/${payload.yuserid}`, base)).then(res => res.json())
      return { userid: perm.yuserid || '', hasWriteAccess: perm.yaccess === 'rw' }
    }
  }
}
