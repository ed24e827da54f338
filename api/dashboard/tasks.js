// The list of the tenant's recent tasks, kept current by the tenant stream.
import { api } from './api.js'
import { el, formatTime, progressText, shortId, showProblem } from './dom.js'

const limit = 50
const newestFirst = (a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0) // UUIDv7 ids sort by time

/**
 * The update rule: a progress event moves the bar of a task shown as running; a status event
 * re-reads that task (at most one read in flight per task, plus one queued behind it), and a task
 * not shown yet that matches the filters is read and added. Re-reading instead of patching from
 * the event keeps the row right whatever order events and reads arrive in.
 */
export function createTaskList({ table, empty, errorBox, onOpen }) {
  const tbody = table.tBodies[0]
  const tasks = new Map() // id → task, as shown
  const rows = new Map() // id → <tr>
  const reading = new Map() // id → whether another read is wanted after the one in flight
  const seenWhileLoading = new Set()
  let filters = { status: '', type: '' }
  let loading = null
  let loadAgain = false
  let epoch = 0 // bumped by clear(): answers to requests made before it are dropped

  const matches = ({ status, type }) =>
    (!filters.status || status === filters.status) && (!filters.type || type === filters.type)

  function row(task) {
    const cell = (label, ...children) => el('td', { 'data-label': label }, ...children)
    const percent = task.progress?.percent
    return el('tr', { 'data-task-id': task.id, onclick: () => onOpen(task.id) },
      cell('Task', el('button', { type: 'button', class: 'link', 'aria-label': `Open task ${task.id}`, title: task.id }, shortId(task.id))),
      cell('Type', task.type),
      cell('Queue', task.queue),
      cell('Status',
        el('span', { class: 'status', 'data-status': task.status }, task.status),
        task.cancelRequested && task.status === 'running' ? el('span', { class: 'note' }, ' (cancel requested)') : null),
      cell('Attempt', `${task.attempt}/${task.maxAttempts}`),
      cell('Progress', el('span', { class: 'bar' },
        el('progress', { max: 100, value: percent ?? 0, 'aria-label': `Progress of task ${shortId(task.id)}` }),
        el('span', { class: 'progress-text' }, progressText(task.progress)))),
      cell('Created', el('time', { datetime: task.createdAt }, formatTime(task.createdAt))))
  }

  function draw() {
    const shown = [...tasks.values()].sort(newestFirst).slice(0, limit)
    tasks.clear()
    rows.clear()
    for (const task of shown) {
      tasks.set(task.id, task)
      rows.set(task.id, row(task))
    }
    tbody.replaceChildren(...rows.values())
    empty.hidden = shown.length > 0
  }

  /** Shows a task as read from the API: updates its row, adds it, or drops it if it no longer matches. */
  function put(task) {
    if (!matches(task)) {
      if (tasks.delete(task.id)) draw()
      return
    }
    const known = rows.get(task.id)
    tasks.set(task.id, task)
    if (!known) return draw()
    const next = row(task)
    known.replaceWith(next)
    rows.set(task.id, next)
  }

  async function read(id) {
    if (reading.has(id)) return void reading.set(id, true)
    const mine = epoch
    try {
      do {
        reading.set(id, false)
        const task = await api(`/v1/tasks/${id}`)
        if (mine !== epoch) return
        put(task)
      } while (reading.get(id))
    } catch (error) {
      if (mine !== epoch) return
      if (error.status === 404 && tasks.delete(id)) draw()
      else if (error.status !== 404) showProblem(errorBox, error)
    } finally {
      reading.delete(id)
    }
  }

  /** (Re)loads the first page; calls made meanwhile are folded into one more load. */
  async function load() {
    if (loading) {
      loadAgain = true
      return loading
    }
    const mine = epoch
    const run = (async () => {
      do {
        loadAgain = false
        seenWhileLoading.clear()
        const query = new URLSearchParams({ limit: String(limit) })
        if (filters.status) query.set('status', filters.status)
        if (filters.type) query.set('type', filters.type)
        try {
          const { items } = await api(`/v1/tasks?${query}`)
          if (mine !== epoch) break
          tasks.clear()
          for (const task of items) tasks.set(task.id, task)
          draw()
          showProblem(errorBox, null)
        } catch (error) {
          if (mine !== epoch) break
          showProblem(errorBox, error)
        }
      } while (loadAgain)
      if (loading === run) loading = null
      if (mine !== epoch) return
      // The page read may predate these events: read their tasks again.
      for (const id of seenWhileLoading) void read(id)
    })()
    loading = run
    return run
  }

  function onEvent(type, data) {
    const task = tasks.get(data.taskId)
    if (type === 'progress') {
      if (task?.status !== 'running') return
      const progress = {
        percent: data.percent ?? task.progress?.percent ?? null,
        message: data.message ?? task.progress?.message ?? null,
      }
      return put({ ...task, progress })
    }
    if (!task && !matches(data)) return
    if (loading) seenWhileLoading.add(data.taskId)
    void read(data.taskId)
  }

  return {
    load,
    put,
    onEvent,
    setFilters(next) {
      filters = next
      return load()
    },
    clear() {
      epoch++
      loading = null
      loadAgain = false
      reading.clear()
      tasks.clear()
      draw()
      showProblem(errorBox, null)
    },
  }
}
