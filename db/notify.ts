import { createBatcher } from './batch.ts'
import { advisoryKeysHeldHere, Channel, createSql, isConnectionError, type Queryable, type Sql } from './client.ts'

export interface Notice {
  channel: string
  payload: string
}

export interface Notifier {
  /** Queues NOTIFYs for changes that have committed; they go out within a statement or two. */
  send(notices: Notice[]): void
  end(): Promise<void>
}

interface Log {
  warn(fields: object, message: string): void
}

/**
 * The task-event channel is heard only where API processes have streams open, and task-event
 * notices go out only while one says it listens: its LISTEN is announced by shared advisory locks
 * (listenLock) held beside it. Unheard, each notice still cost a place in the database-wide
 * notification queue, its share of the commit's NOTIFY lock, and a wake-up of every listening
 * connection of the database: drains of 20,000 with no API listening took 7 % less CPU without
 * them (196 µs a task against 212, all processes, five alternated pairs).
 *
 * No notice is lost by it. A writer looks at one of the locks (`unheard`) in the transaction
 * whose changes the notices would announce, by taking it exclusively until that commit. Taken, no
 * one announced a LISTEN then, and a listener that announces one later waits for that commit
 * before it reads what it missed (listeners re-read once they announce): the notices are left out,
 * and their statement too. Not taken (held by a listener, or by another writer that moment), they
 * go out, and the notifier looks again, the same way, in the statement that sends them. NOTIFYs
 * made inside a statement (new tasks, progress) go with its commit, as before. Looked at by the
 * notifier alone, the notices were still built and sent to be dropped: drains of 10,000 ran at
 * 8,019 tasks/s instead of 6,847 (five alternated pairs) once the writers looked themselves.
 */
export const announcedChannel = Channel.taskEvent
/**
 * The locks' keys, as pg_locks shows them (classid, objid 1 to `keys`): apart from the workers'
 * (0x7a5c). A listener holds them all, shared; a writer takes the one its backend's pid picks, so
 * that writers running at once seldom take the same one and send notices for nothing.
 */
export const listenLock = { class: 0x7a5d, keys: 64 }

/**
 * True when no listener announces a LISTEN; the lock that says so is then held until this
 * transaction ends, so that a listener announcing meanwhile waits for its commit.
 */
export const unheard = (sql: Queryable) =>
  sql`pg_try_advisory_xact_lock(${listenLock.class}, 1 + pg_backend_pid() % ${listenLock.keys})`

/**
 * Says that this connection listens to the announced channel, unless it already does (its
 * connection may have been replaced since); true when it says so now. Waits while writers look.
 */
export async function listenAnnounce(sql: Sql): Promise<boolean> {
  const [{ taken }] = await sql<[{ taken: number }]>`
    select count(pg_advisory_lock_shared(${listenLock.class}, key))::int as taken
    from generate_series(1, ${listenLock.keys}) key
    where key::oid <> all(${advisoryKeysHeldHere(sql, listenLock.class)})`
  return taken > 0
}

/** Takes back what listenAnnounce said (the locks also end with the connection, which holds no other). */
export async function listenUnannounce(sql: Sql): Promise<void> {
  await sql`select pg_advisory_unlock_all()`
}

const retries = 5
const separators = /[\x1e\x1f]/
const hasSeparator = (n: Notice) => separators.test(n.channel) || separators.test(n.payload)
const retryMs = 200

/**
 * Sends NOTIFYs after the commits they announce, gathered into one statement on a connection
 * that does not wait for the disk. A NOTIFY inside a transaction holds a database-wide lock until
 * its commit is on disk, so every notifying commit waits for the one before: ~600 commits/s here.
 * Without it, concurrent commits share their disk flushes (group commit), and the NOTIFYs of many
 * commits cost one cheap statement. A notice lost to a crash between the two costs a delay, not
 * an event: workers poll, and streams read from the event log, never from notifications.
 */
export function createNotifier({ url, applicationName, log }: { url: string; applicationName: string; log: Log }): Notifier {
  const sql = createSql(url, { max: 1, applicationName, synchronousCommit: false, statementTimeoutMs: 5000 })
  // An item is the notices of one statement, queued with one promise, not one each. They go as one
  // text: channel and payload joined by the ASCII unit separator, notices by the record separator,
  // split apart by the statement. As a text[] parameter postgres.js escaped each element with
  // regular expressions; as a JSON array PostgreSQL parsed and unescaped every payload. Split, a
  // statement of 40 event notices took 9 µs an event instead of 17, and 4 instead of 8 at 400.
  // Payloads are JSON texts or names, which never hold either separator; one that did goes in a
  // statement of its own.
  const write = async (items: Notice[][]) => {
    const notices = items.flat()
    const together: string[] = []
    const apart: Notice[] = []
    for (const n of notices) {
      if (hasSeparator(n)) apart.push(n)
      else together.push(`${n.channel}\x1f${n.payload}`)
    }
    const joined = together.join('\x1e')
    for (let attempt = 1; ; attempt++) {
      try {
        // The lock is looked at once (an initPlan), and only when a notice is on the announced channel.
        await sql`
          select count(pg_notify(channel, payload))
          from (
            select split_part(n, e'\\x1f', 1) as channel, split_part(n, e'\\x1f', 2) as payload
            from unnest(string_to_array(${joined}::text, e'\\x1e')) as n
          ) notice
          where channel <> ${announcedChannel}
             or (select not ${unheard(sql)})`
        for (const n of apart) await sql`select pg_notify(${n.channel}, ${n.payload})`
        return items
      } catch (error) {
        if (!isConnectionError(error) || attempt === retries) {
          // Listeners re-read everything when their connection comes back; workers poll.
          log.warn({ err: error, notices: notices.length }, 'could not send notifications; dropping them')
          return items
        }
        await Bun.sleep(retryMs * attempt)
      }
    }
  }
  const queue = createBatcher(write, { maxBatch: 25, maxInFlight: 1 })
  const unsent = new Set<Promise<Notice[]>>()
  return {
    send(notices) {
      if (notices.length === 0) return
      const sent = queue(notices)
      unsent.add(sent)
      void sent.finally(() => unsent.delete(sent))
    },
    async end() {
      await Promise.allSettled([...unsent])
      await sql.end({ timeout: 5 })
    },
  }
}

const notifiers = new WeakMap<object, Notifier>()

/** Statements run on `sql` announce their changes through `notifier`, after they commit. */
export function notifyAfterCommit<S extends Queryable>(sql: S, notifier: Notifier): S {
  notifiers.set(sql, notifier)
  return sql
}

/**
 * The notifier of a pool, if it has one. A transaction has none: its NOTIFYs must go out with its
 * commit, so they stay inside its statements.
 */
export const notifierOf = (sql: Queryable) => notifiers.get(sql)
