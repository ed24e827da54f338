import { describe, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import { apiKeyTenant } from '../db/api-keys.ts'
import { readdirSync, readFileSync } from 'node:fs'
import { serviceRuntimeEnv } from '../lifecycle/runtime.ts'
import { spawnChildService } from './support/child-service.ts'
import { testDb, withFreshDatabase } from './support/database.ts'
import { streamSecret, uniqueName } from './support/fixtures.ts'

const root = resolve(import.meta.dir, '..')

async function run(args: string[], env: Record<string, string | undefined>) {
  const proc = Bun.spawn(['bun', 'run', ...args], { cwd: root, env: { ...process.env, ...env }, stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { stdout, stderr, code }
}

describe('bun run migrate', () => {
  test('applies the migrations to an empty database, then finds nothing to do', async () => {
    await withFreshDatabase(async (url) => {
      const first = await run(['migrate'], { DATABASE_URL: url })
      expect(first).toMatchObject({ code: 0, stdout: expect.stringContaining('applied 0001_init') })
      const second = await run(['migrate'], { DATABASE_URL: url })
      expect(second).toMatchObject({ code: 0, stdout: expect.stringContaining('up to date') })
    })
  })

  test('says what is missing when DATABASE_URL is not set', async () => {
    const result = await run(['migrate'], { DATABASE_URL: '' })
    expect(result.code).not.toBe(0)
    expect(result.stderr).toContain('DATABASE_URL')
  })
})

describe('bun run keys create', () => {
  test('prints a new key once, which authenticates its tenant, and stores only its hash', async () => {
    const tenant = uniqueName('cli')
    const result = await run(['keys', 'create', '--tenant', tenant], { DATABASE_URL: testDb().url })
    expect(result.code).toBe(0)
    const key = result.stdout.trim()
    expect(key).toMatch(/^tc_[A-Za-z0-9_-]{43}$/)
    expect(await apiKeyTenant(testDb().sql, key)).toMatchObject({ name: tenant })
    const stored = await testDb().sql`select * from taskcast.api_keys k join taskcast.tenants t on t.id = k.tenant_id where t.name = ${tenant}`
    expect(JSON.stringify(stored)).not.toContain(key.slice(3))
  })

  test('without a tenant, prints its usage and exits 2', async () => {
    const result = await run(['keys', 'create'], { DATABASE_URL: testDb().url })
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('usage: bun run keys create --tenant NAME')
  })
})

/** The process whose command runs `entry` and whose environment holds `marker` (NAME=value): its pid and environment. */
function processWith(entry: string, marker: string): { pid: number; env: Record<string, string> } | undefined {
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(entry)) continue
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
      if (!environ.includes(marker)) continue
      const pairs = environ.filter(Boolean).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)])
      return { pid: Number(pid), env: Object.fromEntries(pairs) }
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

describe('bun run api and bun run worker', () => {
  test('start their process with the runtime options (JavaScriptCore\'s FTL tier off, a longer allocator purge delay)', async () => {
    const services = [
      { script: 'api', ready: 'listening', env: { PORT: '0', HOST: '127.0.0.1', TASKCAST_STREAM_SECRET: streamSecret } },
      { script: 'worker', ready: 'worker started', env: { WORKER_QUEUES: uniqueName('q') } },
    ]
    for (const { script, ready, env } of services) {
      const mark = crypto.randomUUID()
      const service = spawnChildService(script, ['bun', 'run', script], {
        cwd: root,
        env: { ...process.env, DATABASE_URL: testDb().url, LOG_LEVEL: 'info', TASKCAST_TEST_MARK: mark, ...env },
      })
      try {
        await service.waitForLog((line) => line.message === ready)
        const found = processWith(`${script}/main.ts`, `TASKCAST_TEST_MARK=${mark}`)
        const runtime = Object.fromEntries(Object.keys(serviceRuntimeEnv).map((name) => [name, found?.env[name]]))
        expect(runtime).toEqual(serviceRuntimeEnv)
        if (found) process.kill(found.pid, 'SIGTERM')
      } finally {
        await service.stop('SIGTERM', 10_000)
      }
    }
  })
})
