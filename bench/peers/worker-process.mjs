// The producer's handle on the worker process (worker.mjs): spawn it, wait for its messages, ask
// for its count, stop it.
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { now } from "./measure.mjs";

const WORKER = fileURLToPath(new URL("./worker.mjs", import.meta.url));
const EXIT_GRACE_MS = 15_000;

// Worker processes still running, so a failed or timed-out run can kill them before exiting.
export const liveWorkers = new Set();

export function spawnWorker({ peer, mode, concurrency, variant, expect }) {
  const args = ["--peer", peer, "--mode", mode, "--concurrency", String(concurrency)];
  if (variant) args.push("--variant", variant);
  if (expect !== undefined) args.push("--expect", String(expect));
  const spawnedAt = now();
  // The worker's stdout goes to our stderr: our stdout carries only the result line.
  const child = fork(WORKER, args, { stdio: ["ignore", 2, 2, "ipc"] });
  liveWorkers.add(child);

  const received = new Map();
  const waiting = new Map();
  let exitError = null;
  child.on("message", (message) => {
    const waiter = waiting.get(message.type);
    if (waiter) {
      waiting.delete(message.type);
      waiter.resolve(message);
    } else {
      received.set(message.type, message);
    }
  });
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      liveWorkers.delete(child);
      exitError = new Error(`${peer} worker process exited (code ${code}, signal ${signal})`);
      for (const waiter of waiting.values()) waiter.reject(exitError);
      waiting.clear();
      resolve({ code, signal });
    });
  });

  function next(type) {
    if (received.has(type)) {
      const message = received.get(type);
      received.delete(type);
      return Promise.resolve(message);
    }
    if (exitError) return Promise.reject(exitError);
    return new Promise((resolve, reject) => waiting.set(type, { resolve, reject }));
  }

  return {
    spawnedAt,
    starting: () => next("starting"),
    ready: () => next("ready"),
    reached: () => next("reached"),
    async count() {
      child.send({ type: "count" });
      return (await next("count")).count;
    },
    // Resolves with the worker's last report once the process has exited cleanly.
    async stop() {
      child.send({ type: "stop" });
      const report = await next("stopped");
      const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_GRACE_MS);
      const { code, signal } = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`${peer} worker process did not exit cleanly (code ${code}, signal ${signal})`);
      return report;
    },
  };
}
