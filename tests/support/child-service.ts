import type { Subprocess } from 'bun'

export type LogLine = Record<string, unknown>

export interface ChildService {
  proc: Subprocess<'ignore', 'pipe', 'inherit'>
  /** Parsed JSON log lines so far (stdout lines that are not JSON are kept as { message }). */
  logs: LogLine[]
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  /** Sends a signal and waits for the exit code; with `killAfterMs`, SIGKILL if it has not exited by then. */
  stop(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number>
}

/**
 * A child process of ours (api, worker, a bench client) whose stdout carries JSON log lines; the
 * tests and the bench both drive services through it.
 */
export function spawnChildService(
  name: string,
  command: string[],
  { cwd, env, onLine }: { cwd: string; env: Record<string, string | undefined>; onLine?: (line: LogLine) => void },
): ChildService {
  const proc = Bun.spawn(command, { cwd, env, stdin: 'ignore', stdout: 'pipe', stderr: 'inherit' })
  const logs: LogLine[] = []
  const waiters = new Set<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }>()
  void (async () => {
    let buffer = ''
    for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk
      for (let newline = buffer.indexOf('\n'); newline >= 0; newline = buffer.indexOf('\n')) {
        const text = buffer.slice(0, newline)
        buffer = buffer.slice(newline + 1)
        let line: LogLine
        try {
          line = JSON.parse(text)
        } catch {
          line = { message: text }
        }
        logs.push(line)
        onLine?.(line)
        for (const waiter of waiters) if (waiter.match(line)) (waiters.delete(waiter), waiter.resolve(line))
      }
    }
  })()
  return {
    proc,
    logs,
    waitForLog(match, timeoutMs = 15_000) {
      const seen = logs.find(match)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolvePromise, reject) => {
        // The timer goes with the wait: a pending one would keep the process alive after its work.
        const timer = setTimeout(() => {
          if (waiters.delete(waiter)) reject(new Error(`${name}: no matching log line within ${timeoutMs} ms`))
        }, timeoutMs)
        const waiter = {
          match,
          resolve: (line: LogLine) => {
            clearTimeout(timer)
            resolvePromise(line)
          },
        }
        waiters.add(waiter)
        void proc.exited.then((code) => {
          if (waiters.delete(waiter)) reject(new Error(`${name} exited (${code}) before the expected log line`))
        })
      })
    },
    async stop(signal = 'SIGTERM', killAfterMs) {
      proc.kill(signal)
      const killer = killAfterMs === undefined ? undefined : setTimeout(() => proc.kill('SIGKILL'), killAfterMs)
      const code = await proc.exited
      clearTimeout(killer)
      return code
    },
  }
}
