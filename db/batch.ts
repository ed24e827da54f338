export interface BatcherOptions {
  /** Most items in one write. */
  maxBatch: number
  /** Writes running at once; items arriving meanwhile wait for the next one. */
  maxInFlight: number
  /**
   * Whether a failed write should be retried item by item (one bad item, e.g. a value PostgreSQL
   * refuses, must not fail the others); otherwise every item of the write gets its error.
   */
  isolate?: (error: unknown) => boolean
}

/**
 * Turns many single writes into few multi-row ones: items given while earlier writes are running
 * (or in the same tick) go out together in the next write, in order. Idle, an item is written at
 * once; busy, one commit carries many items, so commits (and their NOTIFYs, which serialise every
 * notifying commit on one lock) stop being the limit. `write` returns one output per item, in order.
 */
export function createBatcher<In, Out>(write: (items: In[]) => Promise<Out[]>, options: BatcherOptions): (item: In) => Promise<Out> {
  interface Entry {
    item: In
    resolve: (out: Out) => void
    reject: (error: unknown) => void
  }
  const pending: Entry[] = []
  let inFlight = 0
  let scheduled = false

  const writeOne = (entry: Entry) => write([entry.item]).then(([out]) => entry.resolve(out!), entry.reject)

  function flush() {
    scheduled = false
    while (inFlight < options.maxInFlight && pending.length > 0) {
      const batch = pending.splice(0, options.maxBatch)
      inFlight++
      write(batch.map((entry) => entry.item))
        .then(
          (outs) => batch.forEach((entry, i) => entry.resolve(outs[i]!)),
          (error) => {
            if (batch.length > 1 && options.isolate?.(error)) return Promise.all(batch.map(writeOne))
            for (const entry of batch) entry.reject(error)
          },
        )
        .finally(() => {
          inFlight--
          flush()
        })
    }
  }

  return (item) => new Promise<Out>((resolve, reject) => {
    pending.push({ item, resolve, reject })
    if (!scheduled && inFlight < options.maxInFlight) {
      scheduled = true
      setImmediate(flush) // gather the items given in this same tick
    }
  })
}
