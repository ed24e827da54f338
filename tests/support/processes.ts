import { join, resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { testDb } from './database.ts'
import { streamSecret } from './fixtures.ts'

const root = resolve(import.meta.dir, '../..')

export interface Service {
  proc: Subprocess<'ignore', 'pipe', 'inherit'>
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  /** Sends a signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>
}

const running = new Set<Service>()

function spawnService(entry: string, env: Record<string, string>): Service {
  const proc = Bun.spawn([process.execPath, join(root, entry)], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: testDb().url, LOG_LEVEL: 'info', ...env },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'inherit',
  })
  const logs: Array<Record<string, unknown>> = []
  const waiters = new Set<{ match: (line: Record<string, unknown>) => boolean; resolve: (line: Record<string, unknown>) => void }>()
  void (async () => {
    let buffer = ''
    for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk
      let newline: number
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const text = buffer.slice(0, newline)
        buffer = buffer.slice(newline + 1)
        let line: Record<string, unknown>
        try {
          line = JSON.parse(text)
        } catch {
          line = { message: text }
        }
        logs.push(line)
        for (const waiter of waiters) if (waiter.match(line)) (waiters.delete(waiter), waiter.resolve(line))
      }
    }
  })()
  const service: Service = {
    proc,
    logs,
    waitForLog(match, timeoutMs = 15_000) {
      const seen = logs.find(match)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolvePromise, reject) => {
        const waiter = { match, resolve: resolvePromise }
        waiters.add(waiter)
        setTimeout(() => {
          if (waiters.delete(waiter)) reject(new Error(`${entry}: no matching log line within ${timeoutMs} ms`))
        }, timeoutMs)
        void proc.exited.then((code) => {
          if (waiters.delete(waiter)) reject(new Error(`${entry} exited (${code}) before the expected log line`))
        })
      })
    },
    async stop(signal = 'SIGTERM') {
      proc.kill(signal)
      const code = await proc.exited
      running.delete(service)
      return code
    },
  }
  running.add(service)
  return service
}

/** A real API process on a free port; resolves once it is ready. */
export async function spawnApi(env: Record<string, string> = {}) {
  const service = spawnService('api/main.ts', {
    PORT: '0',
    HOST: '127.0.0.1',
    TASKCAST_STREAM_SECRET: streamSecret,
    ...env,
  })
  const listening = await service.waitForLog((line) => line.message === 'listening')
  const url = `http://127.0.0.1:${listening.port}`
  for (let ready = false; !ready;) {
    ready = await fetch(`${url}/readyz`).then((response) => response.ok, () => false)
    if (!ready) await Bun.sleep(20)
  }
  return { ...service, url }
}

/** A real worker process; resolves once it is listening for work. */
export async function spawnWorker(env: Record<string, string> = {}) {
  const service = spawnService('worker/main.ts', env)
  await service.waitForLog((line) => line.message === 'worker started')
  return service
}

/** Kills whatever a failed test left running. */
export async function killAll() {
  await Promise.all([...running].map((service) => service.stop('SIGKILL')))
}
