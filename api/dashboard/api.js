// REST calls with the API key from sessionStorage, and their errors as problem+json.

const storageKey = 'taskcast.apiKey'

export const session = {
  get key() {
    return sessionStorage.getItem(storageKey)
  },
  set key(value) {
    if (value) sessionStorage.setItem(storageKey, value)
    else sessionStorage.removeItem(storageKey)
  },
}

export class ApiError extends Error {
  /** status 0: the API could not be reached. */
  constructor(status, problem) {
    super(problem.detail ?? problem.title)
    this.status = status
    this.problem = problem
  }
}

let unauthorized = () => {}

/** Called when the API refuses the key (401), e.g. after it was revoked. */
export const onUnauthorized = (handler) => (unauthorized = handler)

export async function api(path, { method = 'GET', body } = {}) {
  const key = session.key
  if (!key) throw new ApiError(401, { title: 'Signed out', detail: 'enter an API key' })
  const headers = { authorization: `Bearer ${key}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  let response, text
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    text = await response.text()
  } catch {
    throw new ApiError(0, { title: 'Offline', detail: 'the API cannot be reached; retrying' })
  }
  let data = null
  try {
    data = text ? JSON.parse(text) : null
  } catch {
    // not JSON: a proxy's error page, say; the status says enough
  }
  if (response.ok) return data
  // Only if the key is still the one in use: an answer to a request from before a sign-out is old news.
  if (response.status === 401 && session.key === key) unauthorized()
  throw new ApiError(response.status, data && typeof data === 'object' ? data : { title: `HTTP ${response.status}` })
}
