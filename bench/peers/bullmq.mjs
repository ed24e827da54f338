// BullMQ driven through its library: Queue.add() to add jobs, Worker to work them, QueueEvents to
// hear progress. https://docs.bullmq.io/guide/workers/concurrency,
// https://docs.bullmq.io/guide/workers/auto-removal-of-jobs, https://docs.bullmq.io/guide/events
import { Queue, QueueEvents, Worker } from "bullmq";

const QUEUE = "noop";
// Every key this peer writes starts with this prefix, so a reset can delete exactly those keys
// whatever Redis database REDIS_URL points at.
const PREFIX = "bench-peer";
// Completed jobs kept, as the auto-removal guide suggests for production ("keep a handful of
// completed jobs and a much larger value of failed jobs"); keeps Redis small during a drain.
const KEEP = { removeOnComplete: { count: 1000 }, removeOnFail: { count: 5000 } };

// REDIS_URL, defaulting to database 5 of the local server so a bench run never shares a database
// index with anything else by accident.
function connection() {
  const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379/5");
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 5;
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    db,
    username: url.username || undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
  };
}

const options = () => ({ connection: connection(), prefix: PREFIX });

export const supportsProgress = true;

export function describe({ workload, concurrency }) {
  const { db } = connection();
  const producer =
    workload === "drain" ? "jobs queued with addBulk() in batches of 1000" : "producer Queue.add() on one connection";
  const worker =
    `Worker({ concurrency: ${concurrency}, removeOnComplete: { count: 1000 }, removeOnFail: { count: 5000 } }), ` +
    "other options default";
  const events = workload === "progress" ? "; QueueEvents listener in the producer" : "";
  return `bullmq: Redis db ${db}; ${producer}${workload === "enqueue" ? "" : `; ${worker}`}${events}`;
}

// ioredis retries a refused connection forever; a bench run should fail fast instead.
function reachable(promise) {
  const { host, port } = connection();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis at ${host}:${port} did not answer within 10 s`)), 10_000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Deletes every key under the prefix: queue, jobs, event stream and meta.
export async function reset() {
  const queue = new Queue(QUEUE, options());
  try {
    const client = await reachable(queue.client);
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${PREFIX}:*`, "COUNT", 1000);
      if (keys.length > 0) await client.unlink(...keys);
      cursor = next;
    } while (cursor !== "0");
  } finally {
    await queue.close();
  }
}

export async function openProducer() {
  const queue = new Queue(QUEUE, options());
  await queue.waitUntilReady();
  return {
    add: (data) => queue.add(QUEUE, data),
    async addBulk(count, data) {
      for (let done = 0; done < count; done += 1000) {
        const size = Math.min(1000, count - done);
        await queue.addBulk(Array.from({ length: size }, () => ({ name: QUEUE, data })));
      }
    },
    unfinished: () =>
      queue.getJobCountByTypes("wait", "paused", "active", "delayed", "prioritized", "waiting-children"),
    close: () => queue.close(),
  };
}

// Calls onProgress(data, receivedAt) for every progress event of the queue.
export async function openProgressListener(onProgress, clock) {
  const events = new QueueEvents(QUEUE, options());
  events.on("progress", ({ data }) => onProgress(data, clock()));
  await events.waitUntilReady();
  return { close: () => events.close() };
}

export async function startWorker({ concurrency, handle }) {
  const worker = new Worker(QUEUE, (job) => handle(job.data, (data) => job.updateProgress(data)), {
    ...options(),
    concurrency,
    ...KEEP,
  });
  worker.on("error", (error) => console.error(`[bullmq] worker error: ${error.message}`));
  await worker.waitUntilReady();
  return { stop: () => worker.close() };
}
