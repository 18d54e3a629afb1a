/**
 * One request to one server, with a deadline, a bounded answer and the client's error codes.
 * undici's failures (refused, reset, timed out, aborted) all become NS_ERR_PEER_UNREACHABLE
 * with the original as cause; the caller's own abort is passed through as its reason.
 */
import type { Readable } from 'node:stream'
import { request, type Dispatcher } from 'undici'
import { NeedleClientError } from './errors.js'

/** The part of a call every request of it shares: its deadline, the caller's signal, a name for messages. */
export interface CallContext {
  /** What the call is, for messages: `download 3,01637037d6`. */
  readonly what: string
  /** Date.now() past which no request of the call may run. */
  readonly deadlineMs: number
  readonly timeoutMs: number
  /** The caller's signal, if any: its abort ends the call with its reason. */
  readonly signal: AbortSignal | undefined
  /** The file id the call is about, for errors. */
  readonly fid?: string
}

export interface RequestSpec {
  readonly method: Dispatcher.HttpMethod
  readonly url: string
  readonly headers?: Record<string, string>
  readonly body?: Buffer | string
  /** This request may take at most this long (and never past the call's deadline). */
  readonly attemptTimeoutMs?: number
}

/** An answer whose body is still to be read. release() stops its timer; call it once the body is read or handed on. */
export interface OpenAnswer {
  readonly statusCode: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Readable
  readonly url: string
  /** The request's own time limit, when it has passed (the body was cut short by it). */
  timedOutMs(): number | undefined
  release(): void
}

export interface Answer {
  readonly statusCode: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
  readonly url: string
}

/** JSON answers and error bodies are read up to this; a longer one is NS_ERR_BAD_GATEWAY. */
export const JSON_BYTES_MAX = 1024 * 1024

/** Requests that failed before any byte reached the server: safe to send elsewhere, whatever they do. */
const neverSent = new WeakSet<object>()

/** True when err says the request never reached the server (the connection itself failed). */
export function wasNeverSent(err: unknown): boolean {
  return typeof err === 'object' && err !== null && neverSent.has(err)
}

const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT'])

export function remainingMs(ctx: CallContext): number {
  return ctx.deadlineMs - Date.now()
}

function deadlineError(ctx: CallContext, method: string, url: string): NeedleClientError {
  return new NeedleClientError('NS_ERR_PEER_UNREACHABLE', `${ctx.what}: ${method} ${url}: no time left of the call's ${ctx.timeoutMs} ms`, { url, fid: ctx.fid })
}

/** Maps a failure of undici (or of reading a body) to the client's error; the caller's abort stays itself. */
export function transportError(ctx: CallContext, spec: RequestSpec, err: unknown, timedOutMs: number | undefined): unknown {
  if (ctx.signal?.aborted) return ctx.signal.reason
  if (err instanceof NeedleClientError) return err
  const code = (err as { code?: unknown } | undefined)?.code
  let why: string
  if (timedOutMs !== undefined) {
    why = `no answer within ${timedOutMs} ms`
  } else {
    why = `${typeof code === 'string' ? `${code} ` : ''}${(err as Error | undefined)?.message ?? String(err)}`
  }
  const mapped = new NeedleClientError('NS_ERR_PEER_UNREACHABLE', `${ctx.what}: ${spec.method} ${spec.url}: ${why}`, { url: spec.url, fid: ctx.fid, cause: err })
  if (typeof code === 'string' && CONNECT_FAILURES.has(code)) neverSent.add(mapped)
  return mapped
}

/**
 * Sends one request and waits for the status line and headers. The request's timer covers the
 * body too until release() is called: a buffered read releases after the last byte, a stream is
 * released when handed to the caller (from then on undici's bodyTimeout bounds each pause).
 */
