// Load generator of the side-by-side benchmark (`conformance/examples/bench`).
//
// Opens y-websocket-style connections to one server, sends small Yjs updates at a
// fixed aggregate rate and measures, on observer connections, the time from
// sending an update to receiving a frame that carries it. Written in Node
// because `ws` can offer permessage-deflate as browsers do.
//
// Usage: node bench/load.js '<JSON config>' (fields: see `defaults` below).
// Output, one JSON object per line on stdout:
//   {"event":"connected","connections":N}  every connection finished its initial sync
//   {"event":"start"}                     the first measured update is being sent
//   {"event":"end"}                       the observers saw every measured update
//                                         (or the drain time after the last one ran out)
//   {"result":{...}}                      counts and latencies
// The driver reads the servers' CPU time between "start" and "end", so that the
// work on every measured update counts, even when a server falls behind.
//
// Each update sets one key of the map "m" to 1, `bk:` followed by the update's
// 8-digit sequence number. Map keys survive update merging verbatim, so an
// observer finds every update inside a (possibly merged) frame by byte search,
// without decoding it. Updates are built before connecting, so that sending
// costs the generator almost nothing.

import { performance } from 'node:perf_hooks'
import * as Y from 'yjs'
import WebSocket from 'ws'

const defaults = {
  url: 'ws://127.0.0.1:3002', // server base URL; rooms are `${url}/${roomPrefix}${r}`
  roomPrefix: 'bench-',
  rooms: 20,
  senders: 10, // sending connections per room
  observers: 1, // extra connections per room that only observe
  sendersObserve: false, // senders also observe the other senders' updates
  rate: 2000, // updates per second, over all senders
  warmup: 2, // seconds of load before the measured window
  duration: 10, // seconds of the measured window
  drain: 5, // seconds at most to wait for the last deliveries
  deflate: false, // offer permessage-deflate (compressing every message, as browsers do)
  connectConcurrency: 50
}

const KEY = Buffer.from('bk:')
const DIGITS = 8

const config = { ...defaults, ...JSON.parse(process.argv[2] || '{}') }

function emit (object) {
  process.stdout.write(JSON.stringify(object) + '\n')
}

function fail (message) {
  process.stderr.write(`load: ${message}\n`)
  process.exit(1)
}

/** `00 02 <varuint length> <update>`: a y-websocket sync update message. */
function updateMessage (update) {
  const header = [0, 2]
  let n = update.length
  while (n > 0x7f) {
    header.push(0x80 | (n & 0x7f))
    n >>>= 7
  }
  header.push(n)
  return Buffer.concat([Buffer.from(header), update])
}

function writeVarUint (bytes, n) {
  while (n > 0x7f) {
    bytes.push(0x80 | (n & 0x7f))
    n = Math.floor(n / 128)
  }
  bytes.push(n)
}

/**
 * The v1 update by which client `clientID`, at `clock`, sets the key `key` of
 * the root map "m" to 1, encoded directly (yjs takes about 50 µs per update,
 * too slow for the hundred thousand updates of a run): one struct of one
 * client, an item with a parent key and no origins, content `Any [1]`, and an
 * empty delete set. `checkEncoding` compares it with what yjs produces.
 */
function encodeUpdate (clientID, clock, key) {
  const bytes = [1, 1]
  writeVarUint(bytes, clientID)
  writeVarUint(bytes, clock)
  // info: content type 8 (Any) | 0x20 (has a parent key); parent given by name.
  bytes.push(0x28, 1, 1, 0x6d)
  writeVarUint(bytes, key.length)
  for (let i = 0; i < key.length; i++) bytes.push(key.charCodeAt(i))
  bytes.push(1, 0x7d, 1, 0) // Any: 1 value, varint 1; no deletions
  return Buffer.from(bytes)
}

function keyOf (seq) {
  return 'bk:' + String(seq).padStart(DIGITS, '0')
}

