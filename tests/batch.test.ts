import { describe, expect, test } from 'bun:test'
import { createBatcher } from '../db/batch.ts'
import { isDataError } from '../db/client.ts'
import { taskInsert, type NewTask } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant } from './support/fixtures.ts'

describe('createBatcher', () => {
  test('writes alone when idle, and gathers what arrives while a write runs', async () => {
    const writes: number[][] = []
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const write = createBatcher(async (items: number[]) => {
      writes.push(items)
      if (writes.length === 1) await gate
      return items.map((n) => n * 10)
    }, { maxBatch: 3, maxInFlight: 1 })

    const first = write(1)
    await Bun.sleep(1)
    const rest = [2, 3, 4, 5, 6].map(write)
    release()
    expect(await Promise.all([first, ...rest])).toEqual([10, 20, 30, 40, 50, 60])
    expect(writes).toEqual([[1], [2, 3, 4], [5, 6]])
  })

  test('retries a failed write item by item when told to, so one bad item fails alone', async () => {
    const write = createBatcher(async (items: string[]) => {
      if (items.includes('bad')) throw Object.assign(new Error('refused'), { code: '22P05' })
      return items.map((item) => item.toUpperCase())
    }, { maxBatch: 10, maxInFlight: 1, isolate: isDataError })
    const results = await Promise.allSettled(['a', 'bad', 'c'].map(write))
    expect(results.map((r) => r.status === 'fulfilled' ? r.value : (r.reason as Error).message)).toEqual(['A', 'refused', 'C'])
  })

  test('gives every item of a write its error when not told to isolate', async () => {
    const write = createBatcher(async (): Promise<string[]> => {
      throw Object.assign(new Error('connection lost'), { code: 'ECONNRESET' })
    }, { maxBatch: 10, maxInFlight: 1, isolate: isDataError })
    const results = await Promise.allSettled(['a', 'b'].map(write))
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
  })

  test('inserts concurrent tasks with one statement and hands each caller its own row', async () => {
    const tenant = await newTenant()
    const sizes: number[] = []
    const insert = createBatcher(async (tasks: NewTask[]) => {
      sizes.push(tasks.length)
      return taskInsert(testDb().sql, tasks)
    }, { maxBatch: 500, maxInFlight: 1, isolate: isDataError })
    const given = Array.from({ length: 50 }, () => newTask(tenant.id))
    const rows = await Promise.all(given.map(insert))
    expect(rows.map((row) => row.id)).toEqual(given.map((task) => task.id))
    expect(sizes).toEqual([50])
  })
})
