// The project's two pages in headless Chromium: the editing demo
// (`websocket demo`) and the inspector (operations port), on a fleet of one
// Rust and one JavaScript instance.
// Usage: node pages_in_chromium.mjs '<json>' with
//   demo      the Rust demo instance's page, http://127.0.0.1:PORT
//   js        the JavaScript instance's WebSocket base, ws://127.0.0.1:PORT
//   inspector the Rust instance's operations base, http://127.0.0.1:PORT
//   secret    the API secret (the inspector's password)
//   room      the room both editors edit
//   hostile   room names that must be shown literally
//   images    where the screenshots go (inspector.png, inspector-rooms.png, demo.png)
// Two editors, one per instance, type; both show the same text and each
// other's cursor; the inspector lists the room, shows its live content and
// history (two versions kept from its page), shows the hostile room names as
// text with no script run, and its rollback changes both editors.
// Prints one JSON line with what it saw and exits 0; any failure, or 90 s
// without success, exits 1 with a message on stderr.
import path from 'node:path'
import { startRun } from './chromium.mjs'

const options = JSON.parse(process.argv[2] || '{}')
for (const key of ['demo', 'js', 'inspector', 'secret', 'room', 'hostile', 'images']) {
  if (options[key] === undefined) {
    console.error(`usage: node pages_in_chromium.mjs '<json>' (missing ${key})`)
    process.exit(2)
  }
}
const PHASE_ONE = { rust: 'Typed through Rust. ', js: 'Typed through JavaScript.' }
const LATER = ' Written after the first version.'

const run = startRun(90000)
const dialogs = []

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Wait until `check` gives a truthy value, saying what is awaited. */
const until = async (what, check) => {
  run.stage = `waiting for ${what}`
  for (;;) {
    const value = await check()
    if (value) return value
    await sleep(100)
  }
}

/** Record `page`'s errors and dismiss (and record) any dialog it opens. */
const watch = (page, name) => {
  run.watch(page, name)
  page.on('dialog', async (dialog) => {
    dialogs.push(`${name}: ${dialog.type()} ${dialog.message()}`)
    await dialog.dismiss().catch(() => {})
  })
}

/** A demo page in a browser context of its own, synced with its server. */
const openEditor = async (name, query) => {
  const context = await run.browser.createBrowserContext()
  const page = await context.newPage()
  await page.setViewport({ width: 900, height: 560 })
  watch(page, name)
  await page.goto(`${options.demo}/?${new URLSearchParams(query)}`, { waitUntil: 'load' })
  await until(`${name} to sync`, () => page.evaluate(() => !!(window.demo && window.demo.provider.synced)))
  return page
}

const textOf = (page) => page.evaluate(() => window.demo.view.state.doc.textContent)

/** Type `text` at the end of the editor of `page`. */
const typeAtEnd = async (page, text) => {
  await page.click('.ProseMirror')
  await page.evaluate(() => window.demo.view.focus())
  await page.keyboard.down('Control')
  await page.keyboard.press('End')
  await page.keyboard.up('Control')
  await page.keyboard.type(text, { delay: 5 })
}

/** Names on the remote cursors `page` shows. */
const cursorsOn = (page) => page.$$eval('.ProseMirror-yjs-cursor', (nodes) => nodes.map((n) => n.textContent))

const auth = 'Basic ' + Buffer.from(`inspector:${options.secret}`).toString('base64')
const inspectorData = async (room) => {
  const response = await fetch(`${options.inspector}/inspector/data/room?${new URLSearchParams({ room, docid: 'index' })}`, { headers: { authorization: auth } })
  if (!response.ok) throw new Error(`inspector data: ${response.status} ${await response.text()}`)
  return response.json()
}

