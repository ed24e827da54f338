// The worker process: one peer's consumer, started by the producer (worker-process.mjs) with
// `--peer P --mode noop|pickup|progress --concurrency N [--variant batch] [--expect N]` and driven
// over the IPC channel. Messages out: starting, ready, reached, count, stopped.
import { parseArgs } from "node:util";
import { now, sleep, startRssSampler } from "./measure.mjs";
import { loadPeer, PROGRESS_EVERY_MS, PROGRESS_UPDATES } from "./peers.mjs";

const { values: args } = parseArgs({
  options: {
    peer: { type: "string" },
    mode: { type: "string", default: "noop" },
    concurrency: { type: "string", default: "16" },
    variant: { type: "string" },
    expect: { type: "string" },
  },
});

const send = (message) => process.send?.(message);
const rss = startRssSampler();
const expected = args.expect ? Number(args.expect) : Infinity;
let completed = 0;
const pickupSamples = [];

function finished() {
  completed += 1;
  if (completed === expected) send({ type: "reached", at: now() });
}

const handlers = {
  async noop() {
    finished();
  },
  // Handler start minus the producer's clock just before its add call (warm-up jobs not counted).
  async pickup(data) {
    if (!data.warmup) pickupSamples.push(now() - data.sentAt);
    finished();
  },
  async progress(data, report) {
    for (let n = 1; n <= PROGRESS_UPDATES; n += 1) {
      await report({ n, sentAt: now(), warmup: data.warmup });
      await sleep(PROGRESS_EVERY_MS);
    }
    finished();
  },
};

async function main() {
  const handler = handlers[args.mode];
  if (!handler) throw new Error(`unknown worker mode ${args.mode}`);
  const peer = await loadPeer(args.peer);
  // Process up and library loaded: the library's own start (connecting, checking its schema,
  // LISTEN) comes next.
  send({ type: "starting", at: now() });
  const consumer = await peer.startWorker({
    concurrency: Number(args.concurrency),
    variant: args.variant,
    handle: handler,
  });
  send({ type: "ready", at: now() });

  let stopping = null;
  const stop = () => (stopping ??= consumer.stop());
  process.on("message", async (message) => {
    if (message.type === "count") {
      send({ type: "count", count: completed, at: now() });
    } else if (message.type === "stop") {
      await stop();
      send({ type: "stopped", count: completed, rssMiB: rss.stop(), pickupSamples });
      process.disconnect();
    }
  });
  // If the producer dies, the IPC channel closes: stop too rather than linger.
  process.on("disconnect", () => {
    if (stopping === null) stop().finally(() => process.exit(0));
  });
}

main().catch((error) => {
  console.error(`[worker ${args.peer}] ${error.stack ?? error}`);
  process.exit(1);
});
