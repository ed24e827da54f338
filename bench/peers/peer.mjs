// Runs one workload against one peer queue and prints one JSON result line on stdout.
//
//   node bench/peers/peer.mjs --peer graphile-worker|pg-boss|bullmq
//     --workload enqueue|drain|e2e|pickup|progress [--tasks 10000] [--seconds 10]
//     [--concurrency 16] [--connections 64] [--variant batch]
//
// DATABASE_URL (a database it may wipe) and REDIS_URL come from the environment. Everything else
// (logs, warnings) goes to stderr. Exits non-zero, with the reason on stderr, on any failure or
// when the workload outlives its time limit.
import { parseArgs } from "node:util";
import { loadPeer, PEERS } from "./peers.mjs";
import { liveWorkers } from "./worker-process.mjs";
import { DESCRIPTIONS, WORKLOADS } from "./workloads.mjs";

const { values: args } = parseArgs({
  options: {
    peer: { type: "string" },
    workload: { type: "string" },
    tasks: { type: "string", default: "10000" },
    seconds: { type: "string", default: "10" },
    concurrency: { type: "string", default: "16" },
    connections: { type: "string", default: "64" },
    variant: { type: "string" },
  },
});

// The last stderr line is the reason (the bench runner shows only that line); a stack, if there is
// one, comes before it.
function fail(message, stack) {
  if (stack) console.error(stack);
  console.error(`peer ${args.peer ?? "?"} ${args.workload ?? "?"}: ${message}`);
  for (const child of liveWorkers) child.kill("SIGKILL");
  process.exit(1);
}

// Setup and teardown get 60 s on top of the load itself; a drain is allowed 100 jobs/s at worst.
function timeLimitMs(workload, { seconds, tasks }) {
  const load = workload === "drain" ? tasks / 100 : seconds;
  return (60 + load) * 1000;
}

async function main() {
  if (!PEERS.includes(args.peer)) fail(`--peer must be one of ${PEERS.join(", ")}`);
  if (!(args.workload in WORKLOADS)) fail(`--workload must be one of ${Object.keys(WORKLOADS).join(", ")}`);
  if (args.variant !== undefined && args.variant !== "batch") fail('--variant must be "batch"');
  const options = {
    peerName: args.peer,
    tasks: Number(args.tasks),
    seconds: Number(args.seconds),
    concurrency: Number(args.concurrency),
    connections: Number(args.connections),
    variant: args.variant,
  };
  for (const key of ["tasks", "seconds", "concurrency", "connections"]) {
    if (!(options[key] > 0)) fail(`--${key} must be a positive number`);
  }

  const peer = await loadPeer(args.peer);
  let config = peer.describe({ workload: args.workload, ...options });
  if (DESCRIPTIONS[args.workload]) config += `; ${DESCRIPTIONS[args.workload]}`;
  const head = { peer: args.peer, workload: args.workload };
  if (args.workload === "progress" && !peer.supportsProgress) {
    console.log(JSON.stringify({ ...head, value: null, unit: "ms", note: "no progress events", config }));
    return;
  }

  const limit = timeLimitMs(args.workload, options);
  const timer = setTimeout(() => fail(`did not finish within ${limit / 1000} s`), limit);
  const result = await WORKLOADS[args.workload](peer, options);
  clearTimeout(timer);
  console.log(JSON.stringify({ ...head, ...result, config }));

  // Every pool and connection is closed by now, so the process should end on its own; if a library
  // left a handle open, say so and end anyway rather than hang the bench.
  setTimeout(() => {
    console.error(`peer ${args.peer} ${args.workload}: handles still open after the result, exiting`);
    process.exit(0);
  }, 5000).unref();
}

main().catch((error) => fail(error?.message ?? String(error), error?.stack));
