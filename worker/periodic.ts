/**
 * Runs `job` every `intervalMs` once started, and whenever `run()` is called, never twice at once:
 * a call while it runs gets the run in flight. stop() ends the timer and waits for that run, so
 * no run outlives the pool it uses.
 */
export function periodic(job: () => Promise<void>, intervalMs: number) {
  let timer: ReturnType<typeof setInterval> | undefined
  let current: Promise<void> | undefined

  function run(): Promise<void> {
    current ??= job().finally(() => {
      current = undefined
    })
    return current
  }

  return {
    start() {
      timer = setInterval(() => void run(), intervalMs)
    },
    async stop() {
      clearInterval(timer)
      await current
    },
    run,
  }
}
