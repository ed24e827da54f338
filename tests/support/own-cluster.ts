import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { createSql } from '../../db/client.ts'
import { freePort, startEmbeddedPostgres, type EmbeddedPostgres } from '../../db/embedded-postgres.ts'
import { migrate } from '../../db/migrate.ts'

/** A PostgreSQL cluster of one test file's own, for tests that stop or crash it. */
export interface OwnCluster {
  /** Its migrated database `taskcast`. */
  readonly url: string
  /** The server running now, or last. */
  readonly server: EmbeddedPostgres
  /** Starts the server again on the same files and port, after a stop or a crash. */
  restart(): Promise<void>
  /** Stops the server if it runs, and deletes its files. */
  remove(): Promise<void>
}

export async function startOwnCluster(name: string, settings: Record<string, string>): Promise<OwnCluster> {
  const dataDir = join(tmpdir(), `taskcast-${name}-${process.pid}-${Date.now()}`)
  const port = await freePort()
  const start = () => startEmbeddedPostgres({ dataDir, password: `${name}-test`, port, settings })
  let server = await start()
  const admin = postgres(server.url('postgres'), { max: 1, onnotice: () => {} })
  await admin`create database taskcast`
  await admin.end()
  const url = server.url('taskcast')
  const sql = createSql(url, { max: 1, applicationName: 'taskcast-test' })
  await migrate(sql)
  await sql.end()
  return {
    url,
    get server() {
      return server
    },
    async restart() {
      server = await start()
    },
    async remove() {
      await server.stop().catch(() => {})
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}
