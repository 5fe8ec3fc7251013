// Stopping a server or worker process on SIGTERM/SIGINT: destroy its parts in
// order, then exit 0, and never take longer than 3 s.

/**
 * @param {Array<{ destroy: () => Promise<unknown> }>} parts destroyed in this order
 */
export const stopOnSignals = (parts) => {
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    setTimeout(() => process.exit(0), 3000).unref()
    try {
      for (const part of parts) await part.destroy()
    } catch (err) {
      console.error('error while stopping:', /** @type {Error} */ (err).message)
    }
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
