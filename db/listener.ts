import createSubscriber, { type Subscriber } from 'pg-listen'

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
  /** Registers a handler for a channel; call before start(). */
  on(channel: string, handler: (payload: string) => void): void
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

/** Reconnect delays: 0.5 s doubling to 10 s, each scaled by a random factor in [0.5, 1). */
export const reconnectDelay = (attempt: number) => Math.min(500 * 2 ** attempt, 10_000) * (0.5 + Math.random() / 2)

/**
 * One LISTEN connection for the whole process (pg-listen), configured not to give up:
 * pg-listen's defaults stop reconnecting after 3 s, never notice a stalled connection unless pg's
 * query_timeout is set, and end the process on a payload that is not JSON.
 */
export function createListener({ url, applicationName, log, healthCheckMs = 10_000 }: ListenerOptions): Listener {
  const handlers = new Map<string, (payload: string) => void>()
  const connectedHandlers: Array<() => void> = []
  let subscriber: Subscriber | undefined
  let connected = false
  let stopped = false
  let reconnects = 0

  const runConnectedHandlers = () => {
    connected = true
    for (const handler of connectedHandlers) handler()
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
    on(channel, handler) {
      handlers.set(channel, handler)
    },
    onConnected(handler) {
      connectedHandlers.push(handler)
    },
    async start() {
      for (let attempt = 0; !stopped; attempt++) {
        const sub = create()
        try {
          await sub.connect()
          // One at a time: pg runs a client's queries in turn anyway, and warns (deprecated) when
          // given a query while another is in flight.
          for (const channel of handlers.keys()) await sub.listenTo(channel)
        } catch (error) {
          await sub.close().catch(() => {})
          const delay = reconnectDelay(attempt)
          log.warn({ err: error, retryInMs: Math.round(delay) }, 'LISTEN connection failed; retrying')
          await Bun.sleep(delay)
          continue
        }
        subscriber = sub
        // pg-listen emits "connected" after every reconnect, once the channels are listened to again.
        sub.events.on('connected', () => {
          reconnects++
          log.info({}, 'LISTEN connection restored')
          runConnectedHandlers()
        })
        runConnectedHandlers()
        return
      }
    },
    async stop() {
      stopped = true
      connected = false
      await subscriber?.close().catch(() => {})
    },
    get connected() {
      return connected
    },
    get reconnects() {
      return reconnects
    },
  }
}
