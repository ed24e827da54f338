// The five workloads, the same for every peer. Each starts from a wiped queue (peer.reset()),
// drives the peer's library in this process as the producer, runs its consumer in a separate worker
// process, and returns the measured fields of the result line.
import { now, percentile, round, sleep, startRssSampler } from "./measure.mjs";
import { PROGRESS_EVERY_MS, PROGRESS_UPDATES } from "./peers.mjs";
import { spawnWorker } from "./worker-process.mjs";

// Time the worker gets after it reports ready before load starts: its fetch loops or blocking
// reads are issued just after the library's start resolves.
const SETTLE_MS = 250;
// The latency workloads first run their load this long, unmeasured (Taskcast's too): they measure
// an idle worker's steady state, not the first jobs after its process started.
const WARMUP_SECONDS = 1;
const PICKUP_EVERY_MS = 20;
const PROGRESS_JOB_EVERY_MS = 250;

const latencyFields = (samples) => ({
  p50: round(percentile(samples, 50)),
  p99: round(percentile(samples, 99)),
});

// `connections` loops, each awaiting one add before the next, until `seconds` have passed.
// Returns the adds done and, when asked, each add's duration in ms.
async function addLoops(producer, { connections, seconds, samples }) {
  const deadline = now() + seconds * 1000;
  let adds = 0;
  const loop = async () => {
    while (now() < deadline) {
      const start = now();
      await producer.add({});
      samples?.push(now() - start);
      adds += 1;
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  return adds;
}

/** Adds one job every `everyMs` for `seconds`, on schedule; resolves with how many were added. */
async function addPaced(seconds, everyMs, add) {
  const start = now();
  let added = 0;
  while (now() - start < seconds * 1000) {
    await sleep(start + added * everyMs - now());
    await add();
    added += 1;
  }
  return added;
}

async function withProducer(peer, fn) {
  await peer.reset();
  const rss = startRssSampler();
  const producer = await peer.openProducer();
  try {
    const result = await fn(producer);
    return { ...result, producerRssMiB: rss.stop() };
  } finally {
    await producer.close();
  }
}

export function enqueue(peer, { seconds, connections }) {
  return withProducer(peer, async (producer) => {
    // One add per loop first, untimed, so every pooled connection is open when the clock starts.
    await Promise.all(Array.from({ length: connections }, () => producer.add({})));
    const samples = [];
    const start = now();
    const adds = await addLoops(producer, { connections, seconds, samples });
    const elapsed = (now() - start) / 1000;
    return { value: round(adds / elapsed, 1), unit: "jobs/s", ...latencyFields(samples) };
  });
}

export function drain(peer, { peerName, tasks, concurrency, variant }) {
  return withProducer(peer, async (producer) => {
    await producer.addBulk(tasks, {});
    // The clock starts when the worker process is spawned, as Taskcast's drain does ("from the
    // worker process start"); startupMs says how much of that went to booting Node and loading the
    // library before it could start.
    const worker = spawnWorker({ peer: peerName, mode: "noop", concurrency, variant, expect: tasks });
    const start = worker.spawnedAt;
    const { at: libraryStart } = await worker.starting();
    // The worker says when its handlers have run `tasks` times; the last completions may still be
    // on their way to the store, so the clock stops when the store has no unfinished job left.
    await worker.reached();
    while ((await producer.unfinished()) > 0) await sleep(5);
    const end = now();
    const { rssMiB } = await worker.stop();
    return {
      value: round(tasks / ((end - start) / 1000), 1),
      unit: "jobs/s",
      workerRssMiB: rssMiB,
      startupMs: round(libraryStart - start, 0),
    };
  });
}

export function e2e(peer, { peerName, seconds, connections, concurrency, variant }) {
  return withProducer(peer, async (producer) => {
    const worker = spawnWorker({ peer: peerName, mode: "noop", concurrency, variant });
    await worker.ready();
    await sleep(SETTLE_MS);
    const before = await worker.count();
    const start = now();
    const adds = await addLoops(producer, { connections, seconds });
    const elapsed = (now() - start) / 1000;
    const completed = (await worker.count()) - before;
    const { rssMiB } = await worker.stop();
    return {
      value: round(completed / elapsed, 1),
      unit: "jobs/s",
      enqueuedPerSec: round(adds / elapsed, 1),
      workerRssMiB: rssMiB,
    };
  });
}

export function pickup(peer, { peerName, seconds, concurrency, variant }) {
  return withProducer(peer, async (producer) => {
    const worker = spawnWorker({ peer: peerName, mode: "pickup", concurrency, variant });
    await worker.ready();
    await sleep(SETTLE_MS);
    const warmup = await addPaced(WARMUP_SECONDS, PICKUP_EVERY_MS, () => producer.add({ sentAt: now(), warmup: true }));
    const added = await addPaced(seconds, PICKUP_EVERY_MS, () => producer.add({ sentAt: now() }));
    while ((await worker.count()) < warmup + added) await sleep(20);
    const { rssMiB, pickupSamples } = await worker.stop();
    const { p50, p99 } = latencyFields(pickupSamples);
    return { value: p50, unit: "ms", p50, p99, workerRssMiB: rssMiB };
  });
}

export function progress(peer, { peerName, seconds, concurrency, variant }) {
  return withProducer(peer, async (producer) => {
    const samples = [];
    const listener = await peer.openProgressListener((data, receivedAt) => {
      if (!data.warmup) samples.push(receivedAt - data.sentAt);
    }, now);
    try {
      const worker = spawnWorker({ peer: peerName, mode: "progress", concurrency, variant });
      await worker.ready();
      await sleep(SETTLE_MS);
      const warmup = await addPaced(WARMUP_SECONDS, PROGRESS_JOB_EVERY_MS, () => producer.add({ warmup: true }));
      const added = await addPaced(seconds, PROGRESS_JOB_EVERY_MS, () => producer.add({}));
      const expected = added * PROGRESS_UPDATES;
      while ((await worker.count()) < warmup + added || samples.length < expected) await sleep(20);
      const { rssMiB } = await worker.stop();
      const { p50, p99 } = latencyFields(samples);
      return { value: p50, unit: "ms", p50, p99, workerRssMiB: rssMiB, events: samples.length };
    } finally {
      await listener.close();
    }
  });
}

export const WORKLOADS = { enqueue, drain, e2e, pickup, progress };
export const DESCRIPTIONS = {
  progress: `one job every ${PROGRESS_JOB_EVERY_MS} ms, each calling updateProgress ${PROGRESS_UPDATES} times ${PROGRESS_EVERY_MS} ms apart`,
};
