// What every browser script here shares: the packages of js-reference (or
// CONFORMANCE_JS_DIR), Debian's Chromium (or CHROMIUM) launched headless, and
// one run's bookkeeping: the stage it is in (for a timeout's message), the
// errors its pages reported, clean-up, and the one JSON line it ends with.
import { createRequire } from 'node:module'
import path from 'node:path'

/** The folder whose node_modules the scripts use. */
export const jsDir = process.env.CONFORMANCE_JS_DIR || path.resolve(import.meta.dirname, '../../js-reference')
/** `require` resolving from `jsDir`. */
export const requireJs = createRequire(path.join(jsDir, 'package.json'))
/** The Chromium binary. */
export const chromium = process.env.CHROMIUM || '/usr/bin/chromium'

/**
 * Start a run that fails after `timeoutMs`. The run's `stage` names what it
 * waits for; `pageErrors` collects what pages report (see `watch`); `onCleanUp`
 * adds a step to the clean-up; `fail` prints why and exits 1; `finish` prints
 * the result line and exits 0.
 */
export const startRun = (timeoutMs) => {
  const cleanUps = []
  const run = { stage: 'starting', pageErrors: [], browser: null }
  const cleanUp = async () => {
    if (run.browser) {
      const process_ = run.browser.process()
      await Promise.race([run.browser.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 5000))])
      if (process_ && process_.exitCode === null && process_.signalCode === null) process_.kill('SIGKILL')
      run.browser = null
    }
    for (const step of cleanUps.splice(0)) step()
  }
  let failing = false
  run.fail = async (why) => {
    if (failing) return
    failing = true
    console.error(why)
    if (run.pageErrors.length > 0) {
      const shown = run.pageErrors.slice(-20)
      console.error(`page errors (last ${shown.length} of ${run.pageErrors.length}):\n` + shown.join('\n'))
    }
    await cleanUp()
    process.exit(1)
  }
  const timer = setTimeout(() => { run.fail(`timed out after ${timeoutMs / 1000} s ${run.stage}`) }, timeoutMs)
  run.onCleanUp = (step) => { cleanUps.push(step) }
  /** Launch Chromium headless, allowed to reach the ports of `urls`. */
  run.launch = async (urls) => {
    run.stage = `launching ${chromium}`
    const puppeteer = requireJs('puppeteer-core')
    run.browser = await puppeteer.launch({
      executablePath: chromium,
      // `headless: true` is Chromium's `--headless=new`.
      headless: true,
      pipe: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--no-default-browser-check',
        // Chromium refuses some ports (net::ERR_UNSAFE_PORT); the servers' free
        // ports are allowed whatever they are.
        `--explicitly-allowed-ports=${urls.map((u) => new URL(u).port || '80').join(',')}`
      ]
    })
    return run.browser
  }
  /** Record what `page` (called `name`) reports as errors. */
  run.watch = (page, name) => {
    page.on('pageerror', (err) => run.pageErrors.push(`${name}: ${err.message}`))
    page.on('console', (message) => {
      if (message.type() === 'error') run.pageErrors.push(`${name} console: ${message.text()}`)
    })
  }
  run.finish = async (result) => {
    clearTimeout(timer)
    await cleanUp()
    process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0))
  }
  /** Run `main`, failing the run with whatever it throws. */
  run.main = (main) => {
    main().catch((err) => run.fail(`failed ${run.stage}: ${err && err.stack ? err.stack : err}`))
  }
  return run
}
