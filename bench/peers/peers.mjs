// The peers this bench can drive, and the workload constants the producer and worker share.

export const PEERS = ["graphile-worker", "pg-boss", "bullmq"];

// Progress workload: each job reports progress this many times, this many ms apart.
export const PROGRESS_UPDATES = 20;
export const PROGRESS_EVERY_MS = 50;

export async function loadPeer(name) {
  if (!PEERS.includes(name)) throw new Error(`unknown peer "${name}" (one of ${PEERS.join(", ")})`);
  return import(`./${name}.mjs`);
}
