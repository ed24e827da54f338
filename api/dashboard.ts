import { readdirSync, readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { Elysia } from 'elysia'
import { taskTypes } from '../db/catalogue.ts'
import type { AppDeps } from './deps.ts'
import { notFound } from './problem.ts'

const folder = join(import.meta.dir, 'dashboard')

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
}

// The page shows task payloads, which are user data: it builds the DOM with textContent only,
// and the policy below also refuses any script or style that does not come from this origin.
const headers = {
  'cache-control': 'no-cache',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}

const hidden = { detail: { hide: true } }

/**
 * The dashboard at GET /: plain files from api/dashboard/ (read once, when the app is built), and
 * the page's settings at /dashboard/config.json. The page itself needs no key; it asks for one.
 */
export function dashboardRoutes({ traceUrl }: Pick<AppDeps, 'traceUrl'>) {
  const files = new Map(readdirSync(folder)
    .filter((name) => Object.hasOwn(contentTypes, extname(name)))
    .map((name) => [name, readFileSync(join(folder, name), 'utf8')]))
  const config = JSON.stringify({ traceUrl: traceUrl ?? null, taskTypes })

  const serve = (name: string) => {
    const body = files.get(name)
    if (body === undefined) throw notFound(`no dashboard file ${name}`)
    return new Response(body, { headers: { ...headers, 'content-type': contentTypes[extname(name)]! } })
  }

  return new Elysia()
    .get('/', () => serve('index.html'), hidden)
    .get('/dashboard/config.json', () =>
      new Response(config, { headers: { ...headers, 'content-type': 'application/json' } }), hidden)
    .get('/dashboard/:file', ({ params: { file } }) => serve(file), hidden)
}
