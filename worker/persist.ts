import { isConnectionError } from '../db/client.ts'
import type { Logger } from '../observability/log.ts'

const firstDelayMs = 100
const maxDelayMs = 5000

/**
 * Runs a write, retrying it through connection failures (the database restarting, the network
 * down) with capped exponential backoff and jitter until it lands; any other error is thrown.
 * Writes are fenced by the lease, so one that lands late after another worker took the task
 * over is refused, not applied twice.
 */
export async function persist<T>(write: () => Promise<T>, log: () => Logger, what: string): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await write()
    } catch (error) {
      if (!isConnectionError(error)) throw error
      const delay = Math.min(maxDelayMs, firstDelayMs * 2 ** attempt) * (0.5 + Math.random() / 2)
      if (attempt === 0 || attempt % 10 === 0) log().warn({ err: error, attempt, retryInMs: Math.round(delay) }, `${what}: database unreachable; retrying`)
      await Bun.sleep(delay)
    }
  }
}
