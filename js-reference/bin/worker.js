#!/usr/bin/env node
// Starts the compaction worker, configured by y-redis's environment names only.
// Prints `worker started` on stdout once the worker group exists.

import { createStorageFromEnv } from '../src/storage/index.js'
import { stopOnSignals } from '../src/shutdown.js'
import { createWorker } from '../src/worker.js'

const env = process.env
const store = await createStorageFromEnv(env)
const worker = await createWorker(store, {
  redisUrl: env.REDIS || 'redis://localhost:6379',
  redisPrefix: env.REDIS_PREFIX || 'y',
  taskDebounce: Number(env.REDIS_TASK_DEBOUNCE ?? 10000),
  minMessageLifetime: Number(env.REDIS_MIN_MESSAGE_LIFETIME ?? 60000),
  updateCallback: env.YDOC_UPDATE_CALLBACK || undefined
})
process.stdout.write('worker started\n')

stopOnSignals([worker, store])
