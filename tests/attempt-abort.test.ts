import { describe, expect, test } from 'bun:test'
import { afterDeadline } from '../worker/deadlines.ts'
import { AttemptAbort, TaskAbort } from '../worker/run.ts'

describe('stopping an attempt', () => {
  test('a signal asked for before the abort fires with its reason; one asked for after starts aborted', async () => {
    const abort = new AttemptAbort()
    const early = abort.signal
    const fired = new Promise((resolve) => early.addEventListener('abort', () => resolve(early.reason), { once: true }))
    const whenAborted = abort.whenAborted()
    const reason = new TaskAbort('canceled', 'canceled by request')
    abort.abort(reason)
    abort.abort(new TaskAbort('shutdown', 'a later reason does not count'))
    expect(await fired).toBe(reason)
    expect(await whenAborted).toBe('aborted')
    expect(abort.reason).toBe(reason)
    const late = abort.signal
    expect(late.aborted).toBe(true)
    expect(late.reason).toBe(reason)
    expect(await abort.whenAborted()).toBe('aborted')
  })

  test('a deadline fires once its time has passed, and a cleared one never does', async () => {
    const fired: string[] = []
    const started = performance.now()
    const cleared = afterDeadline(20, () => fired.push('cleared'))
    const done = new Promise<number>((resolve) => afterDeadline(40, () => resolve(performance.now() - started)))
    cleared()
    const after = await done
    expect(after).toBeGreaterThanOrEqual(40)
    // A later deadline still fires once the watch stopped for want of deadlines and started again.
    expect(await new Promise((resolve) => afterDeadline(10, () => resolve('again')))).toBe('again')
    expect(fired).toEqual([])
  })
})
