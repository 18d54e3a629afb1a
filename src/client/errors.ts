/**
 * The SDK's one error class. Its `code` comes from the project's code space
 * (src/common/errors.ts): an answer from a server keeps the server's code and HTTP status; a
 * failure the client detects itself (no answer, a malformed fid, a file over the size limit, an
 * answer that makes no sense) gets a code of its own and no status.
 */
import { ErrorCodes, type ErrorCode } from '../common/errors.js'

export type { ErrorCode } from '../common/errors.js'

export interface NeedleClientErrorDetails {
  /** The HTTP status of the answer that carried the error; undefined when none came. */
  readonly statusCode?: number | undefined
  /** The file id the call was about. */
  readonly fid?: string | undefined
  /** The URL of the request that failed. */
  readonly url?: string | undefined
  /** Requests made before giving up (1 when the first one failed for good). */
  readonly attempts?: number
  /** What the server asked for in Retry-After, in milliseconds. */
  readonly retryAfterMs?: number | undefined
  readonly cause?: unknown
}

export class NeedleClientError extends Error {
  /** A stable code, `NS_ERR_…`: the server's, or the client's own for failures without an answer. */
  readonly code: string
  /** The HTTP status of the server's answer; undefined when the client failed before one came. */
  readonly statusCode: number | undefined
  readonly fid: string | undefined
  readonly url: string | undefined
  readonly retryAfterMs: number | undefined
  /** Requests made for the call before this error ended it. */
  attempts: number

  constructor(code: ErrorCode | (string & {}), message: string, details: NeedleClientErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'NeedleClientError'
    this.code = code
    this.statusCode = details.statusCode
    this.fid = details.fid
    this.url = details.url
    this.retryAfterMs = details.retryAfterMs
    this.attempts = details.attempts ?? 1
  }

  /**
   * True when the same call may succeed later: no answer came, or the server answered a 5xx
   * (overloaded, not ready, a replica missing). A 4xx is the request's fault and is final.
   */
  get retryable(): boolean {
    if (this.statusCode !== undefined) return this.statusCode >= 500
    return this.code === 'NS_ERR_PEER_UNREACHABLE' || this.code === 'NS_ERR_BAD_GATEWAY'
  }
}

/**
 * True for a NeedleClientError, also one thrown by another copy of this package (the check
 * looks at the shape, not the prototype).
 */
export function isNeedleClientError(err: unknown): err is NeedleClientError {
  return err instanceof Error && err.name === 'NeedleClientError' && typeof (err as NeedleClientError).code === 'string'
}

/** True when code is one the project declares (a server may answer newer ones). */
export function isKnownCode(code: string): code is ErrorCode {
  return Object.hasOwn(ErrorCodes, code)
}

export interface AnswerErrorInput {
  readonly method: string
  readonly url: string
  readonly statusCode: number
  readonly body: Buffer
  /** What the call is, for the message: `download 3,01637037d6`. */
  readonly what: string
  readonly fid?: string | undefined
  readonly retryAfterMs?: number | undefined
}

/**
 * Codes for answers that carry none (a HEAD answer has no body): only where the status alone
 * says what happened; anything else from a server that does not speak JSON is a bad gateway.
 */
const CODE_BY_STATUS: Readonly<Record<number, ErrorCode>> = {
  400: 'NS_ERR_BAD_REQUEST',
  401: 'NS_ERR_UNAUTHORIZED',
  404: 'NS_ERR_NOT_FOUND',
}

/** The error for a non-success answer: the server's own code and message when it sent them. */
export function answerError(a: AnswerErrorInput): NeedleClientError {
  let code: string | undefined
  let message: string | undefined
  try {
    const parsed = JSON.parse(a.body.toString('utf8')) as { code?: unknown; error?: unknown }
    if (typeof parsed.code === 'string' && /^NS_ERR_[A-Z0-9_]+$/.test(parsed.code)) code = parsed.code
    if (typeof parsed.error === 'string') message = parsed.error
  } catch {
    // Not JSON: an answer without a body (HEAD), a proxy's page, or not our server at all.
  }
  if (code === undefined && a.body.length === 0) code = CODE_BY_STATUS[a.statusCode]
  const detail = message ?? (a.body.length > 0 ? a.body.subarray(0, 200).toString('utf8') : 'no body')
  return new NeedleClientError(code ?? 'NS_ERR_BAD_GATEWAY', `${a.what}: ${a.method} ${a.url} answered ${a.statusCode}${code ? ` ${code}` : ''}: ${detail}`, {
    statusCode: a.statusCode,
    url: a.url,
    fid: a.fid,
    retryAfterMs: a.retryAfterMs,
  })
}

/** Sets the number of requests a call made on the error that ends it. */
export function withAttempts<E>(err: E, attempts: number): E {
  if (isNeedleClientError(err)) err.attempts = Math.max(err.attempts, attempts)
  return err
}