/** Fail unless `encodeUpdate` gives yjs's bytes (a few clients and clocks). */
function checkEncoding () {
  for (const clientID of [1, 200, 70000]) {
    const doc = new Y.Doc()
    doc.clientID = clientID
    let update = null
    doc.on('update', (u) => { update = u })
    for (let clock = 0; clock < 200; clock++) {
      doc.getMap('m').set(keyOf(clock * 7), 1)
      if (!Buffer.from(update).equals(encodeUpdate(clientID, clock, keyOf(clock * 7)))) {
        fail(`update encoding differs from yjs's for client ${clientID} at clock ${clock}`)
      }
    }
    doc.destroy()
  }
}

/** Every update of the run, in sending order; update `seq` comes from sender `seq % senders`. */
function buildUpdates (totalSenders, total) {
  checkEncoding()
  const updates = new Array(total)
  for (let seq = 0; seq < total; seq++) {
    const sender = seq % totalSenders
    const clock = Math.floor(seq / totalSenders)
    updates[seq] = updateMessage(encodeUpdate(sender + 1, clock, keyOf(seq)))
  }
  return updates
}

/** Open one connection and wait for the server's sync step 2 (the initial sync). */
function connect (url, onFrame) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: config.deflate ? { threshold: 0, concurrencyLimit: 1000 } : false
    })
    let synced = false
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error(`${url}: no sync step 2 within 30 s`))
    }, 30000)
    ws.on('open', () => ws.send(Buffer.from([0, 0, 1, 0])))
    ws.on('message', (data) => {
      if (!synced) {
        if (data.length >= 2 && data[0] === 0 && data[1] === 1) {
          synced = true
          clearTimeout(timer)
          resolve(ws)
        }
        return
      }
      onFrame(data)
    })
    ws.on('error', (err) => {
      if (!synced) {
        clearTimeout(timer)
        reject(new Error(`${url}: ${err.message}`))
      }
    })
    ws.on('close', () => {
      if (!synced) {
        clearTimeout(timer)
        reject(new Error(`${url}: closed before the initial sync`))
      } else {
        closed++
      }
    })
  })
}

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  return sorted[Math.max(0, i)]
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let closed = 0
let frames = 0

