// The tenant stream (GET /v1/events), kept open for as long as the user is signed in.
import { api } from './api.js'

const firstDelayMs = 1000
const maxDelayMs = 10_000

/**
 * EventSource retries network errors by itself (and sends Last-Event-ID when it does), but a
 * non-200 answer closes it for good: 503 while the database is down, 401 once the API restarted
 * with another stream secret. Then this asks for a new token and opens a new EventSource after
 * 1 s, 2 s, 4 s… (at most 10 s), resuming after the last event seen.
 *
 * onState gets 'connecting' | 'live' | 'reconnecting' | 'offline'; onOpen runs on every
 * (re)connection, so the caller can reload what it may have missed.
 */
export function createLiveStream({ onEvent, onOpen, onState }) {
  let source = null
  let lastEventId = null
  let delayMs = firstDelayMs
  let timer
  let running = false
  let generation = 0 // bumped by start and stop, so a connect still in flight from before gives up

  async function connect() {
    const mine = generation
    let token
    try {
      ;({ token } = await api('/v1/stream-tokens', { method: 'POST', body: {} }))
    } catch {
      if (mine === generation) retryLater()
      return
    }
    if (mine !== generation) return
    const query = new URLSearchParams({ token })
    if (lastEventId !== null) query.set('lastEventId', lastEventId)
    const opened = new EventSource(`/v1/events?${query}`)
    source = opened
    opened.addEventListener('open', () => {
      delayMs = firstDelayMs
      onState('live')
      onOpen()
    })
    for (const type of ['status', 'progress']) {
      opened.addEventListener(type, (event) => {
        if (event.lastEventId) lastEventId = event.lastEventId
        let data
        try {
          data = JSON.parse(event.data)
        } catch {
          return
        }
        onEvent(type, data)
      })
    }
    opened.addEventListener('error', () => {
      if (opened !== source) return
      if (opened.readyState === EventSource.CLOSED) retryLater()
      else onState('reconnecting') // the browser retries by itself
    })
  }

  function retryLater() {
    source?.close()
    source = null
    if (!running) return
    onState('reconnecting')
    clearTimeout(timer)
    timer = setTimeout(connect, delayMs)
    delayMs = Math.min(delayMs * 2, maxDelayMs)
  }

  return {
    start() {
      generation++
      running = true
      lastEventId = null
      delayMs = firstDelayMs
      onState('connecting')
      void connect()
    },
    stop() {
      generation++
      running = false
      clearTimeout(timer)
      source?.close()
      source = null
      onState('offline')
    },
  }
}
