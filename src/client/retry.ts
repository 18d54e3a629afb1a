/**
 * The retry layer: which failures are worth another try, how long to wait before it, and the
 * wait itself. Failover between the copies of a file is the client's business; this module only
 * spaces the rounds out.
 */
import { isNeedleClientError, type NeedleClientError } from './errors.js'

/** No single wait between attempts is longer than this, whatever the attempt number. */
export const BACKOFF_MS_MAX = 2000

/**
 * The wait before retry number `attempt` (0 for the first retry): exponential from baseMs, with
 * "equal jitter" (half fixed, half random) so that clients that failed together do not come
 * back together, and never zero.
 */
export function backoffMs(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(BACKOFF_MS_MAX, baseMs * 2 ** Math.min(attempt, 20))
  return Math.max(1, Math.round(ceiling / 2 + random() * (ceiling / 2)))
}

/** Retry-After as milliseconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3); undefined otherwise. */
export function parseRetryAfter(value: string | string[] | undefined, nowMs = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value
  if (text === undefined) return undefined
  const trimmed = text.trim()
  if (/^[0-9]{1,9}$/.test(trimmed)) return Number(trimmed) * 1000
  const at = Date.parse(trimmed)
  return Number.isFinite(at) ? Math.max(0, at - nowMs) : undefined
}

/** A failure that another attempt (at the same or another server) may get past. */
export function isTransient(err: unknown): err is NeedleClientError {
  return isNeedleClientError(err) && err.retryable
}

/**
 * Sleeps ms, or less: rejects at once with signal's reason when the caller aborts. Never keeps
 * the process alive by itself.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason)
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
