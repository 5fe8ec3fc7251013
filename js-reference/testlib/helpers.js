// Shared test plumbing: a private redis-server per test, the server/worker/sidecar
// child processes, a raw WebSocket client that records frames, and the fixtures.

import { spawn } from 'node:child_process'
import { readFileSync, existsSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as readline from 'node:readline'
import WebSocket from 'ws'
import { createClient, commandOptions } from 'redis'

const here = path.dirname(fileURLToPath(import.meta.url))
export const root = path.join(here, '..')

/** The y-redis 0.1.6 captures (copied into test/fixtures; YREDIS_FIXTURES overrides). */
export const loadFixture = name => {
  const candidates = [
    process.env.YREDIS_FIXTURES,
    path.join(root, 'test', 'fixtures')
  ].filter(Boolean)
  for (const dir of candidates) {
    const file = path.join(/** @type {string} */ (dir), name)
    if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'))
  }
  throw new Error(`fixture ${name} not found in ${candidates.join(', ')}`)
}

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/**
 * The promise's value, or `fallback` if it takes longer than ms (the timer is cleared).
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {any} [fallback]
 */
export const within = (promise, ms, fallback = null) => {
  let timer
  const t = new Promise(resolve => { timer = setTimeout(() => resolve(fallback), ms) })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

export const hex = bytes => Buffer.from(bytes).toString('hex')
export const unhex = s => new Uint8Array(Buffer.from(s, 'hex'))

export const freePort = () => new Promise((resolve, reject) => {
  const srv = net.createServer()
  srv.once('error', reject)
  srv.listen(0, '127.0.0.1', () => {
    const { port } = /** @type {net.AddressInfo} */ (srv.address())
    srv.close(() => resolve(port))
  })
})

/**
 * Poll `f` until it returns a truthy value.
 * @template T
 * @param {() => Promise<T> | T} f
 * @param {number} timeoutMs
 * @param {string} what
 * @return {Promise<T>}
 */
export const waitFor = async (f, timeoutMs, what) => {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

/**
 * Spawn a child and wait for a line on its stdout.
 * @param {string} cmd
 * @param {Array<string>} args
 * @param {{ env?: Record<string, string>, ready?: string | RegExp, timeoutMs?: number }} opts
 */
export const startProcess = (cmd, args, { env = {}, ready, timeoutMs = 10000 } = {}) => new Promise((resolve, reject) => {
  const proc = spawn(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  proc.stderr.on('data', d => { stderr += d })
  const exited = new Promise(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
  const handle = {
    proc,
    exited,
    get stderr () { return stderr },
    async stop () {
      if (proc.exitCode == null && proc.signalCode == null) proc.kill('SIGTERM')
      return exited
    }
  }
  if (ready == null) return resolve(handle)
  const timer = setTimeout(() => {
    proc.kill('SIGKILL')
    reject(new Error(`${cmd} ${args.join(' ')} not ready in time; stderr: ${stderr}`))
  }, timeoutMs)
  const rl = readline.createInterface({ input: proc.stdout })
  rl.on('line', line => {
    if (typeof ready === 'string' ? line === ready : ready.test(line)) {
      clearTimeout(timer)
      resolve(handle)
    }
  })
  proc.once('exit', code => {
    clearTimeout(timer)
    reject(new Error(`${cmd} exited with ${code} before it was ready; stderr: ${stderr}`))
  })
})

/** A private redis-server on a free port, plus a client for inspection. */
export const startRedis = async () => {
  const port = await freePort()
  const server = await startProcess('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], {
    ready: /Ready to accept connections/
  })
  const url = `redis://127.0.0.1:${port}`
  const client = createClient({ url })
  client.on('error', () => {})
  await client.connect()
  return {
    url,
    client,
    /** entries of a stream as { id, fields: [name, hex value, ...] } */
    async xrangeHex (key) {
      const entries = await client.sendCommand(['XRANGE', key, '-', '+'], commandOptions({ returnBuffers: true }))
      return entries.map(([id, fields]) => ({
        id: id.toString(),
        fields: fields.map((f, i) => i % 2 === 0 ? f.toString() : f.toString('hex'))
      }))
    },
    async stop () {
      try { await client.quit() } catch {}
      await server.stop()
    }
  }
}

/**
 * @param {string} redisUrl
 * @param {Record<string, string>} [env]
 */
export const startServer = async (redisUrl, env = {}) => {
  const port = await freePort()
  const handle = await startProcess('node', ['bin/server.js'], {
    env: { REDIS: redisUrl, PORT: String(port), ...env },
    ready: `listening on ${port}`
  })
  return Object.assign(handle, { port, url: `ws://127.0.0.1:${port}` })
}

/**
 * @param {string} redisUrl
 * @param {Record<string, string>} [env]
 */
export const startWorker = (redisUrl, env = {}) => startProcess('node', ['bin/worker.js'], {
  env: { REDIS: redisUrl, ...env },
  ready: 'worker started'
})

/** A raw WebSocket client that records every frame it receives. */
export class RawClient {
  /**
   * @param {string} url
   * @param {{ protocols?: Array<string> }} [opts]
   */
  static connect (url, { protocols } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols)
      const client = new RawClient(ws)
      ws.once('open', () => resolve(client))
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
      ws.once('error', reject)
    })
  }

  /** @param {WebSocket} ws */
  constructor (ws) {
    this.ws = ws
    /** @type {Array<Uint8Array>} */
    this.frames = []
    /** @type {Array<() => void>} */
    this.waiters = []
    this.read = 0
    /** @type {Array<(frame: Uint8Array) => void>} */
    this.listeners = []
    ws.on('message', data => {
      const frame = new Uint8Array(data)
      this.frames.push(frame)
      this.listeners.forEach(l => l(frame))
      this.waiters.splice(0).forEach(w => w())
    })
    this.closed = new Promise(resolve => ws.once('close', resolve))
  }

  /** Call `listener` for every frame, those already received included. */
  onFrame (listener) {
    this.frames.forEach(f => listener(f))
    this.listeners.push(listener)
  }

  /** Next unread frame. */
  async next (timeoutMs = 5000) {
    const end = Date.now() + timeoutMs
    while (this.read >= this.frames.length) {
      const left = end - Date.now()
      if (left <= 0) throw new Error('no frame received in time')
      await new Promise(resolve => {
        const t = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(t); resolve(undefined) })
      })
    }
    return this.frames[this.read++]
  }

  /** @param {number} n @return {Promise<Array<string>>} the next n frames as hex */
  async nextHex (n, timeoutMs = 5000) {
    const out = []
    for (let i = 0; i < n; i++) out.push(hex(await this.next(timeoutMs)))
    return out
  }

  /** Resolves true if no frame arrives within ms. */
  async quiet (ms) {
    await sleep(ms)
    return this.read >= this.frames.length
  }

  /** @param {string} h */
  send (h) {
    this.ws.send(unhex(h))
  }

  /**
   * Send several frames in one TCP write, so that the server reads them together
   * and handles them in one turn of its event loop (its appends then reach Redis in
   * one pipeline), as the capture's client did; sent one by one, a loaded machine may
   * let the server read and append them apart, and the stream reads batch them
   * differently.
   * @param {Array<string>} hexes
   */
  sendTogether (hexes) {
    const socket = /** @type {any} */ (this.ws)._socket
    socket.cork()
    hexes.forEach(h => this.ws.send(unhex(h)))
    process.nextTick(() => socket.uncork())
  }

  async close () {
    this.ws.close()
    await this.closed
  }
}

/** The sidecar as a child process with a request/response helper. */
export const startSidecar = async () => {
  const handle = await startProcess('node', ['bin/sidecar.js'])
  const pending = new Map()
  let nextId = 1
  const rl = readline.createInterface({ input: handle.proc.stdout })
  rl.on('line', line => {
    const res = JSON.parse(line)
    const p = pending.get(res.id)
    if (p == null) return
    pending.delete(res.id)
    p(res)
  })
  return {
    handle,
    /**
     * @param {string} cmd
     * @param {object} [args]
     * @return {Promise<{ ok?: any, error?: string }>}
     */
    raw (cmd, args = {}) {
      const id = nextId++
      return new Promise(resolve => {
        pending.set(id, resolve)
        handle.proc.stdin.write(JSON.stringify({ id, cmd, ...args }) + '\n')
      })
    },
    /** Like raw, but rejects on an error answer. */
    async call (cmd, args = {}) {
      const res = await this.raw(cmd, args)
      if (res.error != null) throw new Error(`${cmd}: ${res.error}`)
      return res.ok
    },
    async stop () {
      handle.proc.stdin.end()
      return handle.exited
    }
  }
}
