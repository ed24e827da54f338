import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { createSql, type Sql } from '../../db/client.ts'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../db/embedded-postgres.ts'
import { migrate } from '../../db/migrate.ts'

export interface TestDatabase {
  /** A freshly migrated database of its own for this test run. */
  url: string
  sql: Sql
  /** The server's admin URL (database `postgres`), for creating more databases. */
  adminUrl: string
}

let current: TestDatabase | undefined
let embedded: { server: EmbeddedPostgres; dataDir: string } | undefined

export function testDb(): TestDatabase {
  if (!current) throw new Error('the test database is not set up (tests/setup.ts is the bun test preload)')
  return current
}

const withDatabase = (url: string, name: string) => {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

/**
 * With DATABASE_URL, a new database on that server; without it, a throwaway embedded cluster
 * (fsync off: nothing in it needs to survive a crash of the machine).
 */
export async function setupTestDatabase(): Promise<TestDatabase> {
  let adminUrl = process.env.DATABASE_URL
  if (!adminUrl) {
    const dataDir = join(tmpdir(), `taskcast-test-${process.pid}-${Date.now()}`)
    const server = await startEmbeddedPostgres({
      dataDir,
      password: 'taskcast-test',
      settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '300' },
    })
    embedded = { server, dataDir }
    adminUrl = server.url('postgres')
  }
  const name = `taskcast_test_${process.pid}_${Date.now().toString(36)}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin`create database ${admin(name)}`
  await admin.end()
  const url = withDatabase(adminUrl, name)
  const sql = createSql(url, { max: 20, applicationName: 'taskcast-test' })
  await migrate(sql)
  current = { url, sql, adminUrl }
  return current
}

export async function teardownTestDatabase(): Promise<void> {
  if (!current) return
  const { sql, url, adminUrl } = current
  current = undefined
  await sql.end({ timeout: 5 })
  if (embedded) {
    await embedded.server.stop()
    rmSync(embedded.dataDir, { recursive: true, force: true })
    return
  }
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin`drop database if exists ${admin(new URL(url).pathname.slice(1))} with (force)`
  await admin.end()
}

/** Runs `fn` with the URL of a new, empty database on the test server, dropped afterwards. */
export async function withFreshDatabase<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const { adminUrl } = testDb()
  const name = `taskcast_empty_${crypto.randomUUID().slice(0, 8)}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin`create database ${admin(name)}`
  try {
    return await fn(withDatabase(adminUrl, name))
  } finally {
    await admin`drop database ${admin(name)} with (force)`
    await admin.end()
  }
}
