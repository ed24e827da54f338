import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freePort } from '../db/embedded-postgres.ts'

const root = resolve(import.meta.dir, '..')
// mkdtemp makes a private (0700) folder: as root, PostgreSQL's own user cannot enter it, and
// start keeps the cluster in a stand-in folder that .taskcast/pg links to.
const home = mkdtempSync(join(tmpdir(), 'taskcast-start-'))
afterAll(() => {
  if (existsSync(join(home, 'pg'))) rmSync(realpathSync(join(home, 'pg')), { recursive: true, force: true })
  rmSync(home, { recursive: true, force: true })
})

/**
 * `bun run start` as a newcomer runs it in a terminal: its own process group with no
 * DATABASE_URL, and Ctrl-C delivered to the whole group.
 */
async function firstRun(port: number) {
  const proc = Bun.spawn(['setsid', 'bun', 'run', 'start'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: '', TASKCAST_HOME: home, PORT: String(port) },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader()
  let output = ''
  while (!output.includes('Ctrl-C stops everything')) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`start exited early:\n${output}\n${await new Response(proc.stderr).text()}`)
    output += value
  }
  return {
    output,
    line: (prefix: string) => output.split('\n').map((line) => line.trim()).find((line) => line.startsWith(prefix)) ?? '',
    /** Ctrl-C: SIGINT to the process group, as a terminal sends it. */
    async interrupt() {
      process.kill(-proc.pid, 'SIGINT')
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        output += value
      }
      return { code: await proc.exited, output }
    },
  }
}

const postmasterRunning = () => existsSync(join(home, 'pg', 'postmaster.pid'))

describe('bun run start', () => {
  test('starts everything on an embedded PostgreSQL, prints a curl that works, stops cleanly and reuses its data', async () => {
    const port = await freePort()
    const first = await firstRun(port)
    const key = first.line('API key').split(/\s+/)[2]!
    expect(key).toMatch(/^tc_/)
    // start moves to another port if this one was taken meanwhile: follow what it prints.
    const base = (run: { line(prefix: string): string }) => run.line('API   ').split(/\s+/)[1]!
    expect(base(first)).toMatch(/^http:\/\/localhost:\d+$/)
    expect(postmasterRunning()).toBe(true)

    // Paste the printed one-liner into a shell.
    const pasted = Bun.spawnSync(['bash', '-c', first.line('curl -N "')], { timeout: 30_000 })
    const stream = pasted.stdout.toString()
    expect(stream).toStartWith('retry: 2000')
    expect(stream).toContain('event: progress')
    expect(stream).toContain('"status":"succeeded"')
    const taskId = /"taskId":"([^"]+)"/.exec(stream)![1]!

    const stopped = await first.interrupt()
    expect(stopped.code).toBe(0)
    expect(stopped.output).toContain('Stopped the API, the worker and PostgreSQL.')
    expect(postmasterRunning()).toBe(false)

    const second = await firstRun(port)
    expect(second.line('API key').split(/\s+/)[2]).toBe(key)
    const task = await (await fetch(`${base(second)}/v1/tasks/${taskId}`, { headers: { authorization: `Bearer ${key}` } })).json() as any
    expect(task).toMatchObject({ id: taskId, status: 'succeeded' })
    expect((await second.interrupt()).code).toBe(0)
    expect(postmasterRunning()).toBe(false)
  }, 90_000)
})
