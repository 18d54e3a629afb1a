/**
 * Calls between the servers of a cluster (heartbeats, replication, volume admin, lookups): undici
 * with keep-alive pools, a deadline on every call and a bound on every answer read.
 */
import { Agent, request, type Dispatcher } from 'undici'
import { NeedleError } from './errors.js'

export interface PeerAgentOptions {
  /** Connections per peer at most. */
  readonly connections: number
  /** How long an idle connection stays open. */
  readonly keepAliveTimeoutMs?: number
}

export function createPeerAgent(o: PeerAgentOptions): Agent {
  return new Agent({
    connections: o.connections,
    keepAliveTimeout: o.keepAliveTimeoutMs ?? 30_000,
    keepAliveMaxTimeout: 60_000,
    pipelining: 1,
  })
}

export interface PeerCall {
  readonly method?: Dispatcher.HttpMethod
  readonly headers?: Record<string, string>
  readonly body?: Buffer | string
  /** The whole call (connect, send, answer) must finish within this. */
  readonly timeoutMs: number
  /** Bytes of the answer read at most; more is an error. */
  readonly answerBytesMax?: number
}

export interface PeerAnswer {
  readonly statusCode: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
}

const ANSWER_BYTES_MAX = 4 * 1024 * 1024

/**
 * One call to another server. Any failure to get a whole answer in time (refused, reset,
 * timed out, too long) is NS_ERR_PEER_UNREACHABLE; an answer with any status is returned.
 */
export async function callPeer(dispatcher: Dispatcher, url: string, call: PeerCall): Promise<PeerAnswer> {
  const bytesMax = call.answerBytesMax ?? ANSWER_BYTES_MAX
  const signal = AbortSignal.timeout(call.timeoutMs)
  try {
    const res = await request(url, {
      dispatcher,
      method: call.method ?? 'GET',
      headers: call.headers,
      body: call.body,
      signal,
      headersTimeout: call.timeoutMs,
      bodyTimeout: call.timeoutMs,
    })
    const chunks: Buffer[] = []
    let bytes = 0
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      bytes += chunk.length
      if (bytes > bytesMax) {
        res.body.destroy()
        throw new Error(`the answer is longer than ${bytesMax} bytes`)
      }
      chunks.push(chunk)
    }
    return { statusCode: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }
  } catch (err) {
    const why = signal.aborted ? `no answer within ${call.timeoutMs} ms` : (err as Error).message
    throw new NeedleError('NS_ERR_PEER_UNREACHABLE', `${call.method ?? 'GET'} ${url}: ${why}`, { cause: err })
  }
}

/** The JSON body of an answer, or NS_ERR_BAD_GATEWAY. */
export function answerJson<T>(answer: PeerAnswer, what: string): T {
  try {
    return JSON.parse(answer.body.toString('utf8')) as T
  } catch {
    throw new NeedleError('NS_ERR_BAD_GATEWAY', `${what} answered ${answer.statusCode} with a body that is not JSON`)
  }
}

/** The `error` and `code` of an error answer, for messages. */
export function answerError(answer: PeerAnswer): { error: string; code: string | undefined } {
  try {
    const body = JSON.parse(answer.body.toString('utf8')) as { error?: unknown; code?: unknown }
    return { error: typeof body.error === 'string' ? body.error : `status ${answer.statusCode}`, code: typeof body.code === 'string' ? body.code : undefined }
  } catch {
    return { error: `status ${answer.statusCode}`, code: undefined }
  }
}

/** `http://host:port` for a server address given as `host:port` or a URL. */
export function originOf(address: string): string {
  return /^https?:\/\//.test(address) ? address.replace(/\/+$/, '') : `http://${address}`
}
