import type { Handler } from '../handler.ts'
import { sleep } from '../handler.ts'

/** Sleeps in equal steps, reporting progress after each; throws on its first `failTimes` attempts. */
export const demoSleep: Handler<'demo.sleep'> = async ({ seconds, steps, failTimes }, ctx) => {
  const stepMs = (seconds * 1000) / steps
  for (let step = 1; step <= steps; step++) {
    await sleep(stepMs, ctx.signal)
    if (step === steps && ctx.attempt <= failTimes) {
      throw new Error(`failing on purpose: attempt ${ctx.attempt} of the first ${failTimes}`)
    }
    ctx.progress(Math.round((step / steps) * 100), `step ${step}/${steps}`)
  }
  return { slept: seconds, steps }
}
