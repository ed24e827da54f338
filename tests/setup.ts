import { afterAll, beforeAll } from 'bun:test'
import { setupTestDatabase, teardownTestDatabase } from './support/database.ts'

beforeAll(async () => {
  await setupTestDatabase()
}, 60_000)

afterAll(async () => {
  await teardownTestDatabase()
})
