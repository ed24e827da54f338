/**
 * The environment the api and worker processes start with, beyond their own settings: runtime
 * options that Bun reads as it starts (a process cannot set them for itself). `bun run api` and
 * `bun run worker` set the same in package.json (a test checks that they agree); `bun run start`,
 * the bench and the tests start the processes with this.
 *
 * FTL, JavaScriptCore's top compiler tier, is off. These processes spend their time in the
 * driver, HTTP and small objects, where FTL's code was not measurably quicker than the tier
 * below's, while its compiler threads kept taking the cores that PostgreSQL and the processes
 * share: over one 8 s ingest run the API's compiler threads used ~1.1 s of CPU with FTL, ~0.3 s
 * without, for the same main-thread CPU per request; a worker draining 40,000 tasks ~0.7 s
 * against ~0.25 s.
 *
 * Memory the allocator (mimalloc) frees goes back to the system after 1 s rather than 10 ms: the
 * next burst of requests asked for it again at once, and its scavenger thread spent ~0.2 s of CPU
 * over that ingest run returning it (~0.08 s with the longer delay), page faults aside.
 */
export const serviceRuntimeEnv = { BUN_JSC_useFTLJIT: '0', MIMALLOC_PURGE_DELAY: '1000' } as const
