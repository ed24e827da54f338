import * as v from 'valibot'

/** Schemas for environment variables, which are strings (or absent). */
export const env = {
  /** A whole number in [min, max]; absent means `fallback`. */
  int: (fallback: number, min: number, max: number) =>
    v.optional(
      v.pipe(v.string(), v.trim(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number),
        v.minValue(min, `must be at least ${min}`), v.maxValue(max, `must be at most ${max}`)),
      String(fallback),
    ),
  /** A number (fractions allowed) in [min, max]. */
  number: (fallback: number, min: number, max: number) =>
    v.optional(
      v.pipe(v.string(), v.trim(), v.regex(/^\d+(\.\d+)?$/, 'must be a number'), v.transform(Number),
        v.minValue(min, `must be at least ${min}`), v.maxValue(max, `must be at most ${max}`)),
      String(fallback),
    ),
  databaseUrl: v.pipe(
    v.string('must be set, e.g. postgres://user:password@127.0.0.1:5432/taskcast'),
    v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'),
  ),
}

/** Parses process.env with a schema; on failure, throws one error naming every bad variable. */
export function parseEnv<S extends v.GenericSchema>(schema: S, source: Record<string, string | undefined> = process.env): v.InferOutput<S> {
  const parsed = v.safeParse(schema, source)
  if (parsed.success) return parsed.output
  const lines = parsed.issues.map((issue) => `  ${v.getDotPath(issue) ?? '(environment)'}: ${issue.message}`)
  throw new Error(`invalid environment:\n${lines.join('\n')}`)
}
