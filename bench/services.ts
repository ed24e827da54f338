import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { serviceRuntimeEnv } from '../lifecycle/runtime.ts'
import { spawnChildService, type ChildService } from '../tests/support/child-service.ts'

export const root = resolve(import.meta.dir, '..')

/** This process's clock in epoch milliseconds, to a fraction of a millisecond (as demo.noop reports). */
export const preciseNow = () => performance.timeOrigin + performance.now()

/** The q-quantile (0..1) of some numbers, or null when there are none. */
export function quantile(values: number[], q: number): number | null {
  if (values.length === 0) return null
  const sorted = values.toSorted((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

/** Resident memory of a process in MiB (VmRSS), or its peak (VmHWM). */
export function rssMiB(pid: number, peak = false): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = new RegExp(`^${peak ? 'VmHWM' : 'VmRSS'}:\\s+(\\d+)`, 'm').exec(status)?.[1]
    return kb ? Number(kb) / 1024 : null
  } catch {
    return null
  }
}

export type Service = ChildService

/** Runs a Bun script of this repository, reading its JSON log lines; its warnings go to stderr. */
export function spawnBun(entry: string, env: Record<string, string>, args: string[] = []): Service {
  // BENCH_PROFILE=api (or worker): that service writes a CPU profile (markdown) to /tmp/taskcast-profile.
  const profile = process.env.BENCH_PROFILE && entry.startsWith(process.env.BENCH_PROFILE)
    ? ['--cpu-prof-md', '--cpu-prof-dir=/tmp/taskcast-profile']
    : []
  const child = spawnChildService(entry, [process.execPath, ...profile, join(root, entry), ...args], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    onLine(line) {
      if (typeof line.level === 'string' && ['warn', 'error', 'fatal'].includes(line.level)) {
        process.stderr.write(`${entry}: ${line.level}: ${String(line.message)}${line.err ? ` (${JSON.stringify(line.err).slice(0, 300)})` : ''}\n`)
      }
    },
  })
  return { ...child, stop: (signal = 'SIGTERM', killAfterMs = 10_000) => child.stop(signal, killAfterMs) }
}

/** The API on a free port, ready (migrations current, LISTEN up). Logs at warn and above only. */
export async function startApi(databaseUrl: string, env: Record<string, string> = {}) {
  const service = spawnBun('api/main.ts', {
    ...serviceRuntimeEnv,
    DATABASE_URL: databaseUrl,
    PORT: '0',
    HOST: '127.0.0.1',
    TASKCAST_STREAM_SECRET: 'bench-stream-secret-0123456789abcdef',
    ...env,
    LOG_LEVEL: 'info', // the port comes in the "listening" line; nothing per request is logged at info
  })
  const listening = await service.waitForLog((line) => line.message === 'listening', 30_000)
  const url = `http://127.0.0.1:${listening.port}`
  for (let ready = false; !ready; await Bun.sleep(20)) {
    ready = await fetch(`${url}/readyz`).then((response) => response.ok, () => false)
  }
  return { ...service, url }
}

export async function startWorker(databaseUrl: string, queue: string, env: Record<string, string> = {}) {
  const service = spawnBun('worker/main.ts', {
    ...serviceRuntimeEnv,
    DATABASE_URL: databaseUrl,
    WORKER_QUEUES: queue,
    WORKER_CONCURRENCY: '16',
    ...env,
    LOG_LEVEL: 'info',
  })
  await service.waitForLog((line) => line.message === 'worker started', 30_000)
  return service
}

/** Runs a bench client script to its end and parses the one JSON line it prints last. */
export async function runClient<T>(entry: string, args: Record<string, unknown>): Promise<T> {
  const proc = Bun.spawn([process.execPath, join(root, entry), JSON.stringify(args)], {
    cwd: root,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'inherit',
  })
  const [text, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  if (code !== 0) throw new Error(`${entry} exited with ${code}`)
  return JSON.parse(text.trim().split('\n').at(-1)!) as T
}
