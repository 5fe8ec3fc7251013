#!/usr/bin/env node
// Starts the WebSocket server, configured by y-redis's environment names only.
// Prints `listening on <port>` on stdout once connections are accepted.

import { createStorageFromEnv } from '../src/storage/index.js'
import { stopOnSignals } from '../src/shutdown.js'
import { createAuth } from '../src/auth.js'
import { createYWebsocketServer } from '../src/server.js'

const env = process.env
const store = await createStorageFromEnv(env)
const auth = env.AUTH_PUBLIC_KEY
  ? await createAuth({ publicKey: env.AUTH_PUBLIC_KEY, permCallback: env.AUTH_PERM_CALLBACK })
  : null
if (auth == null) console.error('AUTH_PUBLIC_KEY is not set: every connection gets read-write access')

const server = await createYWebsocketServer({
  port: Number(env.PORT ?? 3002),
  store,
  redisUrl: env.REDIS || 'redis://localhost:6379',
  redisPrefix: env.REDIS_PREFIX || 'y',
  auth
})
process.stdout.write(`listening on ${server.port}\n`)

stopOnSignals([server, store])
