import type { Handler } from '../handler.ts'
import { sleep } from '../handler.ts'

/** This process's clock in epoch milliseconds, to a fraction of a millisecond. */
export const preciseNow = () => performance.timeOrigin + performance.now()

/**
 * Returns the moment it started; with `reports`, first reports progress that many times,
 * `intervalMs` apart, each message the moment it was made (a client can compute the delay).
 */
export const demoNoop: Handler<'demo.noop'> = async ({ reports, intervalMs }, ctx) => {
  const startedAt = preciseNow()
  for (let report = 1; report <= reports; report++) {
    await sleep(intervalMs, ctx.signal)
    ctx.progress(Math.round((report / reports) * 100), String(preciseNow()))
  }
  return { startedAt }
}
