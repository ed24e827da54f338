import type { Handler } from '../handler.ts'

const segmentSize = 1 << 20

/** Base primes up to √limit, by a plain sieve of Eratosthenes. */
function smallPrimes(limit: number): number[] {
  const composite = new Uint8Array(limit + 1)
  const primes: number[] = []
  for (let n = 2; n <= limit; n++) {
    if (composite[n]) continue
    primes.push(n)
    for (let multiple = n * n; multiple <= limit; multiple += n) composite[multiple] = 1
  }
  return primes
}

/**
 * Counts the primes up to `limit` with a segmented sieve: CPU-bound, in 1 Mi-number segments. It
 * reports progress and yields to the event loop after each, so the worker's other tasks, its
 * progress writes and a cancel still get through.
 */
export const demoPrimes: Handler<'demo.primes'> = async ({ limit }, ctx) => {
  const base = smallPrimes(Math.floor(Math.sqrt(limit)))
  const segment = new Uint8Array(segmentSize)
  let count = 0
  let largest = 0
  for (let low = 2; low <= limit; low += segmentSize) {
    ctx.signal.throwIfAborted()
    const high = Math.min(low + segmentSize - 1, limit)
    segment.fill(0)
    for (const p of base) {
      if (p * p > high) break
      for (let multiple = Math.max(p * p, Math.ceil(low / p) * p); multiple <= high; multiple += p) segment[multiple - low] = 1
    }
    for (let n = low; n <= high; n++) {
      if (!segment[n - low]) {
        count++
        largest = n
      }
    }
    ctx.progress(Math.floor(((high - 1) / (limit - 1)) * 100), `sieved up to ${high}`)
    await new Promise((resolve) => setImmediate(resolve))
  }
  return { limit, count, largest }
}
