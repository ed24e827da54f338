/**
 * Calls `handler` on SIGINT and SIGTERM with how many times a stop has been asked for (1, then 2
 * for "stop now"). A repeat within `windowMs` counts once: under `bun run`, one Ctrl-C arrives
 * twice, from the terminal's process group and again forwarded by the script runner.
 */
export function onStopSignal(handler: (signal: NodeJS.Signals, count: number) => void, windowMs = 1000): void {
  let count = 0
  let last = Number.NEGATIVE_INFINITY
  const listener = (signal: NodeJS.Signals) => {
    const now = performance.now()
    if (now - last < windowMs) return
    last = now
    handler(signal, ++count)
  }
  process.on('SIGINT', listener)
  process.on('SIGTERM', listener)
}

/**
 * Runs every step of a shutdown in order, even when an earlier one fails (each failure is
 * reported), and resolves with the exit code: 0 when all succeeded.
 */
export async function stopInOrder(steps: Array<() => unknown>, report: (error: unknown) => void): Promise<number> {
  let failed = 0
  for (const step of steps) {
    try {
      await step()
    } catch (error) {
      failed++
      report(error)
    }
  }
  return failed ? 1 : 0
}
