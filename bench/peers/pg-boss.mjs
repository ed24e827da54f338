// pg-boss 12 driven through its library: send() to add jobs, work() to work them.
// https://timgit.github.io/pg-boss/api/workers, https://timgit.github.io/pg-boss/api/constructor
import { PgBoss } from "pg-boss";
import { databaseUrl, dropSchema, openCounter } from "./database.mjs";

const QUEUE = "noop";
const SCHEMA = "pgboss";
const url = () => databaseUrl("bench_pgboss");

// Pool of the producer process: the library default `max`, as for graphile-worker.
const PRODUCER_POOL = 10;

// work() sleeps after every fetch (pollingIntervalSeconds, or notifyPollingIntervalSeconds = 30 s
// with NOTIFY on) unless a NOTIFY arrives or, with burstWhenBatchFull, the fetch came back full; burst
// is ignored at batchSize 1. So localConcurrency 16 × batchSize 1 drains 16 jobs per 30 s, and the
// throughput setting is one fetch loop taking `concurrency` jobs a time with burst on (measured on a
// 10,000-job drain: 1×16 3,070/s, 2×8 3,300/s, 4×4 2,400/s; in end-to-end 1×16 was the fastest).
// The batch variant fetches 100 a time (6,050/s), which runs up to 100 jobs at once.
const fetchShape = (concurrency, variant) =>
  variant === "batch"
    ? { localConcurrency: 1, batchSize: 100 }
    : { localConcurrency: 1, batchSize: concurrency };

// Maintenance (supervise) and the cron scheduler are off: neither is needed for one queue of no-op
// jobs, and their timers would add queries to the measurement.
const common = { connectionString: url(), schema: SCHEMA, supervise: false, schedule: false };

export const supportsProgress = false;

export function describe({ workload, concurrency, variant }) {
  const shape = fetchShape(concurrency, variant);
  const producer =
    workload === "drain"
      ? "jobs queued with insert() in batches of 1000"
      : `producer send() on a pool of max ${PRODUCER_POOL}`;
  const worker =
    `worker useListenNotify: true, queue created with notify: true, work({ localConcurrency: ${shape.localConcurrency}, ` +
    `batchSize: ${shape.batchSize}, burstWhenBatchFull: true }) running each batch with Promise.all, ` +
    `pool max ${concurrency + 2}`;
  return `pg-boss: supervise and schedule off; ${producer}${workload === "enqueue" ? "" : `; ${worker}`}`;
}

function onEvents(boss) {
  boss.on("error", (error) => console.error(`[pg-boss] error: ${error.message}`));
  boss.on("warning", (warning) => console.error(`[pg-boss] warning: ${warning.message}`));
  return boss;
}

// Drops the schema, lets pg-boss install it again, and creates the queue with NOTIFY on insert.
export async function reset() {
  await dropSchema(url(), SCHEMA);
  const boss = onEvents(new PgBoss({ ...common, migrate: true, max: 2 }));
  await boss.start();
  try {
    await boss.createQueue(QUEUE, { notify: true });
  } finally {
    await boss.stop({ graceful: false });
  }
}

export async function openProducer() {
  const boss = onEvents(new PgBoss({ ...common, migrate: false, max: PRODUCER_POOL }));
  await boss.start();
  // pg-boss keeps completed jobs; the state enum is ordered created < retry < active < completed.
  const counter = await openCounter(
    url(),
    `select count(*) as n from ${SCHEMA}.job where name = $1 and state < 'completed'`,
    [QUEUE],
  );
  return {
    add: (data) => boss.send(QUEUE, data),
    async addBulk(count, data) {
      for (let done = 0; done < count; done += 1000) {
        const size = Math.min(1000, count - done);
        await boss.insert(QUEUE, Array.from({ length: size }, () => ({ data })));
      }
    },
    unfinished: () => counter.count(),
    async close() {
      await counter.close();
      await boss.stop({ graceful: false });
    },
  };
}

export async function startWorker({ concurrency, variant, handle }) {
  const boss = onEvents(
    new PgBoss({ ...common, migrate: false, useListenNotify: true, max: concurrency + 2 }),
  );
  await boss.start();
  await boss.work(
    QUEUE,
    { ...fetchShape(concurrency, variant), burstWhenBatchFull: true },
    (jobs) => Promise.all(jobs.map((job) => handle(job.data))),
  );
  return { stop: () => boss.stop({ graceful: true, timeout: 10_000 }) };
}
