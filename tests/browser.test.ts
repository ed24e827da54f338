import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { freePort } from '../db/embedded-postgres.ts'
import { newTenant, uniqueName } from './support/fixtures.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'

/** The dashboard in headless Chromium, against real api and worker processes. */
const screenshots = resolve(import.meta.dir, '../test-output/browser')
const traceUrl = 'http://traces.example/trace/{traceId}'
const queue = uniqueName('browser')
// Debian's chromium; .ci/run installs it. Never a downloaded browser.
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

let api: Awaited<ReturnType<typeof spawnApi>>
let tenant: Awaited<ReturnType<typeof newTenant>>
let port: number
let browser: Browser
let page: Page
const pageErrors: string[] = []
/** The page's stream-token requests, and the URLs it opened the tenant stream with. */
let tokenRequests = 0
const tenantStreamUrls: URL[] = []

beforeAll(async () => {
  if (!existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath}: apt-get install chromium, or set CHROMIUM_PATH`)
  mkdirSync(screenshots, { recursive: true })
  tenant = await newTenant()
  // The restart test needs the API back on the same port.
  port = await freePort()
  ;[api] = await Promise.all([
    spawnApi({ PORT: String(port), TASKCAST_TRACE_URL: traceUrl }),
    spawnWorker({ WORKER_QUEUES: queue, WORKER_CONCURRENCY: '4' }),
  ])
  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'], headless: true })
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on('pageerror', (error) => pageErrors.push(error.message))
  page.on('request', (request) => {
    const url = new URL(request.url())
    if (url.pathname === '/v1/stream-tokens') tokenRequests++
    if (url.pathname === '/v1/events') tenantStreamUrls.push(url)
  })
  await page.goto(`${api.url}/`)
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await killAll()
})

/** Waits until the task's row says `status` in words. */
function rowStatus(id: string, status: string, timeout = 15_000) {
  return page.waitForFunction(
    ([id, status]) => document.querySelector(`tr[data-task-id="${id}"] .status`)?.textContent === status,
    [id, status] as const,
    { timeout },
  )
}

const connectionState = (state: string, timeout = 15_000) =>
  page.waitForSelector(`#connection[data-state="${state}"]`, { timeout })

/** Fills the demo.sleep form and submits it; resolves with the API's answer. */
async function submitFromForm(seconds: string, steps: string) {
  await page.locator('#submit-type').selectOption('demo.sleep')
  await page.getByLabel('Seconds').fill(seconds)
  await page.getByLabel('Steps').fill(steps)
  await page.getByLabel('Queue (optional)').fill(queue)
  const [response] = await Promise.all([
    page.waitForResponse((response) => new URL(response.url()).pathname === '/v1/tasks' && response.request().method() === 'POST'),
    page.getByRole('button', { name: 'Submit task' }).click(),
  ])
  return { status: response.status(), body: await response.json() as any }
}

async function submitOverHttp(payload: Record<string, unknown>) {
  const response = await postTask(api.url, tenant.auth, { type: 'demo.sleep', payload, queue })
  expect(response.status).toBe(202)
  return (await response.json() as any).id as string
}

describe('dashboard', () => {
  test('GET / serves the page without a key, uncached, with its scripts and settings', async () => {
    const page = await fetch(`${api.url}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toStartWith('text/html')
    expect(page.headers.get('cache-control')).toBe('no-cache')
    expect(await page.text()).toContain('<script type="module" src="/dashboard/app.js">')
    const script = await fetch(`${api.url}/dashboard/app.js`)
    expect(script.headers.get('content-type')).toStartWith('text/javascript')
    const config = await fetch(`${api.url}/dashboard/config.json`).then((response) => response.json())
    expect(config).toMatchObject({ traceUrl, taskTypes: expect.arrayContaining(['demo.sleep', 'demo.primes']) })
    expect((await fetch(`${api.url}/dashboard/missing.js`)).status).toBe(404)
  })

  test('refuses a wrong key, then signs in and goes live', async () => {
    await page.getByLabel('API key').fill('tc_not-a-key')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.locator('#key-error', { hasText: 'Unauthorized' }).waitFor({ timeout: 10_000 })
    await page.getByLabel('API key').fill(tenant.key)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await connectionState('live')
    expect(await page.locator('#connection').textContent()).toBe('live')
  }, 30_000)

  test('shows the field errors of a refused submission next to the form', async () => {
    const refused = await submitFromForm('99999', '5')
    expect(refused.status).toBe(422)
    await page.locator('#submit-error', { hasText: '/payload/seconds' }).waitFor({ timeout: 5000 })
  })

  test('a task submitted from the form moves its progress bar and succeeds, without a reload', async () => {
    await page.evaluate(() => ((window as any).sameDocument = true))
    const submitted = await submitFromForm('1.5', '5')
    expect(submitted.status).toBe(202)
    const id = submitted.body.id
    expect(await page.locator('#submit-error').textContent()).toBe('')
    await page.waitForFunction((id) => {
      const bar = document.querySelector(`tr[data-task-id="${id}"] progress`)
      return bar instanceof HTMLProgressElement && bar.value > 0 && bar.value < 100
    }, id, { timeout: 15_000, polling: 'raf' })
    await rowStatus(id, 'succeeded')
    const row = page.locator(`tr[data-task-id="${id}"]`)
    expect(await row.locator('progress').getAttribute('value')).toBe('100')
    expect(await row.locator('.progress-text').textContent()).toBe('100% step 5/5')
    expect(await page.evaluate(() => (window as any).sameDocument)).toBe(true)
  }, 30_000)

  test('a long task opened from the list is canceled, retried and canceled again from its panel', async () => {
    const { body: task } = await submitFromForm('60', '60')
    await rowStatus(task.id, 'running')
    await page.locator(`tr[data-task-id="${task.id}"]`).click()
    await page.getByRole('heading', { name: `Task ${task.id}` }).waitFor()
    const trace = page.locator('#detail-trace a')
    expect(await trace.textContent()).toMatch(/^[0-9a-f]{32}$/)
    expect(await trace.getAttribute('href')).toBe(`http://traces.example/trace/${task.traceId}`)
    expect(await page.locator('#detail-payload').textContent()).toContain('"seconds": 60')

    await page.getByRole('button', { name: 'Cancel task' }).click()
    await rowStatus(task.id, 'canceled')
    await page.locator('#timeline li[data-status="canceled"]').waitFor({ timeout: 5000 })
    await page.locator('#detail-status', { hasText: /^canceled$/ }).waitFor({ timeout: 5000 })

    // Retry starts a new run; the timeline replays the old one and follows the new one live.
    await page.getByRole('button', { name: 'Retry task' }).click()
    await rowStatus(task.id, 'running')
    await page.locator('#detail-status', { hasText: /^running$/ }).waitFor({ timeout: 10_000 })
    await page.getByRole('button', { name: 'Cancel task' }).click()
    await rowStatus(task.id, 'canceled')
    expect(await page.locator('#timeline li[data-event="status"]').evaluateAll((items) => items.map((item) => item.getAttribute('data-status'))))
      .toEqual(['queued', 'running', 'canceled', 'queued', 'running', 'canceled'])
    await page.screenshot({ path: join(screenshots, 'dashboard.png'), fullPage: true })
  }, 40_000)

  test('at 360 px the page fits the screen width', async () => {
    await page.setViewportSize({ width: 360, height: 780 })
    const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth }))
    expect(widths.page).toBeLessThanOrEqual(widths.screen)
    await page.screenshot({ path: join(screenshots, 'dashboard-phone.png'), fullPage: true })
    await page.setViewportSize({ width: 1280, height: 900 })
  })

  test('after the API restarts with another stream secret, the page reconnects by itself and catches up', async () => {
    await page.getByRole('button', { name: 'Close' }).click()
    // This one finishes while the API is away; the page learns of it after reconnecting.
    const during = await submitOverHttp({ seconds: 2, steps: 2 })
    await page.locator(`tr[data-task-id="${during}"]`).waitFor({ timeout: 10_000 })
    const tokensBefore = tokenRequests
    expect(await api.stop('SIGTERM')).toBe(0)
    await connectionState('reconnecting')
    expect(await page.locator('#connection').textContent()).toBe('reconnecting…')

    // The old stream token no longer verifies: the page must fetch a new one.
    api = await spawnApi({ PORT: String(port), TASKCAST_TRACE_URL: traceUrl, TASKCAST_STREAM_SECRET: 'another-stream-secret-0123456789' })
    await connectionState('live', 30_000)
    expect(tokenRequests).toBeGreaterThan(tokensBefore)
    expect(tenantStreamUrls.at(-1)!.searchParams.get('lastEventId')).toMatch(/^\d+$/)
    await rowStatus(during, 'succeeded')
    const after = await submitOverHttp({ seconds: 0.5, steps: 2 })
    await rowStatus(after, 'succeeded')
    expect(await page.evaluate(() => (window as any).sameDocument)).toBe(true)
    expect(pageErrors).toEqual([])
  }, 60_000)

  test('signing out forgets the key, closes the stream and empties the list', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click()
    await connectionState('offline')
    await page.getByLabel('API key').waitFor()
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0)
    expect(await page.locator('#tasks tbody tr').count()).toBe(0)
  })
})
