import * as v from 'valibot'
import { createSql } from '../db/client.ts'
import { env, parseEnv } from '../db/env.ts'
import { migrate } from '../db/migrate.ts'

const { DATABASE_URL } = parseEnv(v.object({ DATABASE_URL: env.databaseUrl }))
const sql = createSql(DATABASE_URL, { max: 1, applicationName: 'taskcast-migrate', statementTimeoutMs: 0 })
try {
  const applied = await migrate(sql)
  console.log(applied.length ? `applied ${applied.map((m) => m.name).join(', ')}` : 'the database is up to date')
} catch (error) {
  console.error(`migration failed: ${(error as Error).message}`)
  process.exitCode = 1
} finally {
  await sql.end()
}
