// The dashboard: sign in with an API key, watch the tenant's tasks live, submit demo tasks.
import { api, onUnauthorized, session } from './api.js'
import { createDetail } from './detail.js'
import { byId, el, showProblem } from './dom.js'
import { createLiveStream } from './live.js'
import { createTaskList } from './tasks.js'

const config = await fetch('/dashboard/config.json')
  .then((response) => response.json())
  .catch(() => ({ traceUrl: null, taskTypes: [] }))

const stateText = { offline: 'signed out', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }

function showState(state) {
  byId('connection').dataset.state = state
  byId('connection').textContent = stateText[state]
}

const detail = createDetail({ traceUrl: config.traceUrl, onTask: (task) => list.put(task) })
const list = createTaskList({
  table: byId('tasks'),
  empty: byId('no-tasks'),
  errorBox: byId('list-error'),
  onOpen: (id) => detail.open(id),
})
// Every (re)connection reloads the list: events may have been missed while the API was away.
const live = createLiveStream({ onEvent: list.onEvent, onOpen: list.load, onState: showState })

function showBoard(signedIn) {
  byId('sign-in').hidden = signedIn
  byId('board').hidden = !signedIn
  byId('sign-out').hidden = !signedIn
}

function signIn() {
  showBoard(true)
  void list.load()
  live.start()
}

function signOut(problem) {
  live.stop()
  detail.close()
  list.clear()
  session.key = null
  showBoard(false)
  showProblem(byId('key-error'), problem ?? null)
  byId('key').focus()
}

onUnauthorized(() => signOut({ problem: { title: 'Signed out', detail: 'the API refused the key' } }))

byId('key-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  session.key = byId('key').value.trim()
  try {
    await api('/v1/tasks?limit=1') // checks the key
  } catch (error) {
    session.key = null
    return showProblem(byId('key-error'), error)
  }
  byId('key').value = ''
  showProblem(byId('key-error'), null)
  signIn()
})
byId('sign-out').addEventListener('click', () => signOut())

// Filters: the type list comes from the API's catalogue.
for (const type of config.taskTypes) byId('filter-type').append(el('option', {}, type))
const applyFilters = () => list.setFilters({ status: byId('filter-status').value, type: byId('filter-type').value })
byId('filter-status').addEventListener('change', applyFilters)
byId('filter-type').addEventListener('change', applyFilters)

// The submit form: one fieldset of payload fields per type, only the chosen one enabled.
const form = byId('submit-form')
function showPayloadFields() {
  for (const fieldset of form.querySelectorAll('fieldset[data-type]')) {
    const chosen = fieldset.dataset.type === byId('submit-type').value
    fieldset.hidden = !chosen
    fieldset.disabled = !chosen
  }
}
byId('submit-type').addEventListener('change', showPayloadFields)
showPayloadFields()

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const type = byId('submit-type').value
  const payload = {}
  for (const input of form.querySelectorAll(`fieldset:not([disabled]) input`)) {
    // Empty fields are left out, so the API's defaults and its field errors apply.
    if (input.value.trim() !== '') payload[input.name] = Number(input.value)
  }
  const body = { type, payload }
  const queue = byId('submit-queue').value.trim()
  if (queue) body.queue = queue
  const button = form.querySelector('button[type=submit]')
  button.disabled = true
  try {
    const task = await api('/v1/tasks', { method: 'POST', body })
    showProblem(byId('submit-error'), null)
    byId('submit-result').textContent = `Submitted task ${task.id}.`
    list.put(task)
  } catch (error) {
    byId('submit-result').textContent = ''
    showProblem(byId('submit-error'), error)
  } finally {
    button.disabled = false
  }
})

if (session.key) signIn()
else byId('key').focus()
