import createSubscriber, { type Subscriber } from 'pg-listen'
import { createSql, type Sql } from './client.ts'
import { announcedChannel, listenAnnounce, listenUnannounce } from './notify.ts'

/** What the listener needs of a logger (pino's shape). */
interface Log {
  info(fields: object, message: string): void
  warn(fields: object, message: string): void
  error(fields: object, message: string): void
}

export interface ListenerOptions {
  url: string
  applicationName: string
  log: Log
  /** How often a query checks that the connection still answers; a stalled one is replaced. */
  healthCheckMs?: number
}

export interface Listener {
  /**
   * Registers a handler for a channel; call before start(). A channel registered `onDemand` is
   * listened to only between listen() and unlisten().
   */
  on(channel: string, handler: (payload: string) => void, options?: { onDemand?: boolean }): void
  /**
   * Listens to an on-demand channel. Resolves once its notifications are delivered; or, when the
   * connection is down, once that is known: the channel is listened to again as it reconnects,
   * before onConnected handlers run.
   */
  listen(channel: string): Promise<void>
  /** Stops listening to an on-demand channel. */
  unlisten(channel: string): Promise<void>
  /**
   * Runs after the first connect and after every reconnect, once all channels are listened to
   * again: notifications sent while disconnected are lost, so this is where callers re-read state.
   */
  onConnected(handler: () => void): void
  /** Connects (retrying with backoff until it succeeds) and listens to every registered channel. */
  start(): Promise<void>
  stop(): Promise<void>
  readonly connected: boolean
  /** How many times the connection was lost and reconnected, for metrics. */
  readonly reconnects: number
}

/** How often a listener of the announced channel checks that its announcement still holds. */
const announceCheckMs = 1000

/** Runs what it is given one at a time, in the order given, whether or not each succeeds. */
function oneAtATime() {
  let last: Promise<unknown> = Promise.resolve()
  return <T>(run: () => T | Promise<T>): Promise<T> => {
    const done = last.then(run)
    last = done.catch(() => {})
    return done
  }
}

/** Reconnect delays: 0.5 s doubling to 10 s, each scaled by a random factor in [0.5, 1). */
export const reconnectDelay = (attempt: number) => Math.min(500 * 2 ** attempt, 10_000) * (0.5 + Math.random() / 2)

/**
 * One LISTEN connection for the whole process (pg-listen), configured not to give up:
 * pg-listen's defaults stop reconnecting after 3 s, never notice a stalled connection unless pg's
 * query_timeout is set, and end the process on a payload that is not JSON.
 *
 * A connection that listens to nothing costs the database nothing: PostgreSQL wakes every
 * connection that listens to any channel of the database at every notifying commit, whatever the
 * channel. On-demand channels let a process listen only while it has a use for what they carry.
 *
 * While it listens to the announced channel (task events), the listener says so with a lock held
 * on a connection beside its LISTEN's, opened when first needed; notifiers send that channel's
 * notices only while someone does (db/notify.ts). The announcement is checked every second: if its
 * connection was lost, it is made again, and onConnected handlers run, as after a reconnect.
 */
