// DOM helpers. Everything the server sends is put on the page as text, never as HTML: task
// payloads, results and errors are user data.

/** An element with attributes (`on…` ones become listeners) and children (nodes or text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value)
    else node.setAttribute(name, value === true ? '' : String(value))
  }
  node.append(...children.flat().filter((child) => child !== undefined && child !== null && child !== false))
  return node
}

export const byId = (id) => document.getElementById(id)

/** The last 8 characters of an id: a UUIDv7 starts with its time, so the start is shared. */
export const shortId = (id) => `…${id.slice(-8)}`

export const formatTime = (iso) => (iso ? new Date(iso).toLocaleString() : '–')

export function progressText(progress) {
  if (!progress) return '–'
  return [progress.percent != null ? `${Math.round(progress.percent)}%` : null, progress.message].filter(Boolean).join(' ')
}

/** Shows an ApiError (its problem+json title, detail and field errors) in `box`; null clears it. */
export function showProblem(box, error) {
  box.replaceChildren()
  if (!error) return
  const problem = error.problem ?? { title: 'Error', detail: error.message }
  box.append(el('strong', {}, problem.title ?? `HTTP ${error.status}`))
  if (problem.detail) box.append(`: ${problem.detail}`)
  if (Array.isArray(problem.errors) && problem.errors.length > 0) {
    box.append(el('ul', {}, problem.errors.map((field) =>
      el('li', {}, el('code', {}, field.path || '/'), ` ${field.message}`))))
  }
}
