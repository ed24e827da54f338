import { Problem, type FieldError } from './problem.ts'

const maxDepth = 64
const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Every body this API accepts is JSON of at most `maxBytes`. Also refused here, because PostgreSQL
 * cannot store them in jsonb: NUL characters and unpaired surrogates in strings; and nesting
 * deeper than 64 levels, which no task needs.
 */
export function parseJsonBody(maxBytes: number) {
  const tooLarge = new Problem(413, 'Content Too Large', `the request body exceeds ${maxBytes} bytes (TASKCAST_MAX_PAYLOAD_BYTES)`)
  return async ({ request, contentType }: { request: Request; contentType: string }): Promise<unknown> => {
    if (Number(request.headers.get('content-length')) > maxBytes) throw tooLarge
    const bytes = await request.arrayBuffer()
    if (bytes.byteLength > maxBytes) throw tooLarge
    if (bytes.byteLength === 0) return null
    if (!/^application\/([\w.+-]+\+)?json\b/i.test(contentType ?? '')) {
      throw new Problem(415, 'Unsupported Media Type', 'send the body as JSON, with content-type: application/json')
    }
    let body: unknown
    try {
      body = JSON.parse(utf8.decode(bytes))
    } catch (error) {
      throw new Problem(400, 'Bad Request', `the body is not valid JSON: ${(error as Error).message}`)
    }
    const unstorable = findUnstorable(body)
    if (unstorable) throw new Problem(422, 'Unprocessable Content', 'the body holds values that cannot be stored', [unstorable])
    return body
  }
}

/** The first value PostgreSQL could not store, with its JSON pointer (built only for it). */
function findUnstorable(value: unknown, depth = 0): FieldError | undefined {
  if (depth > maxDepth) return { path: '', message: `nested deeper than ${maxDepth} levels` }
  if (typeof value === 'string') return checkString(value)
  if (typeof value !== 'object' || value === null) return undefined
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue
    const found = checkString(key) ?? findUnstorable((value as Record<string, unknown>)[key], depth + 1)
    if (found) return { ...found, path: `/${key.replaceAll('~', '~0').replaceAll('/', '~1')}${found.path}` }
  }
  return undefined
}

function checkString(value: string): FieldError | undefined {
  if (value.includes('\u0000')) return { path: '', message: 'strings cannot contain NUL (\\u0000) characters' }
  if (!value.isWellFormed()) return { path: '', message: 'strings cannot contain unpaired UTF-16 surrogates' }
  return undefined
}
