import type { Handler } from '../handler.ts'
import { PermanentError } from '../handler.ts'

const maxBodyChars = 65_536

/** An answer worth another attempt: the receiver is overloaded or failing, not refusing. */
const retryable = (status: number) => status === 408 || status === 429 || status >= 500

/**
 * Sends the request and stores {status, body}. A JSON answer is stored as JSON, anything else as
 * text, cut at 64 KiB. Aborts with the task's signal (cancel, timeout, shutdown).
 */
export const httpRequest: Handler<'http.request'> = async ({ url, method, headers, body }, ctx) => {
  ctx.progress(undefined, `${method} ${url}`)
  const response = await fetch(url, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
      'taskcast-task-id': ctx.taskId,
      'taskcast-attempt': String(ctx.attempt),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: ctx.signal,
    redirect: 'follow',
  })
  // What the receiver said, minus what PostgreSQL cannot store (NUL, unpaired surrogates).
  const text = (await response.text()).replaceAll('\u0000', '').toWellFormed()
  let answer: unknown = text.slice(0, maxBodyChars)
  if ((response.headers.get('content-type') ?? '').includes('json') && text.length <= maxBodyChars) {
    try {
      answer = JSON.parse(text)
    } catch {
      // not JSON after all: keep the text
    }
  }
  if (!response.ok) {
    const message = `${method} ${url} answered ${response.status}`
    if (retryable(response.status)) throw new Error(message)
    throw new PermanentError(message)
  }
  return { status: response.status, body: answer }
}
