import { join, resolve } from 'node:path'
import { serviceRuntimeEnv } from '../../lifecycle/runtime.ts'
import { spawnChildService, type ChildService } from './child-service.ts'
import { testDb } from './database.ts'
import { streamSecret } from './fixtures.ts'

const root = resolve(import.meta.dir, '../..')

export type Service = ChildService

const running = new Set<Service>()

function spawnService(entry: string, env: Record<string, string>): Service {
  const child = spawnChildService(entry, [process.execPath, join(root, entry)], {
    cwd: root,
    env: { ...process.env, ...serviceRuntimeEnv, DATABASE_URL: testDb().url, LOG_LEVEL: 'info', ...env },
  })
  const service: Service = {
    ...child,
    async stop(signal, killAfterMs) {
      const code = await child.stop(signal, killAfterMs)
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

/** POST /v1/tasks on a real API: one task, as the tenant whose `auth` header is given. */
export function postTask(apiUrl: string, auth: Record<string, string>, task: Record<string, unknown>, headers: Record<string, string> = {}) {
  return fetch(`${apiUrl}/v1/tasks`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(task),
  })
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