export async function openRequest(dispatcher: Dispatcher, ctx: CallContext, spec: RequestSpec): Promise<OpenAnswer> {
  if (ctx.signal?.aborted) throw ctx.signal.reason
  const leftMs = remainingMs(ctx)
  if (leftMs <= 0) throw deadlineError(ctx, spec.method, spec.url)
  const timeoutMs = Math.max(1, Math.min(spec.attemptTimeoutMs ?? leftMs, leftMs))
  const controller = new AbortController()
  let timedOutMs: number | undefined
  const timer = setTimeout(() => {
    timedOutMs = timeoutMs
    controller.abort()
  }, timeoutMs)
  const onAbort = () => controller.abort()
  ctx.signal?.addEventListener('abort', onAbort, { once: true })
  let released = false
  const release = () => {
    if (released) return
    released = true
    clearTimeout(timer)
    ctx.signal?.removeEventListener('abort', onAbort)
  }
  try {
    const res = await request(spec.url, {
      dispatcher,
      method: spec.method,
      headers: spec.headers,
      body: spec.body,
      signal: controller.signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    })
    const body = res.body as unknown as Readable
    return {
      statusCode: res.statusCode,
      headers: res.headers,
      body,
      url: spec.url,
      timedOutMs: () => timedOutMs,
      release,
    }
  } catch (err) {
    release()
    throw transportError(ctx, spec, err, timedOutMs)
  }
}

/**
 * Reads an open answer's body into one Buffer of at most bytesMax bytes. A longer body is
 * tooLarge(); a body shorter than its Content-Length is NS_ERR_BAD_GATEWAY, never data.
 */
export async function readBody(ctx: CallContext, spec: RequestSpec, open: OpenAnswer, bytesMax: number, tooLarge: () => NeedleClientError): Promise<Buffer> {
  // The Content-Length of an answer to HEAD is the length a GET would get; it has no body.
  const declared = spec.method === 'HEAD' ? 0 : contentLength(open.headers)
  try {
    if (declared !== undefined && declared > bytesMax) throw tooLarge()
    const chunks: Buffer[] = []
    let bytes = 0
    for await (const chunk of open.body as AsyncIterable<Buffer>) {
      bytes += chunk.length
      if (bytes > bytesMax) throw tooLarge()
      chunks.push(chunk)
    }
    if (declared !== undefined && bytes !== declared) {
      throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${spec.method} ${spec.url}: the answer ended after ${bytes} of its ${declared} bytes`, { url: spec.url, fid: ctx.fid })
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes)
  } catch (err) {
    destroyBody(open.body)
    throw transportError(ctx, spec, err, open.timedOutMs())
  } finally {
    open.release()
  }
}

const ignore = (): void => {}

/** Destroys a body we stop reading; its "aborted" error is expected and must not go unhandled. */
export function destroyBody(body: Readable): void {
  body.on('error', ignore)
  body.destroy()
}

/** The part of a body left unread after an error answer: a little is read so the connection stays reusable. */
const DISCARD_BYTES_MAX = 64 * 1024

/** Drops an answer's body without keeping it, and releases its timer. */
export function discard(open: OpenAnswer): void {
  open.release()
  open.body.on('error', ignore)
  const dump = (open.body as Readable & { dump?: (o: { limit: number }) => Promise<void> }).dump
  if (typeof dump === 'function') dump.call(open.body, { limit: DISCARD_BYTES_MAX }).catch(ignore)
  else open.body.destroy()
}

/** One whole request: the answer with its body read (at most bytesMax). */
export async function sendRequest(dispatcher: Dispatcher, ctx: CallContext, spec: RequestSpec, bytesMax = JSON_BYTES_MAX): Promise<Answer> {
  const open = await openRequest(dispatcher, ctx, spec)
  const body = await readBody(ctx, spec, open, bytesMax, () => new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${spec.method} ${spec.url}: the answer is longer than ${bytesMax} bytes`, { url: spec.url, fid: ctx.fid }))
  return { statusCode: open.statusCode, headers: open.headers, body, url: open.url }
}

/** The Content-Length of an answer, or undefined when absent or malformed. */
export function contentLength(headers: Record<string, string | string[] | undefined>): number | undefined {
  const value = headers['content-length']
  const text = Array.isArray(value) ? value[0] : value
  return text !== undefined && /^[0-9]{1,15}$/.test(text) ? Number(text) : undefined
}

/** The first value of a header. */
export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** Parses a JSON answer; NS_ERR_BAD_GATEWAY when it is not JSON. */
export function parseJson<T>(ctx: CallContext, answer: Answer): T {
  try {
    return JSON.parse(answer.body.toString('utf8')) as T
  } catch {
    throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${answer.url} answered ${answer.statusCode} with a body that is not JSON`, { url: answer.url, fid: ctx.fid, statusCode: answer.statusCode })
  }
}