const main = async () => {
  await run.launch([options.demo, options.js, options.inspector])
  const rust = await openEditor('editor A (Rust server)', { room: options.room, name: 'Ada on Rust' })
  const js = await openEditor('editor B (JavaScript server)', { room: options.room, name: 'Bob on JavaScript', server: options.js })

  await typeAtEnd(rust, PHASE_ONE.rust)
  await until('editor B to show what A typed', async () => (await textOf(js)).includes(PHASE_ONE.rust))
  await typeAtEnd(js, PHASE_ONE.js)
  const phaseOne = await until('both editors to agree', async () => {
    const [a, b] = await Promise.all([textOf(rust), textOf(js)])
    return a === b && a.includes(PHASE_ONE.rust) && a.includes(PHASE_ONE.js) && a
  })
  const cursors = {
    rust: await until('editor A to show B\'s cursor', async () => (await cursorsOn(rust)).find((n) => n.includes('Bob on JavaScript'))),
    js: await until('editor B to show A\'s cursor', async () => (await cursorsOn(js)).find((n) => n.includes('Ada on Rust')))
  }
  await rust.screenshot({ path: path.join(options.images, 'demo.png') })

  // The inspector, with the secret as Basic auth's password.
  const context = await run.browser.createBrowserContext()
  const inspector = await context.newPage()
  await inspector.setViewport({ width: 1280, height: 900 })
  watch(inspector, 'inspector')
  await inspector.authenticate({ username: 'inspector', password: options.secret })
  await inspector.goto(`${options.inspector}/inspector`, { waitUntil: 'load' })
  const listed = await until('the inspector to list every room', async () => {
    const names = await inspector.$$eval('#rooms a.room-link', (links) => links.map((a) => a.textContent))
    return [options.room, ...options.hostile].every((r) => names.includes(r)) && names
  })
  const injected = await inspector.$$eval('#rooms script, #rooms img', (nodes) => nodes.length)
  await inspector.screenshot({ path: path.join(options.images, 'inspector-rooms.png') })

  // A hostile room's view: its name as text.
  await inspector.evaluate((room) => { location.hash = '#' + new URLSearchParams({ room, docid: 'index' }) }, options.hostile[0])
  const hostileShown = await until('the hostile room\'s view', () => inspector.$eval('#room-name', (n) => n.textContent))

  // The room: live content, then two versions kept from the page.
  await inspector.evaluate((room) => { location.hash = '#' + new URLSearchParams({ room, docid: 'index' }) }, options.room)
  await until('the live content', () => inspector.$eval('#content-json', (n) => n.textContent.includes('Typed through JavaScript')).catch(() => false))
  const keep = async (what) => {
    const before = (await inspectorData(options.room)).versions.length
    await inspector.click('#keep-version')
    await until(what, async () => (await inspectorData(options.room)).versions.length > before)
  }
  await keep('the first version')
  const first = (await inspectorData(options.room)).versions.at(-1).version
  await typeAtEnd(rust, LATER)
  await until('editor B to show the later edit', async () => (await textOf(js)).includes(LATER))
  await until('the inspector to show the later edit live', () => inspector.$eval('#content-json', (n) => n.textContent.includes('Written after')).catch(() => false))
  await keep('the second version')
  const versions = await until('two versions in the history', async () => {
    const n = await inspector.$$eval('#versions tr.version', (rows) => rows.length)
    return n >= 2 && n
  })
  // The diff between the first version and now names the later edit.
  await inspector.click(`#versions tr.version[data-version="${first}"] input[name="diff-a"]`)
  const diff = await until('the diff', () => inspector.$eval('#diff', (n) => n.textContent.includes('Written after') && n.textContent))
  await inspector.screenshot({ path: path.join(options.images, 'inspector.png'), fullPage: true })

  // Roll back to the first version: both editors lose the later edit.
  await inspector.click(`button.rollback[data-version="${first}"]`)
  const rolledBack = await until('both editors to show the first version', async () => {
    const [a, b] = await Promise.all([textOf(rust), textOf(js)])
    return a === b && !a.includes(LATER) && a.includes(PHASE_ONE.rust) && a
  })
  await sleep(300)
  const pageErrors = run.pageErrors
  await run.finish({ phaseOne, cursors, listed, injected, hostileShown, versions, first, diff, rolledBack, dialogs, pageErrors })
}

run.main(main)
