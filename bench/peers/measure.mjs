// Clocks, percentiles and memory sampling shared by the producer and the worker process.

// Wall time in ms with sub-ms resolution. Both processes use this, so a timestamp taken in one
// can be subtracted from one taken in the other (same system clock).
export const now = () => performance.timeOrigin + performance.now();

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

// Nearest-rank percentile, in the unit of the samples.
export function percentile(samples, p) {
  if (samples.length === 0) return null;
  const sorted = Float64Array.from(samples).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export const round = (x, digits = 2) => (x == null ? null : Number(x.toFixed(digits)));

// Peak RSS of this process, sampled every 100 ms: a one-off read at the end would miss the peak
// of a drain, when the local queues and result buffers are fullest.
export function startRssSampler() {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 100);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage.rss());
      return round(peak / 2 ** 20, 1);
    },
  };
}
