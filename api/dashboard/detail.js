// One task in detail: its fields, its event timeline from its own stream, cancel and retry.
import { api } from './api.js'
import { byId, el, formatTime, progressText, showProblem } from './dom.js'

const terminal = new Set(['succeeded', 'failed', 'canceled'])
const reopenMs = 3000

const json = (value) => JSON.stringify(value, null, 2)

function describe(type, data) {
  if (type === 'progress') return `progress ${progressText(data)}`
  const parts = [`${data.status} (attempt ${data.attempt})`]
  if (data.error) parts.push(`: ${data.error.message}`)
  if (data.retryAt) parts.push(`, retry at ${formatTime(data.retryAt)}`)
  if (data.reason) parts.push(` (${data.reason})`)
  return parts.join('')
}

/** A link to the trace when TASKCAST_TRACE_URL is set (and is http or https), else the id as text. */
function traceLink(traceUrl, traceId) {
  if (!traceId) return '–'
  if (!traceUrl) return el('code', {}, traceId)
  const href = new URL(traceUrl.replaceAll('{traceId}', encodeURIComponent(traceId)), location.href)
  if (href.protocol !== 'http:' && href.protocol !== 'https:') return el('code', {}, traceId)
  return el('a', { href: href.href, target: '_blank', rel: 'noopener noreferrer' }, traceId)
}

/**
 * The panel opens a task's `links.events` stream: stored events first, then live ones. The server
 * ends that stream after the task's last, terminal status event; the panel then closes it, so the
 * browser does not reconnect (a reconnect would get 204 and stop anyway). A replay can hold
 * earlier terminal events (a task retried after it failed), so only the stream's end tells.
 */
export function createDetail({ traceUrl, onTask }) {
  const panel = byId('detail')
  const errorBox = byId('detail-error')
  let task = null
  let source = null
  let timer
  let rereading = null // the id being re-read, with `again` set when another status event came meanwhile

  function render(next) {
    task = next
    byId('detail-title').textContent = `Task ${task.id}`
    byId('detail-status').textContent = task.status + (task.cancelRequested && task.status === 'running' ? ' (cancel requested)' : '')
    byId('detail-status').dataset.status = task.status
    byId('detail-type').textContent = task.type
    byId('detail-queue').textContent = task.queue
    byId('detail-attempts').textContent = `${task.attempt} of ${task.maxAttempts}`
    showProgress(task.progress)
    byId('detail-created').textContent = formatTime(task.createdAt)
    byId('detail-finished').textContent = formatTime(task.finishedAt)
    byId('detail-trace').replaceChildren(traceLink(traceUrl, task.traceId))
    byId('detail-payload').textContent = json(task.payload)
    byId('detail-outcome-title').textContent = task.error && task.status !== 'succeeded' ? 'Error' : 'Result'
    byId('detail-outcome').textContent = task.error && task.status !== 'succeeded' ? json(task.error) : json(task.result)
    byId('detail-cancel').hidden = !(task.status === 'queued' || task.status === 'running')
    byId('detail-retry').hidden = !(task.status === 'failed' || task.status === 'canceled')
  }

  function showProgress(progress) {
    byId('detail-progress').value = progress?.percent ?? 0
    byId('detail-progress-text').textContent = progressText(progress)
  }

  /** Re-reads the task after status events, one read at a time. */
  async function reread(id) {
    if (rereading?.id === id) return void (rereading.again = true)
    const mine = (rereading = { id, again: false })
    try {
      do {
        mine.again = false
        const next = await api(`/v1/tasks/${id}`)
        if (task?.id !== id) return
        render(next)
        onTask(next)
      } while (mine.again)
    } catch (error) {
      showProblem(errorBox, error)
    } finally {
      if (rereading === mine) rereading = null
    }
  }

  function follow(id, eventsUrl) {
    closeStream()
    byId('timeline').replaceChildren()
    const opened = new EventSource(eventsUrl)
    source = opened
    let ended = false // the last event was a terminal status
    for (const type of ['status', 'progress']) {
      opened.addEventListener(type, (event) => {
        let data
        try {
          data = JSON.parse(event.data)
        } catch {
          return
        }
        const timeline = byId('timeline')
        timeline.append(el('li', { 'data-event': type, 'data-status': data.status },
          el('time', { datetime: data.at }, formatTime(data.at)), ' ', describe(type, data)))
        timeline.scrollTop = timeline.scrollHeight
        ended = type === 'status' && terminal.has(data.status)
        if (type === 'progress' && task?.status === 'running') {
          task.progress = { percent: data.percent ?? task.progress?.percent, message: data.message ?? task.progress?.message }
          showProgress(task.progress)
        }
        if (type === 'status') void reread(id)
      })
    }
    opened.addEventListener('error', () => {
      if (opened !== source) return
      if (ended) return closeStream()
      // Closed for good (401 after an API restart with a new secret, 503): unless the task has
      // finished, read it again for a fresh token and replay the timeline.
      if (opened.readyState !== EventSource.CLOSED || terminal.has(task?.status)) return
      timer = setTimeout(() => task?.id === id && open(id), reopenMs)
    })
  }

  function closeStream() {
    clearTimeout(timer)
    source?.close()
    source = null
  }

  async function open(id) {
    closeStream()
    showProblem(errorBox, null)
    panel.hidden = false
    try {
      const next = await api(`/v1/tasks/${id}`)
      render(next)
      follow(id, next.links.events)
    } catch (error) {
      showProblem(errorBox, error)
    }
  }

  async function act(action) {
    if (!task) return
    try {
      const next = await api(`/v1/tasks/${task.id}/${action}`, { method: 'POST' })
      showProblem(errorBox, null)
      onTask(next)
      // A retried task starts a new run: follow its stream again from the start.
      if (action === 'retry') return open(next.id)
      render(next)
    } catch (error) {
      showProblem(errorBox, error)
    }
  }

  function close() {
    closeStream()
    task = null
    panel.hidden = true
  }

  byId('detail-cancel').addEventListener('click', () => act('cancel'))
  byId('detail-retry').addEventListener('click', () => act('retry'))
  byId('detail-close').addEventListener('click', close)

  return {
    async open(id) {
      await open(id)
      byId('detail-title').focus()
    },
    close,
  }
}