export function createListener({ url, applicationName, log, healthCheckMs = 10_000 }: ListenerOptions): Listener {
  const handlers = new Map<string, (payload: string) => void>()
  const onDemand = new Set<string>()
  /** The on-demand channels to listen to now. */
  const wanted = new Set<string>()
  const listened = (channel: string) => !onDemand.has(channel) || wanted.has(channel)
  const connectedHandlers: Array<() => void> = []
  /** The connection, once it is made (its channels may still be being listened to). */
  let subscriber: Subscriber | undefined
  /**
   * LISTEN and UNLISTEN statements, one at a time, in order: pg runs a client's queries in turn
   * anyway, and warns (deprecated) when given a query while another is in flight.
   */
  const inTurn = oneAtATime()
  let connected = false
  let stopped = false
  let reconnects = 0

  const runConnectedHandlers = () => {
    connected = true
    for (const handler of connectedHandlers) handler()
  }

  /** The connection that holds the announcement. */
  let announceSql: Sql | undefined
  let announceCheck: ReturnType<typeof setInterval> | undefined
  /** Announcements and their checks, one at a time, in order. */
  const announceInTurn = oneAtATime()
  const announceWanted = () => !stopped && handlers.has(announcedChannel) && listened(announcedChannel)
  /** Announces the LISTEN if it should be and is not (or no longer); true when it was announced now. */
  const announce = () => announceInTurn(async () => {
    if (!announceWanted()) return false
    announceSql ??= createSql(url, { max: 1, applicationName: `${applicationName}-announce`, keepConnections: true, statementTimeoutMs: 5000 })
    return listenAnnounce(announceSql)
  })
  const unannounce = () => announceInTurn(async () => {
    if (!announceWanted() && announceSql) await listenUnannounce(announceSql)
  })
  let announceFailing = false
  /** A check is under way: the next waits for it rather than queueing behind a connection that may hang. */
  let checking = false
  /** Notices may have been skipped while the announcement was lost: handlers re-read, as after a reconnect. */
  const checkAnnouncement = () => {
    if (checking) return
    checking = true
    void announce().then(
      (renewed) => {
        announceFailing = false
        if (renewed && connected) runConnectedHandlers()
      },
      (error) => {
        if (!announceFailing) log.warn({ err: error }, 'could not announce the LISTEN; retrying every second')
        announceFailing = true
      },
    ).finally(() => {
      checking = false
    })
  }

  function create(): Subscriber {
    const sub = createSubscriber(
      {
        connectionString: url,
        application_name: applicationName,
        // Both bound the health check: without query_timeout it hangs on a stalled connection.
        query_timeout: Math.max(1000, Math.floor(healthCheckMs / 2)),
        connectionTimeoutMillis: 5000,
      },
      {
        paranoidChecking: healthCheckMs,
        retryTimeout: 0, // never stop reconnecting
        retryInterval: reconnectDelay,
        parse: (payload) => payload, // handlers parse, and survive, whatever arrives
      },
    )
    sub.events.on('error', (error) => log.error({ err: error }, 'LISTEN connection error'))
    sub.events.on('reconnect', (attempt) => {
      connected = false
      if (attempt === 1 || attempt % 10 === 0) log.warn({ attempt }, 'LISTEN connection lost; reconnecting')
    })
    for (const [channel, handler] of handlers) {
      sub.notifications.on(channel, (payload?: string) => {
        try {
          handler(payload ?? '')
        } catch (error) {
          log.error({ err: error, channel }, 'notification handler failed')
        }
      })
    }
    return sub
  }

  return {
    on(channel, handler, { onDemand: demand = false } = {}) {
      handlers.set(channel, handler)
      if (demand) onDemand.add(channel)
    },
    listen(channel) {
      wanted.add(channel)
      // Failed: the connection is down, and it listens to every wanted channel as it comes back.
      // Not announced: the next check announces it, and handlers re-read then.
      return inTurn(() => subscriber?.listenTo(channel)).then(() => {}, () => {})
        .then(() => (channel === announcedChannel ? announce().then(() => {}, () => {}) : undefined))
    },
    unlisten(channel) {
      wanted.delete(channel)
      return inTurn(() => subscriber?.unlisten(channel)).then(() => {}, () => {})
        .then(() => (channel === announcedChannel ? unannounce().catch(() => {}) : undefined))
    },
    onConnected(handler) {
      connectedHandlers.push(handler)
    },
    async start() {
      for (let attempt = 0; !stopped; attempt++) {
        const sub = create()
        try {
          await sub.connect()
          subscriber = sub
          await inTurn(async () => {
            for (const channel of handlers.keys()) if (listened(channel)) await sub.listenTo(channel)
          })
        } catch (error) {
          subscriber = undefined
          await sub.close().catch(() => {})
          const delay = reconnectDelay(attempt)
          log.warn({ err: error, retryInMs: Math.round(delay) }, 'LISTEN connection failed; retrying')
          await Bun.sleep(delay)
          continue
        }
        // pg-listen emits "connected" after every reconnect, once the channels are listened to again.
        sub.events.on('connected', () => {
          reconnects++
          log.info({}, 'LISTEN connection restored')
          runConnectedHandlers()
          checkAnnouncement()
        })
        if (handlers.has(announcedChannel)) {
          await announce().catch(() => {})
          announceCheck = setInterval(checkAnnouncement, announceCheckMs)
          announceCheck.unref()
        }
        runConnectedHandlers()
        return
      }
    },
    async stop() {
      stopped = true
      connected = false
      clearInterval(announceCheck)
      await subscriber?.close().catch(() => {})
      await announceSql?.end({ timeout: 1 }).catch(() => {})
    },
    get connected() {
      return connected
    },
    get reconnects() {
      return reconnects
    },
  }
}
