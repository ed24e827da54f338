import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Sql } from './client.ts'

const migrationsDir = join(import.meta.dir, 'migrations')
// Any constant works; it only has to be the same for every process that migrates this database.
const migrateLockKey = 0x7461736b // "task"

export interface Migration {
  version: number
  name: string
  sql: string
  checksum: string
}

/** The numbered files in db/migrations, in order: 0001_init.sql, 0002_….sql, … */
export function readMigrations(dir = migrationsDir): Migration[] {
  return readdirSync(dir)
    .filter((file) => /^\d{4}_[a-z0-9_]+\.sql$/.test(file))
    .sort()
    .map((file) => {
      const sql = readFileSync(join(dir, file), 'utf8')
      return {
        version: Number(file.slice(0, 4)),
        name: file.replace(/\.sql$/, ''),
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
      }
    })
}

export const latestVersion = (migrations = readMigrations()) => migrations.at(-1)?.version ?? 0

/**
 * Applies pending migrations in one transaction that first takes a transaction-level advisory
 * lock, so concurrent callers (several workers starting at once) apply each file exactly once and
 * a failure leaves nothing half-applied. An applied file whose content changed is an error:
 * migrations are forward-only.
 */
export async function migrate(sql: Sql, migrations = readMigrations()): Promise<Migration[]> {
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${migrateLockKey})`
    await tx`create schema if not exists taskcast`
    await tx`
      create table if not exists taskcast.migrations (
        version    integer primary key,
        name       text not null,
        checksum   text not null,
        applied_at timestamptz not null default now()
      )`
    const applied = new Map(
      (await tx<{ version: number; checksum: string }[]>`select version, checksum from taskcast.migrations`)
        .map((row) => [row.version, row.checksum]),
    )
    const pending: Migration[] = []
    for (const migration of migrations) {
      const checksum = applied.get(migration.version)
      if (checksum === undefined) pending.push(migration)
      else if (checksum !== migration.checksum) {
        throw new Error(`migration ${migration.name} was changed after it was applied; add a new migration instead`)
      }
    }
    for (const migration of pending) {
      // unsafe: a migration file is trusted, static, multi-statement SQL with no parameters.
      await tx.unsafe(migration.sql)
      await tx`insert into taskcast.migrations (version, name, checksum)
               values (${migration.version}, ${migration.name}, ${migration.checksum})`
    }
    return pending
  })
}

/** The highest applied version, or 0 on an empty database. */
export async function migrationsApplied(sql: Sql): Promise<number> {
  const [table] = await sql<{ exists: boolean }[]>`select to_regclass('taskcast.migrations') is not null as exists`
  if (!table?.exists) return 0
  const [row] = await sql<{ version: number | null }[]>`select max(version) as version from taskcast.migrations`
  return row?.version ?? 0
}
