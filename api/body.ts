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

function findUnstorable(value: unknown, path = '', depth = 0): FieldError | undefined {
  if (depth > maxDepth) return { path, message: `nested deeper than ${maxDepth} levels` }
  if (typeof value === 'string') return checkString(value, path)
  if (typeof value !== 'object' || value === null) return undefined
  for (const [key, child] of Object.entries(value)) {
    const childPath = `${path}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`
    const found = checkString(key, childPath) ?? findUnstorable(child, childPath, depth + 1)
    if (found) return found
  }
  return undefined
}

function checkString(value: string, path: string): FieldError | undefined {
  if (value.includes('\u0000')) return { path, message: 'strings cannot contain NUL (\\u0000) characters' }
  if (!value.isWellFormed()) return { path, message: 'strings cannot contain unpaired UTF-16 surrogates' }
  return undefined
}
