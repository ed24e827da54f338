/** How often the deadlines of running attempts are checked: a timeout fires up to this late. */
const checkEveryMs = 50

interface Deadline {
  at: number
  fire: () => void
}

const deadlines = new Set<Deadline>()
let ticker: ReturnType<typeof setInterval> | undefined

function check() {
  const now = performance.now()
  for (const deadline of deadlines) {
    if (deadline.at > now) continue
    deadlines.delete(deadline)
    deadline.fire()
  }
  if (deadlines.size === 0) stopTicker()
}

function stopTicker() {
  clearInterval(ticker)
  ticker = undefined
}

/**
 * Calls `fire` after `ms`, unless the returned function is called first. Every attempt of a
 * process is watched by one timer, which runs while any is: a timer of its own for each attempt
 * cost a worker ~4 % of its CPU in a drain of quick tasks.
 */
export function afterDeadline(ms: number, fire: () => void): () => void {
  const deadline: Deadline = { at: performance.now() + ms, fire }
  deadlines.add(deadline)
  ticker ??= setInterval(check, checkEveryMs)
  return () => {
    deadlines.delete(deadline)
    if (deadlines.size === 0) stopTicker()
  }
}
