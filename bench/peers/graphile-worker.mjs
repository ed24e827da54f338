// graphile-worker driven through its library: makeWorkerUtils() to add jobs, run() to work them.
// https://worker.graphile.org/docs/library/run, https://worker.graphile.org/docs/performance
import { EventEmitter } from "node:events";
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { databaseUrl, dropSchema, openCounter } from "./database.mjs";

const TASK = "noop";
const SCHEMA = "graphile_worker";
const url = () => databaseUrl("bench_graphile");

// Pool of the producer process: the library default, which the 64 adds in flight share (the same
// size as Taskcast's API pool). On this 2-core machine 16, 32 or 64 connections enqueued no faster.
const PRODUCER_POOL = 10;

// Batching as on the performance page ("Batching options"): a local queue that locks jobs in
// bulk, and batched completion. The page's own setting is localQueue.size 500.
const BATCHING = { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 };

// Worker logs go to stderr, and only warnings and errors: stdout carries the one result line.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker] ${message}`);
});

export const supportsProgress = false;

export function describe({ workload, concurrency, variant }) {
  const worker =
    `run({ concurrency: ${concurrency}, maxPoolSize: ${concurrency + 2}, noHandleSignals: true, ` +
    `pollInterval: default 2000 ms }), LISTEN/NOTIFY built in`;
  const batching =
    variant === "batch"
      ? `; batching: preset.worker.localQueue.size ${BATCHING.localQueue.size}, completeJobBatchDelay 0, failJobBatchDelay 0`
      : "; no batching (localQueue off, completeJobBatchDelay -1)";
  const producer =
    workload === "drain"
      ? "jobs queued with workerUtils.addJobs() in batches of 1000"
      : `producer makeWorkerUtils({ maxPoolSize: ${PRODUCER_POOL} }).addJob()`;
  return `graphile-worker: ${producer}; worker ${worker}${workload === "enqueue" ? "" : batching}`;
}

// Drops the schema and installs it again: every run starts from an empty, freshly migrated queue.
export async function reset() {
  await dropSchema(url(), SCHEMA);
  const utils = await makeWorkerUtils({ connectionString: url(), logger });
  try {
    await utils.migrate();
  } finally {
    await utils.release();
  }
}

export async function openProducer() {
  const utils = await makeWorkerUtils({ connectionString: url(), maxPoolSize: PRODUCER_POOL, logger });
  // Completed jobs are deleted, so every row left is unfinished (queued, locked or failed).
  const counter = await openCounter(url(), `select count(*) as n from ${SCHEMA}._private_jobs`);
  return {
    add: (data) => utils.addJob(TASK, data),
    async addBulk(count, data) {
      for (let done = 0; done < count; done += 1000) {
        const size = Math.min(1000, count - done);
        await utils.addJobs(Array.from({ length: size }, () => ({ identifier: TASK, payload: data })));
      }
    },
    unfinished: () => counter.count(),
    async close() {
      await counter.close();
      await utils.release();
    },
  };
}

export async function startWorker({ concurrency, variant, handle }) {
  // Our own emitter, passed in, so the LISTEN success that run() may reach before it resolves is
  // not missed.
  const events = new EventEmitter();
  const listening = new Promise((resolve) => events.once("pool:listen:success", resolve));
  const runner = await run({
    connectionString: url(),
    concurrency,
    maxPoolSize: concurrency + 2,
    noHandleSignals: true,
    logger,
    events,
    taskList: { [TASK]: (payload) => handle(payload) },
    preset: variant === "batch" ? { worker: BATCHING } : undefined,
  });
  await listening;
  return { stop: () => runner.stop() };
}
