import * as v from 'valibot'

/**
 * The task catalogue: every task type, its payload schema and its defaults. The API validates
 * submissions against it; the worker validates again before running a handler (a stored row can
 * predate a deploy) and has exactly one handler per entry.
 */
export interface TaskTypeDefinition<TPayload extends v.GenericSchema = v.GenericSchema> {
  description: string
  payload: TPayload
  queue: string
  maxAttempts: number
  timeoutSeconds: number
  /** Retry n waits min(maxSeconds, baseSeconds · 2^(n-1)), scaled by a random factor in [0.5, 1). */
  backoff: { baseSeconds: number; maxSeconds: number }
}

const count = (max: number) => v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(max))

export const catalogue = {
  'demo.noop': {
    description: 'Does nothing but return the moment it started (epoch ms, sub-millisecond), after `reports` progress reports `intervalMs` apart, each message the moment it was made: for measuring pickup and progress latency.',
    payload: v.strictObject({
      reports: v.optional(count(1000), 0),
      intervalMs: v.optional(count(10_000), 100),
    }),
    queue: 'default',
    maxAttempts: 3,
    timeoutSeconds: 600,
    backoff: { baseSeconds: 1, maxSeconds: 60 },
  },
  'demo.sleep': {
    description: 'Sleeps for `seconds` in `steps` equal steps, reporting progress after each; throws on its first `failTimes` attempts.',
    payload: v.strictObject({
      seconds: v.pipe(v.number(), v.minValue(0), v.maxValue(3600)),
      steps: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000)), 10),
      failTimes: v.optional(count(100), 0),
    }),
    queue: 'default',
    maxAttempts: 3,
    timeoutSeconds: 3700,
    backoff: { baseSeconds: 1, maxSeconds: 60 },
  },
  'demo.primes': {
    description: 'Counts the primes up to `limit` with a segmented sieve (CPU-bound), reporting progress per segment.',
    payload: v.strictObject({
      limit: v.pipe(v.number(), v.integer(), v.minValue(2), v.maxValue(2_000_000_000)),
    }),
    queue: 'default',
    maxAttempts: 3,
    timeoutSeconds: 600,
    backoff: { baseSeconds: 2, maxSeconds: 120 },
  },
  'http.request': {
    description: 'Sends an HTTP request (a webhook) and stores the response. Network errors, 429 and 5xx answers are retried; other 4xx fail at once. Each request carries Taskcast-Task-Id and Taskcast-Attempt headers, so the receiver can tell retries apart.',
    payload: v.strictObject({
      url: v.pipe(v.string(), v.maxLength(2048), v.url(), v.regex(/^https?:\/\//i, 'must be an http or https URL')),
      method: v.optional(v.picklist(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']), 'POST'),
      headers: v.optional(
        v.record(v.pipe(v.string(), v.regex(/^[A-Za-z0-9-]{1,100}$/, 'is not a header name')), v.pipe(v.string(), v.maxLength(4096))),
        {},
      ),
      body: v.optional(v.unknown()),
    }),
    queue: 'default',
    maxAttempts: 5,
    timeoutSeconds: 30,
    backoff: { baseSeconds: 2, maxSeconds: 300 },
  },
} as const satisfies Record<string, TaskTypeDefinition>

export type Catalogue = typeof catalogue
export type TaskType = keyof Catalogue
export type PayloadOf<T extends TaskType> = v.InferOutput<Catalogue[T]['payload']>

export const taskTypes = Object.keys(catalogue) as TaskType[]

export function isTaskType(type: string): type is TaskType {
  return Object.hasOwn(catalogue, type)
}
