/**
 * How quick this machine is today at what every figure of the bench leans on, which varies from
 * day to day on the same machine kind: touching fresh memory (a page fault), putting a write on
 * disk (fdatasync, which every durable commit waits for) and opening a PostgreSQL connection (a
 * backend process forked and started); and whether the kernel keeps huge pages, which PostgreSQL
 * then takes for its shared memory. On a slow day a 4 KiB page fault took ~12 µs: draining 30,000
 * tasks, a new worker took ~17,000 faults and its PostgreSQL backends ~20,000 (each backend faults
 * in every shared page it first touches), 6–7 % of either side's CPU. With 100 huge pages kept,
 * the backends took ~5,000, PostgreSQL's CPU a task went 100–104 → 79–90 µs and the drain
 * 10,100–10,700 → 10,900–11,900 tasks/s. And a `select 1` round trip, back to back, which every
 * statement pays: it wakes a process on the other core, which costs much here, as an idle vCPU of
 * this VM halts at once (the guest's halt polling is set to 0 ns). It took 165–198 µs on a slow
 * day, 92–102 µs of it the client's CPU; with the kernel's default of 200 µs of polling, 39–49 µs
 * and 37–45. Printed beside the table, these tell a slow day from a slow change.
 */
import { closeSync, fdatasyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { quantile } from './services.ts'

export interface Machine {
  /** One 4 KiB page of fresh memory written for the first time, µs (median of 5 rounds of 16,384). */
  pageFaultUs: number
  /** An 8 KiB write and its fdatasync, µs (median of 200), as pg_test_fsync measures it. */
  fdatasyncUs: number
  /** A new connection to PostgreSQL and its first `select 1`, ms (median of 10). */
  connectMs: number
  /** Huge pages the kernel keeps (HugePages_Total), which PostgreSQL takes for its shared memory when they suffice. */
  hugePages: number
  /** A `select 1` on an open connection, back to back, µs (median of 2,000). */
  roundTripUs: number
  /** How long an idle vCPU polls before it halts, ns (a KVM guest's haltpoll); null where the kernel has no such setting. */
  haltPollNs: number | null
}

function pageFaultUs(): number {
  const bytes = 64 << 20
  const rounds = Array.from({ length: 5 }, () => {
    const started = performance.now()
    const memory = new Uint8Array(bytes) // fresh pages, mapped on first write
    for (let offset = 0; offset < bytes; offset += 4096) memory[offset] = 1
    return ((performance.now() - started) * 1000) / (bytes / 4096)
  })
  return quantile(rounds, 0.5)!
}

/**
 * As pg_test_fsync does it (the same 8 KiB rewritten at the start of a 16 MiB file), in the
 * temporary folder, where the bench's PostgreSQL keeps its data.
 */
function fdatasyncUs(): number {
  const path = join(tmpdir(), `taskcast-bench-fsync-${process.pid}`)
  const block = Buffer.alloc(8192, 1)
  const fd = openSync(path, 'w')
  try {
    for (let offset = 0; offset < 16 << 20; offset += block.length) writeSync(fd, block, 0, block.length, offset)
    fdatasyncSync(fd)
    const times = Array.from({ length: 200 }, (_, i) => {
      const started = performance.now()
      writeSync(fd, block, 0, block.length, 0)
      fdatasyncSync(fd)
      return (performance.now() - started) * 1000
    })
    return quantile(times, 0.5)!
  } finally {
    closeSync(fd)
    rmSync(path, { force: true })
  }
}

async function connectMs(url: string): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < 10; i++) {
    const started = performance.now()
    const sql = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} })
    await sql`select 1`
    times.push(performance.now() - started)
    await sql.end()
  }
  return quantile(times, 0.5)!
}

async function roundTripUs(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} })
  try {
    for (let i = 0; i < 200; i++) await sql`select 1`
    const times: number[] = []
    for (let i = 0; i < 2000; i++) {
      const started = performance.now()
      await sql`select 1`
      times.push((performance.now() - started) * 1000)
    }
    return quantile(times, 0.5)!
  } finally {
    await sql.end()
  }
}

function haltPollNs(): number | null {
  try {
    return Number(readFileSync('/sys/module/haltpoll/parameters/guest_halt_poll_ns', 'utf8'))
  } catch {
    return null
  }
}

const hugePages = () => Number(/^HugePages_Total:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0)

export async function measureMachine(databaseUrl: string): Promise<Machine> {
  return {
    pageFaultUs: pageFaultUs(),
    fdatasyncUs: fdatasyncUs(),
    connectMs: await connectMs(databaseUrl),
    hugePages: hugePages(),
    roundTripUs: await roundTripUs(databaseUrl),
    haltPollNs: haltPollNs(),
  }
}

export const describeMachine = (m: Machine) =>
  `a 4 KiB page fault ${m.pageFaultUs.toFixed(1)} µs, an 8 KiB write and fdatasync ${Math.round(m.fdatasyncUs)} µs, ` +
  `a new PostgreSQL connection ${m.connectMs.toFixed(1)} ms, a select 1 round trip ${Math.round(m.roundTripUs)} µs, ` +
  `${m.hugePages} huge pages kept` +
  (m.haltPollNs === null ? '' : `, idle vCPUs poll ${Math.round(m.haltPollNs / 1000)} µs before they halt`)
