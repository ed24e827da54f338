/**
 * HTTP/1.1 on Bun's sockets for the bench's clients: prepared requests written straight to a
 * kept-alive socket, answers read only as far as a client needs them. The clients share the
 * machine's two cores with the services they measure, and Bun's fetch hands every request and
 * every chunk of an answer between the caller's thread and its own HTTP thread: at one request
 * every 20 ms, a request reached a bare `Bun.serve` handler ~0.2 ms after fetch was called and
 * ~0.04 ms after a socket write, and an SSE event reached a reader through fetch ~0.1 ms later
 * than off a socket. The latency workloads time Taskcast's path, not that hand-off.
 */
import type { Socket } from 'bun'

const headEnd = Buffer.from('\r\n\r\n')
const chunkedEnd = Buffer.from('\r\n0\r\n\r\n')

/** A request's bytes, with a JSON body when there is one. */
export function requestBytes(method: string, url: URL, path: string, headers: Record<string, string>, body?: unknown): Buffer {
  const json = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${url.host}`, ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)]
  if (json) lines.push('Content-Type: application/json', `Content-Length: ${json.length}`)
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`)
  return json ? Buffer.concat([head, json]) : head
}

export interface AnswerHead {
  status: number
  /** Where the body starts. */
  bodyAt: number
  /** The whole answer's length, head and body; -1 for a chunked body. */
  length: number
}

/** An answer's head once it has all arrived: its status, and its length (Content-Length, or chunked). */
export function readHead(received: Buffer): AnswerHead | null {
  const end = received.indexOf(headEnd)
  if (end < 0) return null
  const head = received.toString('latin1', 0, end)
  const contentLength = /\r\ncontent-length: *(\d+)/i.exec(head)
  return {
    status: Number(head.slice(9, 12)),
    bodyAt: end + 4,
    length: contentLength ? end + 4 + Number(contentLength[1]) : /\r\ntransfer-encoding: *chunked/i.test(head) ? -1 : end + 4,
  }
}

/** Whether an answer whose head is `head` has all arrived in `received`. */
export const answerComplete = (head: AnswerHead, received: Buffer) =>
  head.length === -1 ? received.subarray(-chunkedEnd.length).equals(chunkedEnd) : received.length >= head.length

/** An answer's status, and its body when it has a length (the API's JSON answers do); null if chunked. */
export interface Answer {
  status: number
  body: string | null
}

interface Exchange {
  received: Buffer
  head: AnswerHead | null
  answered: ((answer: Answer) => void) | null
  failed: ((error: Error) => void) | null
}

/**
 * Kept-alive connections to one server, each carrying one request at a time; a request sent while
 * every connection waits for an answer opens another. The caller stamps its send time just before
 * `send`, which writes at once on a connection already open.
 */
export class KeptAlive {
  private readonly idle: Array<Socket<Exchange>> = []

  constructor(private readonly url: URL) {}

  async send(request: Buffer): Promise<Answer> {
    const socket = this.idle.pop() ?? await this.open()
    const answer = new Promise<Answer>((resolve, reject) => {
      Object.assign(socket.data, { received: Buffer.alloc(0), head: null, answered: resolve, failed: reject })
    })
    socket.write(request)
    const done = await answer
    this.idle.push(socket)
    return done
  }

  private open(): Promise<Socket<Exchange>> {
    const idle = this.idle
    return Bun.connect<Exchange>({
      hostname: this.url.hostname,
      port: Number(this.url.port),
      data: { received: Buffer.alloc(0), head: null, answered: null, failed: null },
      socket: {
        data(socket, chunk) {
          const exchange = socket.data
          exchange.received = Buffer.concat([exchange.received, chunk])
          exchange.head ??= readHead(exchange.received)
          if (!exchange.head || !answerComplete(exchange.head, exchange.received)) return
          const { status, bodyAt, length } = exchange.head
          const body = length === -1 ? null : exchange.received.toString('utf8', bodyAt, length)
          exchange.answered?.({ status, body })
          exchange.answered = exchange.failed = null
        },
        close(socket) {
          if (idle.includes(socket)) idle.splice(idle.indexOf(socket), 1) // closed by the server while idle
          socket.data.failed?.(new Error('the connection closed before the answer'))
        },
        error(socket, error) {
          socket.data.failed?.(error)
        },
      },
    })
  }
}

/**
 * Opens an event stream (GET `path`, which carries its token, as a task's events link does) on a
 * socket of its own and hands `onText` its body as it arrives, de-chunked; resolves with the
 * status once the stream ends (at once if the answer is not a 200 with a chunked body).
 */
export async function eventStream(url: URL, path: string, onText: (text: string) => void): Promise<number> {
  const decoder = new TextDecoder()
  let received = Buffer.alloc(0)
  let head: AnswerHead | null = null
  /** Bytes left of the chunk being read; null while reading a chunk's size line. */
  let chunkLeft: number | null = null
  let ended!: (status: number) => void
  const end = new Promise<number>((resolve) => (ended = resolve))
  /** Consumes whole chunks from `received`; false once the last (empty) chunk is read. */
  const readChunks = (): boolean => {
    for (;;) {
      if (chunkLeft === null) {
        const lineEnd = received.indexOf('\r\n')
        if (lineEnd < 0) return true
        chunkLeft = parseInt(received.toString('latin1', 0, lineEnd), 16)
        received = received.subarray(lineEnd + 2)
        if (chunkLeft === 0) return false
      }
      if (received.length < chunkLeft + 2) return true // the chunk and its CRLF
      onText(decoder.decode(received.subarray(0, chunkLeft), { stream: true }))
      received = received.subarray(chunkLeft + 2)
      chunkLeft = null
    }
  }
  const socket = await Bun.connect({
    hostname: url.hostname,
    port: Number(url.port),
    socket: {
      data(socket, chunk) {
        received = received.length ? Buffer.concat([received, chunk]) : Buffer.from(chunk)
        if (!head) {
          head = readHead(received)
          if (!head) return
          received = received.subarray(head.bodyAt)
          if (head.status !== 200 || head.length !== -1) return void (socket.end(), ended(head.status))
        }
        if (!readChunks()) (socket.end(), ended(head.status))
      },
      close() {
        ended(head?.status ?? 0)
      },
      error() {},
    },
  })
  socket.write(requestBytes('GET', url, path, { Accept: 'text/event-stream' }))
  return end
}
