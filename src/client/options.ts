/**
 * The client's options: one interface, frozen defaults, and one function that checks every field
 * once and names the wrong one (NS_ERR_BAD_OPTION).
 */
import type { Dispatcher } from 'undici'
import { NeedleClientError } from './errors.js'

export interface NeedleClientOptions {
  /** The master, `http://host:port` (or `host:port`). */
  readonly master: string
  /** The cluster secret: needed for undelete, and for batch delete on a secured cluster. */
  readonly secret?: string
  /** The whole of one call (every attempt, failover and wait between them) ends within this. Default 10 000. */
  readonly timeoutMs?: number
  /**
   * One request to one data server during a read, delete or undelete; past it the next copy is
   * tried. Default: a third of timeoutMs, so that every copy of a file can be tried in time.
   */
  readonly attemptTimeoutMs?: number
  /** Retries of idempotent calls (GET, HEAD, lookup, delete, undelete), and new fids for a failed upload. Default 3. */
  readonly retries?: number
  /** Backoff base: the first retry waits about this, doubling, with jitter. Default 50. */
  readonly retryBaseMs?: number
  /** How long the copies of a volume are remembered. Default 60 000. */
  readonly locationTtlMs?: number
  /** Volumes whose copies are remembered at most (least recently used go first). Default 100 000. */
  readonly locationCacheMax?: number
  /** Keep-alive connections per server at most. Default 32. */
  readonly connections?: number
  /** Largest file uploaded or downloaded; a larger one is NS_ERR_BODY_TOO_LARGE. Default 256 MiB. */
  readonly fileBytesMax?: number
  /** Uploads uploadMany runs at once unless told otherwise. Default 8. */
  readonly uploadConcurrency?: number
  /** Fids in one `POST /delete` at most: the data servers' `--batch-delete-max` or less. Default 1000. */
  readonly deleteBatchMax?: number
  /** A dispatcher to use instead of the client's own undici Agent; close() leaves it open. */
  readonly dispatcher?: Dispatcher
  /** The clock of the location cache, in milliseconds (a seam for tests). Default Date.now. */
  readonly now?: () => number
  /** Numbers in [0, 1) for the order copies are tried in and backoff jitter (a seam for tests). Default Math.random. */
  readonly random?: () => number
}

export interface ResolvedClientOptions {
  readonly master: string
  readonly secret: string | undefined
  readonly timeoutMs: number
  readonly attemptTimeoutMs: number
  readonly retries: number
  readonly retryBaseMs: number
  readonly locationTtlMs: number
  readonly locationCacheMax: number
  readonly connections: number
  readonly fileBytesMax: number
  readonly uploadConcurrency: number
  readonly deleteBatchMax: number
  readonly dispatcher: Dispatcher | undefined
  readonly now: () => number
  readonly random: () => number
}

export const CLIENT_DEFAULTS = Object.freeze({
  timeoutMs: 10_000,
  retries: 3,
  retryBaseMs: 50,
  locationTtlMs: 60_000,
  locationCacheMax: 100_000,
  connections: 32,
  fileBytesMax: 256 * 1024 * 1024,
  uploadConcurrency: 8,
  deleteBatchMax: 1000,
})

function bad(name: string, rule: string, value: unknown): never {
  const shown = typeof value === 'function' ? 'a function' : JSON.stringify(value)
  throw new NeedleClientError('NS_ERR_BAD_OPTION', `NeedleClient option ${name} must be ${rule} (got ${shown})`)
}

function int(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) bad(name, `an integer from ${min} to ${max}`, value)
  return value
}

function fn<T>(name: string, value: unknown, fallback: T): T {
  if (value === undefined) return fallback
  if (typeof value !== 'function') bad(name, 'a function', value)
  return value as T
}

/** `http://host:port` of the master, from a URL or `host:port`. */
function masterOrigin(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) bad('master', 'a URL such as http://127.0.0.1:9333', value)
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`
  let url: URL
  try {
    url = new URL(text)
  } catch {
    bad('master', 'a URL such as http://127.0.0.1:9333', value)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') bad('master', 'an http or https URL', value)
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') bad('master', 'a URL without path, query or fragment', value)
  return url.origin
}

/** Checks every option once, applies the defaults, and freezes the result. */
export function resolveClientOptions(o: NeedleClientOptions): ResolvedClientOptions {
  if (o === null || typeof o !== 'object') throw new TypeError('NeedleClient needs an options object with at least { master }')
  const timeoutMs = int('timeoutMs', o.timeoutMs, CLIENT_DEFAULTS.timeoutMs, 1, 3_600_000)
  const attemptTimeoutMs = int('attemptTimeoutMs', o.attemptTimeoutMs, Math.max(1, Math.ceil(timeoutMs / 3)), 1, timeoutMs)
  if (o.secret !== undefined && (typeof o.secret !== 'string' || o.secret.length === 0)) bad('secret', 'a non-empty string', o.secret)
  if (o.dispatcher !== undefined && (o.dispatcher === null || typeof (o.dispatcher as Dispatcher).dispatch !== 'function')) {
    bad('dispatcher', 'an undici Dispatcher', o.dispatcher)
  }
  return Object.freeze({
    master: masterOrigin(o.master),
    secret: o.secret,
    timeoutMs,
    attemptTimeoutMs,
    retries: int('retries', o.retries, CLIENT_DEFAULTS.retries, 0, 100),
    retryBaseMs: int('retryBaseMs', o.retryBaseMs, CLIENT_DEFAULTS.retryBaseMs, 1, 60_000),
    locationTtlMs: int('locationTtlMs', o.locationTtlMs, CLIENT_DEFAULTS.locationTtlMs, 0, 86_400_000),
    locationCacheMax: int('locationCacheMax', o.locationCacheMax, CLIENT_DEFAULTS.locationCacheMax, 1, 100_000_000),
    connections: int('connections', o.connections, CLIENT_DEFAULTS.connections, 1, 10_000),
    fileBytesMax: int('fileBytesMax', o.fileBytesMax, CLIENT_DEFAULTS.fileBytesMax, 0, 2 ** 32),
    uploadConcurrency: int('uploadConcurrency', o.uploadConcurrency, CLIENT_DEFAULTS.uploadConcurrency, 1, 1024),
    deleteBatchMax: int('deleteBatchMax', o.deleteBatchMax, CLIENT_DEFAULTS.deleteBatchMax, 1, 100_000),
    dispatcher: o.dispatcher,
    now: fn('now', o.now, Date.now),
    random: fn('random', o.random, Math.random),
  })
}
