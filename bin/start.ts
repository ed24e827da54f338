/**
 * The first run: `bun run start`. With no DATABASE_URL it starts a private PostgreSQL (data kept in
 * .taskcast/), migrates, creates a dev API key once, and runs the API and one worker as separate
 * processes. Ctrl-C stops the API and the worker gracefully, then PostgreSQL.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import postgres from 'postgres'
import { apiKeyCreate, apiKeyTenant, tenantEnsure } from '../db/api-keys.ts'
import { createSql } from '../db/client.ts'
import { freePort, startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded-postgres.ts'
import { migrate } from '../db/migrate.ts'
import { serviceRuntimeEnv } from '../lifecycle/runtime.ts'
import { onStopSignal } from '../lifecycle/signals.ts'

const root = resolve(import.meta.dir, '..')
const home = resolve(process.env.TASKCAST_HOME ?? join(root, '.taskcast'))
mkdirSync(home, { recursive: true })
const say = (line = '') => console.log(line)

/** A secret kept in .taskcast/, made on the first run and reused after. */
function keptSecret(name: string, make: () => string): string {
  const file = join(home, name)
  if (existsSync(file)) return readFileSync(file, 'utf8').trim()
  const value = make()
  writeFileSync(file, `${value}\n`, { mode: 0o600 })
  return value
}

async function portIsFree(port: number): Promise<boolean> {
  try {
    Bun.serve({ port, hostname: '0.0.0.0', fetch: () => new Response() }).stop(true)
    return true
  } catch {
    return false
  }
}

let database: EmbeddedPostgres | undefined
let databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) {
  database = await startEmbeddedPostgres({
    dataDir: join(home, 'pg'),
    password: keptSecret('pg-password', () => randomBytes(18).toString('base64url')),
  })
  const admin = postgres(database.url('postgres'), { max: 1, onnotice: () => {} })
  const [exists] = await admin`select 1 from pg_database where datname = 'taskcast'`
  if (!exists) await admin`create database taskcast`
  await admin.end()
  databaseUrl = database.url('taskcast')
}

const sql = createSql(databaseUrl, { max: 1, applicationName: 'taskcast-start', statementTimeoutMs: 0 })
await migrate(sql)
// The dev key is kept in plain text in .taskcast/ so every run prints the same one; a kept key
// that this database does not know (DATABASE_URL changed) is replaced.
const keyFile = join(home, 'dev-api-key')
let apiKey = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() : ''
if (!apiKey || !(await apiKeyTenant(sql, apiKey))) {
  apiKey = await apiKeyCreate(sql, (await tenantEnsure(sql, 'dev')).id)
  writeFileSync(keyFile, `${apiKey}\n`, { mode: 0o600 })
}
await sql.end()

const wantedPort = Number(process.env.PORT ?? 3000)
const port = (await portIsFree(wantedPort)) ? wantedPort : await freePort()
const env = {
  ...process.env,
  ...serviceRuntimeEnv,
  DATABASE_URL: databaseUrl,
  PORT: String(port),
  TASKCAST_STREAM_SECRET: process.env.TASKCAST_STREAM_SECRET ?? keptSecret('stream-secret', () => randomBytes(32).toString('hex')),
}
const children = [
  Bun.spawn([process.execPath, join(root, 'api/main.ts')], { env, stdout: 'inherit', stderr: 'inherit' }),
  Bun.spawn([process.execPath, join(root, 'worker/main.ts')], { env, stdout: 'inherit', stderr: 'inherit' }),
]

let stopping = false
async function stop(code: number) {
  stopping = true
  await Promise.all(children.map((child) => child.exited))
  await database?.stop()
  say(database ? 'Stopped the API, the worker and PostgreSQL.' : 'Stopped the API and the worker.')
  process.exit(code)
}
// The children get Ctrl-C from the terminal too; a repeat within a second counts once for them.
onStopSignal((_signal, count) => {
  for (const child of children) child.kill('SIGTERM')
  if (count === 1) {
    say('\nStopping: running tasks get up to TASKCAST_SHUTDOWN_GRACE_SECONDS (30 s) to finish; Ctrl-C again to stop now.')
    void stop(0)
  }
})
for (const child of children) {
  void child.exited.then((code) => {
    if (stopping) return
    console.error(`A Taskcast process exited unexpectedly (code ${code}); stopping the rest.`)
    for (const other of children) other.kill('SIGTERM')
    void stop(1)
  })
}

const base = `http://localhost:${port}`
for (let ready = false; !ready && !stopping;) {
  ready = await fetch(`${base}/readyz`).then((response) => response.ok, () => false)
  if (!ready) await Bun.sleep(100)
}
if (!stopping) {
  const submit = `curl -s ${base}/v1/tasks -H 'authorization: Bearer ${apiKey}' -H 'content-type: application/json' -d '{"type":"demo.sleep","payload":{"seconds":5,"steps":5}}'`
  say()
  say('Taskcast is running.')
  say(`  API       ${base}`)
  say(`  API key   ${apiKey}   (tenant "dev")`)
  say(`  dashboard ${base}/   (paste the API key)`)
  say(`  database  ${database ? `embedded PostgreSQL on port ${database.port}, data in ${join(home, 'pg')}` : 'DATABASE_URL'}`)
  say()
  say('Submit a task and watch it run live (paste this):')
  say(`  curl -N "${base}$(${submit} | sed -E 's/.*"events":"([^"]+)".*/\\1/')"`)
  say()
  say('Or step by step:')
  say(`  ${submit}`)
  say(`  curl -N ${base}/v1/tasks/TASK_ID/events -H 'authorization: Bearer ${apiKey}'`)
  say()
  say('Ctrl-C stops everything.')
  say()
}
