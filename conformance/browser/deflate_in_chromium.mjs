// y-websocket 2.1.0 in headless Chromium, on the browser's own WebSocket
// (which offers permessage-deflate), against a Rust and a JavaScript server of
// one fleet.
// Usage: node deflate_in_chromium.mjs <rustUrl> <jsUrl> <room>
// where each URL is a server's ws:// base (the provider appends the room).
// Page A's provider connects to the Rust server, page B's to the JavaScript
// server, each in a browser context of its own and without BroadcastChannel,
// so everything they share goes through the two servers and their Redis.
// Prints one JSON line:
//   {"rust": {"extensions", "text", "inserted"}, "js": {...}}
// and exits 0; any failure, or 30 s without success, exits 1 with a message
// on stderr. Chromium is /usr/bin/chromium unless CHROMIUM names another.
import http from 'node:http'
import { jsDir, requireJs, startRun } from './chromium.mjs'

const esbuild = requireJs('esbuild')

const [rustUrl, jsUrl, room] = process.argv.slice(2)
if (!rustUrl || !jsUrl || !room) {
  console.error('usage: node deflate_in_chromium.mjs <rustUrl> <jsUrl> <room>')
  process.exit(2)
}
const run = startRun(30000)

// Each insert is longer than the Rust server's WS_DEFLATE_MIN_SIZE (128 bytes
// by default), so the updates relayed between the pages are compressed.
const inserts = {
  rust: '[page A, Rust server] ' + 'compressed through the Rust server; '.repeat(6),
  js: '[page B, JavaScript server] ' + 'compressed through the JavaScript server; '.repeat(6)
}

/** yjs and y-websocket for the page, on `window`, bundled in memory. */
const bundle = async () => {
  const result = await esbuild.build({
    stdin: {
      contents: [
        "import * as Y from 'yjs'",
        "import { WebsocketProvider } from 'y-websocket'",
        'window.Y = Y',
        'window.WebsocketProvider = WebsocketProvider'
      ].join('\n'),
      resolveDir: jsDir,
      loader: 'js'
    },
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    logLevel: 'silent'
  })
  return result.outputFiles[0].text
}

/** A page and its script, served on loopback so that the page has an http origin. */
const serve = (script) => new Promise((resolve, reject) => {
  const html = '<!doctype html><meta charset="utf-8"><title>y-websocket</title><script src="/bundle.js"></script>'
  const server = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(html)
    } else if (req.url === '/bundle.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' })
      res.end(script)
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204)
      res.end()
    } else {
      res.writeHead(404)
      res.end()
    }
  })
  server.once('error', reject)
  server.listen(0, '127.0.0.1', () => resolve(server))
})

/** A page in a browser context of its own, its provider synced with `serverUrl`. */
const openSynced = async (name, origin, serverUrl) => {
  const context = await run.browser.createBrowserContext()
  const page = await context.newPage()
  run.watch(page, name)
  await page.goto(origin, { waitUntil: 'load' })
  await page.evaluate((url, roomName) => new Promise((resolve) => {
    const doc = new window.Y.Doc()
    // The browser's own WebSocket (the provider's default), no cross-tab channel.
    const provider = new window.WebsocketProvider(url, roomName, doc, { disableBc: true })
    window.doc = doc
    window.provider = provider
    const synced = (isSynced) => {
      if (isSynced) {
        provider.off('sync', synced)
        resolve()
      }
    }
    provider.on('sync', synced)
  }), serverUrl, room)
  return page
}

/** The page's text `t`. */
const textOf = (page) => page.evaluate(() => window.doc.getText('t').toString())

const main = async () => {
  run.stage = 'bundling yjs and y-websocket'
  const script = await bundle()
  const site = await serve(script)
  run.onCleanUp(() => {
    site.closeAllConnections()
    site.close()
  })
  const origin = `http://127.0.0.1:${site.address().port}/`
  await run.launch([rustUrl, jsUrl])
  run.stage = 'waiting for both providers to sync'
  const [rustPage, jsPage] = await Promise.all([
    openSynced('page A (Rust server)', origin, rustUrl),
    openSynced('page B (JavaScript server)', origin, jsUrl)
  ])
  await Promise.all([
    rustPage.evaluate((s) => { window.doc.getText('t').insert(0, s) }, inserts.rust),
    jsPage.evaluate((s) => { window.doc.getText('t').insert(0, s) }, inserts.js)
  ])
  let texts
  for (;;) {
    texts = await Promise.all([textOf(rustPage), textOf(jsPage)])
    run.stage = `waiting for the pages to converge; texts are ${JSON.stringify(texts)}`
    const complete = (t) => t.includes(inserts.rust) && t.includes(inserts.js)
    if (texts[0] === texts[1] && complete(texts[0])) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const extensionsOf = (page) => page.evaluate(() => {
    const ws = window.provider.ws
    return ws && ws.readyState === WebSocket.OPEN ? ws.extensions : null
  })
  const [rustExtensions, jsExtensions] = await Promise.all([extensionsOf(rustPage), extensionsOf(jsPage)])
  if (rustExtensions === null || jsExtensions === null) {
    throw new Error(`a provider's socket is not open: rust ${rustExtensions}, js ${jsExtensions}`)
  }
  const result = {
    rust: { extensions: rustExtensions, text: texts[0], inserted: inserts.rust },
    js: { extensions: jsExtensions, text: texts[1], inserted: inserts.js }
  }
  await Promise.all([rustPage, jsPage].map((page) => page.evaluate(() => window.provider.destroy())))
  await run.finish(result)
}

run.main(main)