async function main () {
  const { rooms, senders, observers, rate } = config
  const totalSenders = rooms * senders
  const warmupCount = Math.round(config.warmup * rate)
  const measuredCount = Math.round(config.duration * rate)
  const total = warmupCount + measuredCount
  if (totalSenders === 0 || measuredCount === 0) fail('no senders or no measured updates')
  if (total >= 10 ** DIGITS) fail('too many updates for the key width')

  const updates = buildUpdates(totalSenders, total)
  const sendTimes = new Float64Array(total)

  // Measured updates per room and per sender: what each observer should see.
  const perRoom = new Array(rooms).fill(0)
  const perSender = new Array(totalSenders).fill(0)
  for (let seq = warmupCount; seq < total; seq++) {
    const sender = seq % totalSenders
    perRoom[sender % rooms]++
    perSender[sender]++
  }

  const latencies = []
  const watchers = [] // { seen: Set, expected }

  /** A frame handler that records the measured updates of `room` not sent by `self`. */
  function observer (room, self) {
    const watch = { seen: new Set(), expected: perRoom[room] - (self >= 0 ? perSender[self] : 0) }
    watchers.push(watch)
    return (data) => {
      const now = performance.now()
      frames++
      let at = data.indexOf(KEY)
      while (at !== -1 && at + KEY.length + DIGITS <= data.length) {
        let seq = 0
        let valid = true
        for (let i = at + KEY.length; i < at + KEY.length + DIGITS; i++) {
          const c = data[i]
          if (c < 48 || c > 57) { valid = false; break }
          seq = seq * 10 + (c - 48)
        }
        if (valid && seq >= warmupCount && seq < total) {
          const sender = seq % totalSenders
          if (sender % rooms === room && sender !== self && !watch.seen.has(seq)) {
            watch.seen.add(seq)
            latencies.push(now - sendTimes[seq])
          }
        }
        at = data.indexOf(KEY, at + KEY.length)
      }
    }
  }
  const countOnly = () => { frames++ }

  // Connection specs: senders first (sender i is in room i % rooms), then observers.
  const specs = []
  for (let i = 0; i < totalSenders; i++) {
    const room = i % rooms
    specs.push({ room, handler: config.sendersObserve ? observer(room, i) : countOnly })
  }
  for (let k = 0; k < observers; k++) {
    for (let room = 0; room < rooms; room++) specs.push({ room, handler: observer(room, -1) })
  }
  const sockets = new Array(specs.length)
  let next = 0
  async function opener () {
    while (next < specs.length) {
      const i = next++
      const { room, handler } = specs[i]
      sockets[i] = await connect(`${config.url}/${config.roomPrefix}${room}`, handler)
    }
  }
  await Promise.all(Array.from({ length: config.connectConcurrency }, opener))
  emit({ event: 'connected', connections: sockets.length })

  // Send at the fixed rate: every millisecond or so, whatever is due.
  let seq = 0
  let maxLag = 0
  // Bytes the clients' sockets read (what the server put on the wire) and
  // frames they received, at the start of the measured window.
  const bytesRead = () => sockets.reduce((sum, ws) => sum + ws._socket.bytesRead, 0)
  let bytesAtStart = 0
  let framesAtStart = 0
  let cpuStart = null
  let wallStart = 0
  let wallEnd = 0
  const t0 = performance.now()
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now()
      const due = Math.min(total, Math.floor(((now - t0) / 1000) * rate) + 1)
      while (seq < due) {
        if (seq === warmupCount) {
          emit({ event: 'start' })
          bytesAtStart = bytesRead()
          framesAtStart = frames
          cpuStart = process.cpuUsage()
          wallStart = performance.now()
        }
        const scheduled = t0 + (seq / rate) * 1000
        const sentAt = performance.now()
        if (seq >= warmupCount) maxLag = Math.max(maxLag, sentAt - scheduled)
        sendTimes[seq] = sentAt
        sockets[seq % totalSenders].send(updates[seq])
        seq++
      }
      if (seq < total) {
        setTimeout(tick, 1)
      } else {
        wallEnd = performance.now()
        resolve()
      }
    }
    tick()
  })
  const drainUntil = performance.now() + config.drain * 1000
  while (performance.now() < drainUntil && watchers.some((w) => w.seen.size < w.expected)) {
    await sleep(5)
  }
  emit({ event: 'end' })
  const windowBytes = bytesRead() - bytesAtStart
  const windowFrames = frames - framesAtStart
  const drainSecs = (performance.now() - wallEnd) / 1000
  const cpu = process.cpuUsage(cpuStart)

  const expected = watchers.reduce((sum, w) => sum + w.expected, 0)
  const seen = watchers.reduce((sum, w) => sum + w.seen.size, 0)
  const sorted = Float64Array.from(latencies).sort()
  emit({
    result: {
      connections: sockets.length,
      sent: measuredCount,
      windowSecs: (wallEnd - wallStart) / 1000,
      drainSecs,
      expected,
      seen,
      deliveryRatio: expected > 0 ? seen / expected : null,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted.length ? sorted[sorted.length - 1] : null,
      maxSendLagMs: maxLag,
      frames,
      windowFrames,
      windowBytes,
      closed,
      // Connections on which the server accepted permessage-deflate.
      deflated: sockets.filter((ws) => ws.extensions.includes('permessage-deflate')).length,
      clientCpuSecs: (cpu.user + cpu.system) / 1e6
    }
  })
  for (const ws of sockets) ws.terminate()
  process.exit(0)
}

main().catch((err) => fail(err.stack || String(err)))
