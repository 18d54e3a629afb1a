/**
 * NeedleClient: the SDK. It asks the master where things go (assign) and where they are
 * (lookup), and talks to the data servers directly.
 *
 * Invariants:
 * - Every call has a deadline (`timeoutMs`); every request of it a time limit within that
 *   deadline; every answer read into memory a byte limit.
 * - Reads, deletes and undeletes try the copies of a volume in random order and move on after
 *   a failure to answer, a 5xx or a sign of a stale location; a 404 from one copy is checked
 *   against the others once. When every copy of a cached location failed, the location is asked
 *   of the master again, once.
 * - An upload's body is sent once per fid: after a failure that may have stored it, the call
 *   fails; only failures that stored nothing (the data server says so, or the connection never
 *   opened) get a new fid and another try.
 * - The client reaches data servers at their public address (`publicUrl`).
 */
import { createHash } from 'node:crypto'
import { Transform, type Readable, type TransformCallback } from 'node:stream'
import { Agent, type Dispatcher } from 'undici'
import { parseFid, parseVolumeId, VOLUME_ID_MAX, type FileId } from '../common/fid.js'
import { mimeFromName } from '../common/mime.js'
import { originOf } from '../common/peer.js'
import { signToken } from '../common/token.js'
import { collect, type UploadData } from './body.js'
import { NeedleClientError, answerError, isNeedleClientError, withAttempts } from './errors.js'
import {
  JSON_BYTES_MAX,
  contentLength,
  destroyBody,
  discard,
  header,
  openRequest,
  parseJson,
  readBody,
  remainingMs,
  sendRequest,
  transportError,
  wasNeverSent,
  type Answer,
  type CallContext,
  type OpenAnswer,
  type RequestSpec,
} from './http.js'
import { LocationCache, type Location } from './location-cache.js'
import { resolveClientOptions, type NeedleClientOptions, type ResolvedClientOptions } from './options.js'
import { backoffMs, isTransient, parseRetryAfter, sleep } from './retry.js'

export type { UploadData } from './body.js'
export type { Location } from './location-cache.js'

/** Per-call options every method takes. */
export interface CallOptions {
  /** Aborting it ends the call at once with the signal's reason. */
  readonly signal?: AbortSignal
  /** This call's deadline instead of the client's timeoutMs. */
  readonly timeoutMs?: number
}

/** One copy's compaction, as /vol/vacuum reports it. */
export interface CompactedCopy {
  readonly volume: number
  readonly url: string
  /** 200 when it compacted; otherwise the copy's error status, with code and error. */
  readonly status: number
  readonly beforeBytes?: number
  readonly afterBytes?: number
  readonly code?: string
  readonly error?: string
}

export interface CompactReport {
  /** The volumes compacted (or tried). */
  readonly volumes: readonly number[]
  readonly copies: readonly CompactedCopy[]
}

export interface UploadOptions extends CallOptions {
  /** The file's media type; default: from fileName's extension, else none (served as application/octet-stream). */
  readonly contentType?: string
  /** The file's name, served in Content-Disposition. */
  readonly fileName?: string
  /** Replica placement (`xyz`, e.g. `002`); default: the master's. */
  readonly replication?: string
  readonly collection?: string
  /** Share the stored copy of identical bytes when the master knows one (default true). */
  readonly dedup?: boolean
}

export interface UploadResult {
  readonly fid: string
  /** `http://<publicUrl>/<fid>` of the data server that took the upload. */
  readonly url: string
  readonly size: number
  /** MD5 of the bytes, lowercase hex. */
  readonly eTag: string
  /** True when the file shares the bytes of an identical file stored before. */
  readonly deduplicated: boolean
}

export interface FileInfo {
  readonly size: number
  readonly contentType: string | undefined
  readonly eTag: string | undefined
  readonly lastModified: Date | undefined
  readonly fileName: string | undefined
}

export interface DeleteResult {
  readonly fid: string
  readonly ok: boolean
  readonly size?: number
  readonly code?: string
  readonly error?: string
}

export type UploadItem = { readonly data: UploadData } & UploadOptions

export interface UploadManyOptions {
  /** Uploads at once (default: the client's uploadConcurrency, 8). */
  readonly concurrency?: number
  /** Called as each item finishes, in completion order; a throw stops the batch. */
  readonly onResult?: (index: number, result: UploadResult | NeedleClientError) => void
  /** Aborting it stops the batch; items without a signal of their own get this one. */
  readonly signal?: AbortSignal
}

/** Counters of what the client did, for tests and monitoring. */
export interface ClientStats {
  /** `/dir/lookup` requests sent to the master. */
  readonly masterLookups: number
  /** Reads that found their volume's copies in the location cache. */
  readonly cacheHits: number
  /** Expired cache entries used because the master did not answer. */
  readonly staleHits: number
  /** Times a call moved on to another copy after one failed. */
  readonly failovers: number
  /** Retries after a backoff (every kind of call). */
  readonly retries: number
  /** Dedup links the data server refused (the stored copy was gone); a full upload followed. */
  readonly dedupMisses: number
}

/** Server answers to a file upload. */
interface StoredAnswer {
  name?: unknown
  size?: unknown
  eTag?: unknown
  deduplicated?: unknown
}

interface Assigned {
  readonly fid: string
  readonly url: string
  readonly publicUrl: string
  readonly auth: string | undefined
  readonly dedupOf: string | undefined
}

interface Located {
  readonly locations: readonly Location[]
  /** True when they came from the cache (asking the master again may help). */
  readonly fromCache: boolean
}

type Locate = (refresh: boolean) => Promise<Located>

/** A server-side answer that means "nothing was stored, try a new fid". */
const REASSIGN_CODES = new Set([
  'NS_ERR_REPLICATION_FAILED',
  'NS_ERR_VOLUME_UNAVAILABLE',
  'NS_ERR_VOLUME_READ_ONLY',
  'NS_ERR_VOLUME_NOT_FOUND',
  'NS_ERR_VOLUME_CLOSED',
  'NS_ERR_OVERLOADED',
  'NS_ERR_DISK_FULL',
])

/** Volumes whose batch deletes run at once. */
const DELETE_VOLUMES_AT_ONCE = 4
/** Delete tokens fetched from the master at once. */
const TOKEN_LOOKUPS_AT_ONCE = 8
/** Life of a delete token the client signs itself with the cluster secret. */
const TOKEN_TTL_SECONDS = 120
const NAME_BYTES_MAX = 255
/** A dedup reference longer than this is not one the master made. */
const DEDUP_REF_CHARS_MAX = 1024
const MD5_ETAG = /^(?:W\/)?"?([0-9a-f]{32})"?$/

function isMissing(err: NeedleClientError): boolean {
  return err.statusCode === 404 && err.code === 'NS_ERR_NOT_FOUND'
}

/** The copy asked does not hold the volume (it moved, or the cache is stale). */
function isStale(err: NeedleClientError): boolean {
  return err.statusCode !== undefined && (err.code === 'NS_ERR_VOLUME_NOT_FOUND' || (err.statusCode >= 300 && err.statusCode < 400))
}

function badFid(what: string, fid: unknown, cause: unknown): NeedleClientError {
  const why = (cause as Error | undefined)?.message ?? `malformed file id ${JSON.stringify(fid)}`
  return new NeedleClientError('NS_ERR_BAD_FID', `${what}: ${why}`, { fid: typeof fid === 'string' ? fid : undefined, cause })
}

/** Runs worker over items with at most `limit` at once; the first throw rejects after the running ones settle. */
async function forEachLimit<T>(items: readonly T[], limit: number, worker: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  let failed: { err: unknown } | undefined
  const run = async () => {
    while (failed === undefined && next < items.length) {
      const i = next++
      try {
        await worker(items[i]!, i)
      } catch (err) {
        failed ??= { err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run))
  if (failed) throw failed.err
}

function fileNameOf(disposition: string | undefined): string | undefined {
  if (!disposition) return undefined
  const extended = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition)
  if (extended) {
    try {
      return decodeURIComponent(extended[1]!.trim())
    } catch {
      // Fall through to the plain form.
    }
  }
  const plain = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(disposition) ?? /filename\s*=\s*([^;\s]+)/i.exec(disposition)
  return plain ? plain[1]!.replace(/\\(.)/g, '$1') : undefined
}

export interface VerifyVolumeOptions {
  /** Repair what differs (default: only report). */
  readonly repair?: boolean
  /** Disagreements younger than this may be writes still on their way: reported, not repaired (the server's default: 60 s). */
  readonly settleMs?: number
}

/** One copy's problem with one file, in a verify report. */
export interface VerifyReportItem {
  readonly fid: string
  /** The copy (`host:port`) with the problem. */
  readonly copy: string
  readonly problem: 'damaged' | 'missing' | 'mismatch' | 'extra' | 'deleted' | 'lost'
  readonly why: string
  /** What the repair did, or why it failed. */
  readonly repair?: string
}

/** What a data server answers to a verify of a volume (see the README). */
export interface VolumeVerifyReport {
  readonly volume: number
  readonly copies: string[]
  readonly copiesExpected: number
  readonly checked: number
  readonly repair: boolean
  readonly counts: Record<VerifyReportItem['problem'], number>
  readonly damaged: VerifyReportItem[]
  readonly missing: VerifyReportItem[]
  readonly mismatch: VerifyReportItem[]
  readonly extra: VerifyReportItem[]
  readonly deleted: VerifyReportItem[]
  readonly lost: VerifyReportItem[]
  readonly repaired: number
  readonly unrepaired: number
  readonly failed: VerifyReportItem[]
  readonly ok: boolean
}

/** A verify report lists up to 1 000 items per problem: it may be a few MiB. */
const VERIFY_ANSWER_BYTES_MAX = 16 * 1024 * 1024

export class NeedleClient {
  readonly options: ResolvedClientOptions
  readonly #dispatcher: Dispatcher
  readonly #ownsDispatcher: boolean
  readonly #cache: LocationCache
  readonly #stats = { masterLookups: 0, cacheHits: 0, staleHits: 0, failovers: 0, retries: 0, dedupMisses: 0 }
  #closing: Promise<void> | undefined

  constructor(opts: NeedleClientOptions) {
    this.options = resolveClientOptions(opts)
    const o = this.options
    this.#ownsDispatcher = o.dispatcher === undefined
    this.#dispatcher =
      o.dispatcher ??
      new Agent({
        connections: o.connections,
        pipelining: 1,
        keepAliveTimeout: 4000,
        keepAliveMaxTimeout: 60_000,
        headersTimeout: o.timeoutMs,
        bodyTimeout: o.timeoutMs,
        connect: { timeout: o.attemptTimeoutMs },
      })
    this.#cache = new LocationCache({ ttlMs: o.locationTtlMs, entriesMax: o.locationCacheMax, now: o.now })
  }

  /** What the client did so far (a copy). */
  get stats(): ClientStats {
    return { ...this.#stats }
  }

  // ---------------------------------------------------------------------------------------------
  // Uploads.

  async upload(data: UploadData, opts: UploadOptions = {}): Promise<UploadResult> {
    const what = `upload${opts.fileName ? ` of ${JSON.stringify(opts.fileName)}` : ''}`
    this.#checkOpen(what)
    const mime = this.#checkUploadOptions(what, opts)
    // The deadline starts once the bytes are in hand: reading the caller's stream is at its pace.
    const bytes = await collect(data, this.options.fileBytesMax, what)
    const ctx = this.#context(what, opts)
    const md5 = createHash('md5').update(bytes).digest()
    const md5Hex = md5.toString('hex')
    for (let attempt = 1; ; attempt++) {
      const assigned = await this.#assign(ctx, opts, bytes.length, md5Hex)
      const fidCtx: CallContext = { ...ctx, what: `${what} to ${assigned.fid}`, fid: assigned.fid }
      try {
        return await this.#store(fidCtx, assigned, bytes, md5, mime, opts.fileName)
      } catch (err) {
        if (!this.#reassignable(err) || attempt > this.options.retries) throw withAttempts(err, attempt)
        await this.#backoff(ctx, attempt - 1, err)
      }
    }
  }

  /**
   * Uploads every item, at most `concurrency` at once, reading the iterable only as fast as
   * uploads start. Each item's outcome is its result or its NeedleClientError, at its index.
   */
  async uploadMany(items: Iterable<UploadItem>, opts: UploadManyOptions = {}): Promise<(UploadResult | NeedleClientError)[]> {
    this.#checkOpen('uploadMany')
    const concurrency = opts.concurrency ?? this.options.uploadConcurrency
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1024) {
      throw new NeedleClientError('NS_ERR_BAD_OPTION', `uploadMany: concurrency must be an integer from 1 to 1024 (got ${JSON.stringify(concurrency)})`)
    }
    const iterator = items[Symbol.iterator]()
    const results: (UploadResult | NeedleClientError)[] = []
    let nextIndex = 0
    let exhausted = false
    let stop: { err: unknown } | undefined
    const worker = async () => {
      while (!exhausted && stop === undefined) {
        let step: IteratorResult<UploadItem>
        try {
          step = iterator.next()
        } catch (err) {
          stop ??= { err }
          return
        }
        if (step.done) {
          exhausted = true
          return
        }
        const index = nextIndex++
        const item = step.value
        let result: UploadResult | NeedleClientError
        try {
          result = await this.upload(item.data, { ...item, signal: item.signal ?? opts.signal })
        } catch (err) {
          if (opts.signal?.aborted) {
            stop ??= { err: opts.signal.reason }
            return
          }
          result = isNeedleClientError(err)
            ? err
            : new NeedleClientError('NS_ERR_BAD_REQUEST', `upload of item ${index}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
        }
        results[index] = result
        try {
          opts.onResult?.(index, result)
        } catch (err) {
          stop ??= { err }
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    if (stop) throw stop.err
    return results
  }

  #checkUploadOptions(what: string, opts: UploadOptions): string | undefined {
    if (opts === null || typeof opts !== 'object') throw new TypeError('upload options must be an object')
    const { fileName, contentType, replication, collection } = opts
    if (fileName !== undefined && (typeof fileName !== 'string' || Buffer.byteLength(fileName) > NAME_BYTES_MAX || /[\0/\\]/.test(fileName))) {
      throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: fileName must be a string of at most ${NAME_BYTES_MAX} bytes without "/", "\\" or NUL`)
    }
    if (contentType !== undefined && (typeof contentType !== 'string' || contentType.length > NAME_BYTES_MAX || !/^[\x20-\x7e]+$/.test(contentType))) {
      throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: contentType must be printable ASCII of at most ${NAME_BYTES_MAX} characters`)
    }
    if (replication !== undefined && (typeof replication !== 'string' || !/^[0-9]{3}$/.test(replication))) {
      throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: replication must be three digits such as "002"`)
    }
    if (collection !== undefined && typeof collection !== 'string') throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: collection must be a string`)
    return contentType || mimeFromName(fileName)
  }

  async #assign(ctx: CallContext, opts: UploadOptions, size: number, md5Hex: string): Promise<Assigned> {
    const q = ['count=1']
    if (opts.replication) q.push(`replication=${encodeURIComponent(opts.replication)}`)
    if (opts.collection) q.push(`collection=${encodeURIComponent(opts.collection)}`)
    if (opts.dedup !== false) q.push(`md5=${md5Hex}`, `size=${size}`)
    const answer = await this.#masterCall(ctx, { method: 'POST', url: `${this.options.master}/dir/assign?${q.join('&')}` })
    const body = parseJson<Record<string, unknown>>(ctx, answer)
    const { fid, url, publicUrl, auth, dedupOf } = body
    const malformed = (why: string) => new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${answer.url} answered an assignment ${why}: ${answer.body.subarray(0, 200).toString('utf8')}`, { url: answer.url })
    if (typeof fid !== 'string' || typeof url !== 'string' || url.length === 0) throw malformed('without fid or url')
    try {
      parseFid(fid)
    } catch {
      throw malformed('with a malformed fid')
    }
    // dedupOf is opaque to the client: the stored copy's fid, or (on a secured cluster) a reference sealed for this fid.
    if (dedupOf !== undefined && (typeof dedupOf !== 'string' || dedupOf.length === 0 || dedupOf.length > DEDUP_REF_CHARS_MAX)) throw malformed('with a malformed dedupOf')
    if ((auth !== undefined && typeof auth !== 'string') || (publicUrl !== undefined && typeof publicUrl !== 'string')) throw malformed('with malformed fields')
    return {
      fid,
      url,
      publicUrl: typeof publicUrl === 'string' && publicUrl.length > 0 ? publicUrl : url,
      auth: auth as string | undefined,
      dedupOf: dedupOf as string | undefined,
    }
  }

  /** Stores bytes at an assigned fid: a dedup link when the master named a stored copy, else (or when the link misses) the whole file. */
  async #store(ctx: CallContext, a: Assigned, bytes: Buffer, md5: Buffer, mime: string | undefined, fileName: string | undefined): Promise<UploadResult> {
    const origin = originOf(a.publicUrl)
    const md5Hex = md5.toString('hex')
    const auth: Record<string, string> = a.auth ? { authorization: `Bearer ${a.auth}` } : {}
    const name = fileName ? `filename=${encodeURIComponent(fileName)}` : undefined
    if (a.dedupOf !== undefined) {
      const url = `${origin}/${a.fid}?dedupOf=${encodeURIComponent(a.dedupOf)}&md5=${md5Hex}${name ? `&${name}` : ''}`
      const answer = await this.#send(ctx, { method: 'POST', url, headers: { ...auth, ...(mime ? { 'content-type': mime } : {}) }, body: '' })
      if (answer.statusCode === 201) return this.#stored(ctx, a, answer, bytes.length, md5Hex, true)
      const err = this.#answerError(ctx, 'POST', answer)
      if (err.code !== 'NS_ERR_DEDUP_MISS') throw err
      this.#stats.dedupMisses++
    }
    const url = `${origin}/${a.fid}${name ? `?${name}` : ''}`
    const headers = { ...auth, 'content-type': mime ?? 'application/octet-stream', 'content-md5': md5.toString('base64') }
    const answer = await this.#send(ctx, { method: 'POST', url, headers, body: bytes })
    if (answer.statusCode !== 201) throw this.#answerError(ctx, 'POST', answer)
    return this.#stored(ctx, a, answer, bytes.length, md5Hex, false)
  }

  /** The result of a 201, checked against what was sent: a server that stored other bytes is an error, never a success. */
  #stored(ctx: CallContext, a: Assigned, answer: Answer, size: number, md5Hex: string, linked: boolean): UploadResult {
    const body = parseJson<StoredAnswer>(ctx, answer)
    const eTag = typeof body.eTag === 'string' ? body.eTag.replace(/"/g, '') : undefined
    if (body.size !== size || (eTag !== undefined && eTag !== md5Hex)) {
      throw new NeedleClientError(
        'NS_ERR_BAD_GATEWAY',
        `${ctx.what}: ${answer.url} reports ${String(body.size)} bytes with MD5 ${String(eTag)}, but ${size} bytes with MD5 ${md5Hex} were sent`,
        { url: answer.url, fid: a.fid, statusCode: answer.statusCode },
      )
    }
    const deduplicated = typeof body.deduplicated === 'boolean' ? body.deduplicated : linked
    return { fid: a.fid, url: `${originOf(a.publicUrl)}/${a.fid}`, size, eTag: md5Hex, deduplicated }
  }

  #reassignable(err: unknown): boolean {
    if (!isNeedleClientError(err)) return false
    if (err.statusCode !== undefined) return REASSIGN_CODES.has(err.code)
    return wasNeverSent(err)
  }

  // ---------------------------------------------------------------------------------------------
  // Reads.

  /** The whole file, checked: its length against Content-Length and its MD5 against the ETag. */
  async download(fid: string, call?: CallOptions): Promise<Buffer> {
    const { ctx, parsed } = this.#fileCall('download', fid, call)
    return this.#onCopies(ctx, this.#locator(ctx, parsed.volumeId), async (loc, attemptTimeoutMs) => {
      const spec: RequestSpec = { method: 'GET', url: this.#fileUrl(loc, fid), attemptTimeoutMs }
      const open = await openRequest(this.#dispatcher, ctx, spec)
      if (open.statusCode !== 200) throw await this.#failure(ctx, open)
      const body = await readBody(ctx, spec, open, this.options.fileBytesMax, () => this.#tooLarge(ctx))
      this.#checkMd5(ctx, open, createHash('md5').update(body).digest('hex'))
      return body
    })
  }

  /**
   * A Readable of the file's bytes from one copy. Failover happens until a copy answers; after
   * that the stream is that copy's, and it errors (never just ends) if the bytes fall short of
   * the length or do not match the ETag's MD5. The call's deadline ends when the stream is
   * returned; each pause in the body after that is bounded by attemptTimeoutMs.
   */
  async downloadStream(fid: string, call?: CallOptions): Promise<NodeJS.ReadableStream> {
    const { ctx, parsed } = this.#fileCall('downloadStream', fid, call)
    return this.#onCopies(ctx, this.#locator(ctx, parsed.volumeId), async (loc, attemptTimeoutMs) => {
      const spec: RequestSpec = { method: 'GET', url: this.#fileUrl(loc, fid), attemptTimeoutMs }
      const open = await openRequest(this.#dispatcher, ctx, spec)
      if (open.statusCode !== 200) throw await this.#failure(ctx, open)
      const declared = contentLength(open.headers)
      if (declared !== undefined && declared > this.options.fileBytesMax) {
        discard(open)
        throw this.#tooLarge(ctx)
      }
      open.release()
      return this.#verifiedStream(ctx, spec, open, declared)
    })
  }

  #verifiedStream(ctx: CallContext, spec: RequestSpec, open: OpenAnswer, declared: number | undefined): Readable {
    const hash = createHash('md5')
    const bytesMax = this.options.fileBytesMax
    let bytes = 0
    const short = (why: string) => new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: GET ${spec.url}: ${why}`, { url: spec.url, fid: ctx.fid })
    const verifier = new Transform({
      transform: (chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback) => {
        bytes += chunk.length
        if (bytes > bytesMax) return done(this.#tooLarge(ctx))
        hash.update(chunk)
        done(null, chunk)
      },
      flush: (done: TransformCallback) => {
        if (declared !== undefined && bytes !== declared) return done(short(`the answer ended after ${bytes} of its ${declared} bytes`))
        try {
          this.#checkMd5(ctx, open, hash.digest('hex'))
        } catch (err) {
          return done(err as Error)
        }
        done()
      },
    })
    const source = open.body
    source.on('error', (err) => verifier.destroy(transportError(ctx, spec, err, undefined) as Error))
    // A consumer that stops early frees the connection.
    verifier.on('close', () => {
      if (!source.readableEnded) destroyBody(source)
    })
    source.pipe(verifier)
    return verifier
  }

  async head(fid: string, call?: CallOptions): Promise<FileInfo> {
    const { ctx, parsed } = this.#fileCall('head', fid, call)
    return this.#onCopies(ctx, this.#locator(ctx, parsed.volumeId), async (loc, attemptTimeoutMs) => {
      const spec: RequestSpec = { method: 'HEAD', url: this.#fileUrl(loc, fid), attemptTimeoutMs }
      const open = await openRequest(this.#dispatcher, ctx, spec)
      if (open.statusCode !== 200) throw await this.#failure(ctx, open, 'HEAD')
      discard(open)
      const size = contentLength(open.headers)
      if (size === undefined) throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: HEAD ${spec.url} answered without a Content-Length`, { url: spec.url, fid })
      const etag = header(open.headers, 'etag')
      const modified = header(open.headers, 'last-modified')
      const modifiedMs = modified === undefined ? NaN : Date.parse(modified)
      return {
        size,
        contentType: header(open.headers, 'content-type'),
        eTag: etag?.replace(/^W\//, '').replace(/"/g, ''),
        lastModified: Number.isFinite(modifiedMs) ? new Date(modifiedMs) : undefined,
        fileName: fileNameOf(header(open.headers, 'content-disposition')),
      }
    })
  }

  /** `http://<publicUrl>/<fid>` of the copy a read would try first (the master lists live copies only). */
  async url(fid: string, call?: CallOptions): Promise<string> {
    const { ctx, parsed } = this.#fileCall('url', fid, call)
    const { locations } = await this.#locate(ctx, parsed.volumeId, false)
    return this.#fileUrl(this.#order(locations)[0]!, fid)
  }

  /** The live copies of a volume (or of a fid's volume), asked of the master (the cache is refreshed, not used). */
  async lookup(volumeIdOrFid: number | string, call?: CallOptions): Promise<Location[]> {
    const what = `lookup ${String(volumeIdOrFid)}`
    this.#checkOpen(what)
    let volumeId: number
    let text: string
    if (typeof volumeIdOrFid === 'number') {
      if (!Number.isInteger(volumeIdOrFid) || volumeIdOrFid < 1 || volumeIdOrFid > VOLUME_ID_MAX) {
        throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: a volume id is an integer from 1 to ${VOLUME_ID_MAX}`)
      }
      volumeId = volumeIdOrFid
      text = String(volumeIdOrFid)
    } else if (typeof volumeIdOrFid === 'string') {
      try {
        volumeId = volumeIdOrFid.includes(',') ? parseFid(volumeIdOrFid).volumeId : parseVolumeId(volumeIdOrFid)
      } catch (err) {
        throw badFid(what, volumeIdOrFid, err)
      }
      text = String(volumeId)
    } else {
      throw new TypeError('lookup takes a volume id or a file id')
    }
    const ctx = this.#context(what, call)
    const { locations } = await this.#lookupMaster(ctx, text, volumeId)
    return locations.map((l) => ({ url: l.url, publicUrl: l.publicUrl }))
  }

  // ---------------------------------------------------------------------------------------------
  // Deletes.

  /**
   * Deletes a file on every copy (the copy asked forwards it). A file already gone answers
   * as deleted: deletes are idempotent, so they are retried on failure.
   */
  async delete(fid: string, call?: CallOptions): Promise<{ size: number }> {
    const { ctx, parsed } = this.#fileCall('delete', fid, call)
    const { secret } = this.options
    // With the secret the client signs its own delete token; else the master hands one out with the lookup.
    let token = secret === undefined ? undefined : signToken(secret, fid, TOKEN_TTL_SECONDS)
    const locate: Locate =
      secret === undefined
        ? async () => {
            const found = await this.#lookupMaster(ctx, fid, parsed.volumeId)
            token = found.auth
            return { locations: found.locations, fromCache: false }
          }
        : this.#locator(ctx, parsed.volumeId)
    return this.#onCopies(ctx, locate, async (loc, attemptTimeoutMs) => {
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {}
      const answer = await this.#send(ctx, { method: 'DELETE', url: this.#fileUrl(loc, fid), headers, attemptTimeoutMs })
      if (answer.statusCode !== 202 && answer.statusCode !== 200) throw this.#answerError(ctx, 'DELETE', answer)
      const body = parseJson<{ size?: unknown }>(ctx, answer)
      return { size: typeof body.size === 'number' ? body.size : 0 }
    })
  }

  /**
   * Deletes many files: one `POST /delete` per volume (at most deleteBatchMax fids each) at a copy of it.
   * Never throws for a file: each gets its result, in input order; a malformed fid is
   * NS_ERR_BAD_FID there. Only the caller's abort rejects.
   */
  async deleteMany(fids: readonly string[], call?: CallOptions): Promise<DeleteResult[]> {
    if (!Array.isArray(fids)) throw new TypeError('deleteMany takes an array of file ids')
    const what = `deleteMany of ${fids.length} files`
    this.#checkOpen(what)
    const ctx = this.#context(what, call)
    const results = new Array<DeleteResult>(fids.length)
    const byVolume = new Map<number, number[]>()
    fids.forEach((fid, i) => {
      try {
        if (typeof fid !== 'string') throw new TypeError(`a file id must be a string (got ${typeof fid})`)
        const { volumeId } = parseFid(fid)
        const list = byVolume.get(volumeId)
        if (list) list.push(i)
        else byVolume.set(volumeId, [i])
      } catch (err) {
        results[i] = { fid: String(fid), ok: false, code: 'NS_ERR_BAD_FID', error: (err as Error).message }
      }
    })
    const batches: Array<{ volumeId: number; indexes: number[] }> = []
    for (const [volumeId, indexes] of byVolume) {
      const max = this.options.deleteBatchMax
      for (let i = 0; i < indexes.length; i += max) batches.push({ volumeId, indexes: indexes.slice(i, i + max) })
    }
    await forEachLimit(batches, DELETE_VOLUMES_AT_ONCE, async (batch) => {
      const out = await this.#deleteBatch({ ...ctx, what: `${what}: volume ${batch.volumeId}` }, batch.volumeId, batch.indexes.map((i) => fids[i]!))
      out.forEach((r, k) => (results[batch.indexes[k]!] = r))
    })
    return results
  }

  /**
   * One volume's batch: sent to a copy, its per-fid 5xx (and stale-volume) results sent again
   * after a backoff, up to `retries` rounds. Without the secret, fids the server refuses for
   * want of a token are sent once more with a delete token from the master.
   */
  async #deleteBatch(ctx: CallContext, volumeId: number, fids: readonly string[]): Promise<DeleteResult[]> {
    const { secret } = this.options
    const out = new Array<DeleteResult | undefined>(fids.length)
    const lastFailure = new Map<number, DeleteResult>()
    const tokens = new Map<number, string>()
    let tokensFetched = false
    let pending = fids.map((_, k) => k)
    let refresh = false
    let refreshed = false
    let attempts = 0
    const fail = (k: number, err: NeedleClientError): DeleteResult => ({ fid: fids[k]!, ok: false, code: err.code, error: err.message })
    for (let round = 0; pending.length > 0; ) {
      let located: Located
      try {
        located = await this.#locate(ctx, volumeId, refresh)
      } catch (err) {
        if (!isNeedleClientError(err)) throw err
        for (const k of pending) out[k] = fail(k, err)
        break
      }
      refresh = false
      if (!located.fromCache) refreshed = true
      let answered: Array<{ status: number; size?: number; code?: string; error?: string }> | undefined
      let failure: NeedleClientError | undefined
      for (const loc of this.#order(located.locations)) {
        if (failure) this.#stats.failovers++
        attempts++
        const items = pending.map((k) => (tokens.has(k) ? { fid: fids[k]!, jwt: tokens.get(k)! } : fids[k]!))
        const spec: RequestSpec = {
          method: 'POST',
          url: `${originOf(loc.publicUrl)}/delete`,
          headers: { 'content-type': 'application/json', ...(secret === undefined ? {} : { authorization: `Bearer ${secret}` }) },
          body: JSON.stringify({ fids: items }),
          attemptTimeoutMs: this.options.attemptTimeoutMs,
        }
        try {
          const answer = await this.#send(ctx, spec)
          if (answer.statusCode !== 200) throw this.#answerError(ctx, 'POST', answer)
          answered = this.#deleteResults(ctx, answer, pending.length)
          break
        } catch (err) {
          if (!isNeedleClientError(err)) throw err
          failure = err
          if (!isTransient(err) && !isStale(err)) break
        }
      }
      if (answered === undefined) {
        // No copy gave per-fid answers: every fid left shares the failure, final unless it is transient.
        const err = withAttempts(failure!, attempts)
        if (!isTransient(err) && !isStale(err)) {
          for (const k of pending) out[k] = fail(k, err)
          break
        }
        for (const k of pending) lastFailure.set(k, fail(k, err))
        if (located.fromCache && !refreshed) {
          refresh = refreshed = true
          continue
        }
      } else {
        const again: number[] = []
        const needToken: number[] = []
        answered.forEach((r, j) => {
          const k = pending[j]!
          if (r.status >= 200 && r.status < 300) out[k] = { fid: fids[k]!, ok: true, size: r.size ?? 0 }
          else {
            const result: DeleteResult = { fid: fids[k]!, ok: false, code: r.code ?? 'NS_ERR_BAD_GATEWAY', error: r.error ?? `status ${r.status}` }
            if (r.status === 401 && secret === undefined && !tokensFetched) needToken.push(k)
            else if (r.status >= 500 || r.code === 'NS_ERR_VOLUME_NOT_FOUND') again.push(k)
            else {
              out[k] = result
              return
            }
            lastFailure.set(k, result)
          }
        })
        if (answered.some((r) => r.code === 'NS_ERR_VOLUME_NOT_FOUND')) refresh = true
        if (needToken.length > 0) {
          tokensFetched = true
          await forEachLimit(needToken, TOKEN_LOOKUPS_AT_ONCE, async (k) => {
            try {
              const { auth } = await this.#lookupMaster(ctx, fids[k]!, volumeId)
              if (auth) {
                tokens.set(k, auth)
                again.push(k)
              } else out[k] = lastFailure.get(k)!
            } catch (err) {
              if (!isNeedleClientError(err)) throw err
              out[k] = fail(k, err)
            }
          })
        }
        pending = again.sort((a, b) => a - b)
        // Fids that only waited for a token go again at once; that happens once per batch.
        if (pending.length > 0 && pending.every((k) => tokens.has(k)) && needToken.length > 0) continue
      }
      if (pending.length === 0) break
      round++
      if (round > this.options.retries) break
      try {
        await this.#backoff(ctx, round - 1, undefined)
      } catch (err) {
        if (isNeedleClientError(err)) break
        throw err
      }
    }
    return fids.map((fid, k) => out[k] ?? lastFailure.get(k) ?? { fid, ok: false, code: 'NS_ERR_PEER_UNREACHABLE', error: `${ctx.what}: no copy answered in time` })
  }

  #deleteResults(ctx: CallContext, answer: Answer, count: number): Array<{ status: number; size?: number; code?: string; error?: string }> {
    const body = parseJson<{ results?: unknown }>(ctx, answer)
    const results = body.results
    if (!Array.isArray(results) || results.length !== count) {
      throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${answer.url} answered ${Array.isArray(results) ? results.length : 'no'} results for ${count} fids`, { url: answer.url, statusCode: answer.statusCode })
    }
    return results.map((r: unknown) => {
      const x = (r ?? {}) as Record<string, unknown>
      const status = typeof x.status === 'number' ? x.status : 502
      return {
        status,
        ...(typeof x.size === 'number' ? { size: x.size } : {}),
        ...(typeof x.code === 'string' ? { code: x.code } : {}),
        ...(typeof x.error === 'string' ? { error: x.error } : {}),
      }
    })
  }

  /** Restores a deleted file on every copy (an admin route: needs the secret on a secured cluster). */
  async undelete(fid: string, call?: CallOptions): Promise<{ size: number; undeleted: boolean }> {
    const { ctx, parsed } = this.#fileCall('undelete', fid, call)
    const { secret } = this.options
    const headers: Record<string, string> = secret === undefined ? {} : { authorization: `Bearer ${secret}` }
    return this.#onCopies(ctx, this.#locator(ctx, parsed.volumeId), async (loc, attemptTimeoutMs) => {
      const url = `${originOf(loc.publicUrl)}/admin/undelete?fid=${encodeURIComponent(fid)}`
      const answer = await this.#send(ctx, { method: 'POST', url, headers, attemptTimeoutMs })
      if (answer.statusCode !== 200) throw this.#answerError(ctx, 'POST', answer)
      const body = parseJson<{ size?: unknown; undeleted?: unknown }>(ctx, answer)
      if (typeof body.undeleted !== 'boolean') throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${url} answered 200 without "undeleted"`, { url, fid, statusCode: 200 })
      return { size: typeof body.size === 'number' ? body.size : 0, undeleted: body.undeleted }
    })
  }

  /**
   * Compares every copy of a volume, needle by needle, at one of its data servers, and with
   * `repair` fixes the copies that differ from the good one (an admin route: needs the secret on
   * a secured cluster). A large volume takes long: give the call a timeoutMs to match.
   */
  async verifyVolume(volumeId: number, opts: VerifyVolumeOptions = {}, call?: CallOptions): Promise<VolumeVerifyReport> {
    const what = `verify volume ${volumeId}`
    this.#checkOpen(what)
    if (!Number.isInteger(volumeId) || volumeId < 1 || volumeId > VOLUME_ID_MAX) {
      throw new NeedleClientError('NS_ERR_BAD_OPTION', `${what}: the volume id must be an integer from 1 to ${VOLUME_ID_MAX}`)
    }
    const ctx = this.#context(what, call)
    const { secret } = this.options
    const headers: Record<string, string> = secret === undefined ? {} : { authorization: `Bearer ${secret}` }
    const query = `volume=${volumeId}&repair=${opts.repair === true}${opts.settleMs === undefined ? '' : `&settleMs=${opts.settleMs}`}`
    return this.#onCopies(ctx, this.#locator(ctx, volumeId), async (loc) => {
      const url = `${originOf(loc.publicUrl)}/admin/volume/verify?${query}`
      const answer = await this.#send(ctx, { method: 'POST', url, headers }, VERIFY_ANSWER_BYTES_MAX)
      if (answer.statusCode !== 200) throw this.#answerError(ctx, 'POST', answer)
      const body = parseJson<VolumeVerifyReport>(ctx, answer)
      if (typeof body !== 'object' || body === null || typeof body.ok !== 'boolean') {
        throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${url} answered 200 without a report`, { url, statusCode: 200 })
      }
      return body
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Cluster status.

  /** The master's `/dir/status`: topology, servers, volumes. */
  async clusterStatus(call?: CallOptions): Promise<unknown> {
    return this.#masterStatus('clusterStatus', '/dir/status', call)
  }

  /** The master's `/vol/status`: every volume with its copies. */
  async volumeStatus(call?: CallOptions): Promise<unknown> {
    return this.#masterStatus('volumeStatus', '/vol/status', call)
  }

  async #masterStatus(what: string, path: string, call: CallOptions | undefined): Promise<unknown> {
    this.#checkOpen(what)
    const ctx = this.#context(what, call)
    return parseJson<unknown>(ctx, await this.#masterCall(ctx, { method: 'GET', url: `${this.options.master}${path}` }))
  }

  /**
   * Compacts volumes now through the master's `/vol/vacuum`: the one given, or those whose
   * garbage ratio is above the threshold (default 0.3), on every copy; resolves when all are
   * done (give a long `timeoutMs`). Needs `secret` on a secured cluster. Not retried.
   */
  async compact(opts: { volume?: number; threshold?: number } = {}, call?: CallOptions): Promise<CompactReport> {
    this.#checkOpen('compact')
    const ctx = this.#context('compact', call)
    const q = [`garbageThreshold=${opts.threshold ?? 0.3}`, 'wait=true', ...(opts.volume !== undefined ? [`volume=${opts.volume}`] : [])]
    const headers: Record<string, string> = this.options.secret === undefined ? {} : { authorization: `Bearer ${this.options.secret}` }
    const answer = await this.#masterCall(ctx, { method: 'POST', url: `${this.options.master}/vol/vacuum?${q.join('&')}`, headers }, 0)
    const body = parseJson<{ overThreshold?: unknown; compacted?: unknown }>(ctx, answer)
    return { volumes: Array.isArray(body.overThreshold) ? (body.overThreshold as number[]) : [], copies: Array.isArray(body.compacted) ? (body.compacted as CompactedCopy[]) : [] }
  }

  /** Closes the connection pools (after the requests in flight). Idempotent; later calls fail. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#cache.clear()
      if (this.#ownsDispatcher) await this.#dispatcher.close()
    })()
    return this.#closing
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing.

  #checkOpen(what: string): void {
    if (this.#closing !== undefined) throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: the client is closed`)
  }

  #context(what: string, call: CallOptions | undefined, fid?: string): CallContext {
    const timeoutMs = call?.timeoutMs ?? this.options.timeoutMs
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new NeedleClientError('NS_ERR_BAD_OPTION', `${what}: timeoutMs must be a positive integer`)
    return { what, timeoutMs, deadlineMs: Date.now() + timeoutMs, signal: call?.signal, ...(fid === undefined ? {} : { fid }) }
  }

  #fileCall(verb: string, fid: string, call: CallOptions | undefined): { ctx: CallContext; parsed: FileId } {
    const what = `${verb} ${typeof fid === 'string' ? fid.slice(0, 80) : String(fid)}`
    this.#checkOpen(what)
    let parsed: FileId
    try {
      if (typeof fid !== 'string') throw new TypeError(`a file id must be a string (got ${typeof fid})`)
      parsed = parseFid(fid)
    } catch (err) {
      throw badFid(what, fid, err)
    }
    return { ctx: this.#context(what, call, fid), parsed }
  }

  #fileUrl(loc: Location, fid: string): string {
    return `${originOf(loc.publicUrl)}/${fid}`
  }

  /** Copies in the order to try them: random, so that reads spread over the copies. */
  #order(locations: readonly Location[]): Location[] {
    const out = [...locations]
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.options.random() * (i + 1))
      ;[out[i], out[j]] = [out[j]!, out[i]!]
    }
    return out
  }

  #send(ctx: CallContext, spec: RequestSpec, bytesMax = JSON_BYTES_MAX): Promise<Answer> {
    return sendRequest(this.#dispatcher, ctx, spec, bytesMax)
  }

  #answerError(ctx: CallContext, method: string, answer: Answer): NeedleClientError {
    return answerError({
      method,
      url: answer.url,
      statusCode: answer.statusCode,
      body: answer.body,
      what: ctx.what,
      fid: ctx.fid,
      retryAfterMs: parseRetryAfter(answer.headers['retry-after']),
    })
  }

  /** The error for a non-200 answer to a read: a redirect means the copy does not hold the volume. */
  async #failure(ctx: CallContext, open: OpenAnswer, method: 'GET' | 'HEAD' = 'GET'): Promise<NeedleClientError> {
    if (open.statusCode >= 300 && open.statusCode < 400) {
      discard(open)
      const to = header(open.headers, 'location')
      return new NeedleClientError('NS_ERR_VOLUME_NOT_FOUND', `${ctx.what}: ${method} ${open.url}: that server does not hold the volume (it answered ${open.statusCode}${to ? ` to ${to}` : ''})`, {
        statusCode: open.statusCode,
        url: open.url,
        fid: ctx.fid,
      })
    }
    const spec: RequestSpec = { method, url: open.url }
    const oversized = () => new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: ${method} ${open.url} answered ${open.statusCode} with an oversized body`, { url: open.url, fid: ctx.fid, statusCode: open.statusCode })
    const body = await readBody(ctx, spec, open, JSON_BYTES_MAX, oversized)
    return this.#answerError(ctx, method, { statusCode: open.statusCode, headers: open.headers, body, url: open.url })
  }

  #tooLarge(ctx: CallContext): NeedleClientError {
    return new NeedleClientError('NS_ERR_BODY_TOO_LARGE', `${ctx.what}: the file is larger than ${this.options.fileBytesMax} bytes (fileBytesMax)`, { fid: ctx.fid })
  }

  /** The data servers' ETag is the MD5 of the bytes (for files stored with one): a copy that sends other bytes is caught here. */
  #checkMd5(ctx: CallContext, open: OpenAnswer, md5Hex: string): void {
    const etag = header(open.headers, 'etag')
    const m = etag === undefined ? null : MD5_ETAG.exec(etag)
    if (m && m[1] !== md5Hex) {
      throw new NeedleClientError('NS_ERR_BAD_GATEWAY', `${ctx.what}: GET ${open.url}: the bytes have MD5 ${md5Hex}, the ETag says ${m[1]}`, { url: open.url, fid: ctx.fid })
    }
  }

  /** Waits before retry number `retry` (0 for the first), honouring Retry-After; throws err when that would pass the deadline. */
  async #backoff(ctx: CallContext, retry: number, err: unknown): Promise<void> {
    const asked = isNeedleClientError(err) ? (err.retryAfterMs ?? 0) : 0
    const waitMs = Math.max(backoffMs(retry, this.options.retryBaseMs, this.options.random), asked)
    if (waitMs >= remainingMs(ctx)) {
      throw err ?? new NeedleClientError('NS_ERR_PEER_UNREACHABLE', `${ctx.what}: no time left of the call's ${ctx.timeoutMs} ms`, { fid: ctx.fid })
    }
    this.#stats.retries++
    await sleep(waitMs, ctx.signal)
  }

  /** A call to the master: retried (with backoff) on no answer and on 5xx; any other non-2xx is final. */
  async #masterCall(ctx: CallContext, spec: RequestSpec, retries = this.options.retries): Promise<Answer> {
    for (let attempt = 1; ; attempt++) {
      try {
        const answer = await this.#send(ctx, spec)
        if (answer.statusCode >= 200 && answer.statusCode < 300) return answer
        throw this.#answerError(ctx, spec.method, answer)
      } catch (err) {
        if (!isTransient(err) || attempt > retries) throw withAttempts(err, attempt)
        try {
          await this.#backoff(ctx, attempt - 1, err)
        } catch (e) {
          throw withAttempts(e, attempt)
        }
      }
    }
  }

  /** `/dir/lookup` for a volume (or a fid, to get a delete token); the answer refreshes the cache. */
  async #lookupMaster(ctx: CallContext, volumeIdOrFid: string, volumeId: number, o: { retries?: number; attemptTimeoutMs?: number } = {}): Promise<{ locations: readonly Location[]; auth: string | undefined }> {
    this.#stats.masterLookups++
    const spec: RequestSpec = {
      method: 'GET',
      url: `${this.options.master}/dir/lookup?volumeId=${encodeURIComponent(volumeIdOrFid)}`,
      ...(o.attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs: o.attemptTimeoutMs }),
    }
    let answer: Answer
    try {
      answer = await this.#masterCall(ctx, spec, o.retries)
    } catch (err) {
      if (isNeedleClientError(err) && err.statusCode === 404) this.#cache.delete(volumeId)
      throw err
    }
    const body = parseJson<{ locations?: unknown; auth?: unknown }>(ctx, answer)
    const raw = body.locations
    const locations: Location[] = []
    if (Array.isArray(raw)) {
      for (const l of raw as Array<Record<string, unknown> | null>) {
        if (l && typeof l.url === 'string' && l.url.length > 0) {
          locations.push({ url: l.url, publicUrl: typeof l.publicUrl === 'string' && l.publicUrl.length > 0 ? l.publicUrl : l.url })
        }
      }
    }
    if (locations.length === 0) {
      this.#cache.delete(volumeId)
      throw new NeedleClientError('NS_ERR_VOLUME_NOT_FOUND', `${ctx.what}: ${answer.url} lists no live copy of volume ${volumeId}`, { url: answer.url, fid: ctx.fid })
    }
    this.#cache.set(volumeId, locations)
    return { locations, auth: typeof body.auth === 'string' ? body.auth : undefined }
  }

  /**
   * The copies of a volume: from the cache while fresh, else from the master. An expired entry
   * still serves when the master does not answer (one quick attempt), so reads outlive a
   * master restart.
   */
  async #locate(ctx: CallContext, volumeId: number, refresh: boolean): Promise<Located> {
    if (!refresh) {
      const hit = this.#cache.get(volumeId)
      if (hit) {
        this.#stats.cacheHits++
        return { locations: hit, fromCache: true }
      }
    }
    const stale = refresh ? undefined : this.#cache.peek(volumeId)
    try {
      const o = stale ? { retries: 0, attemptTimeoutMs: this.options.attemptTimeoutMs } : {}
      return { locations: (await this.#lookupMaster(ctx, String(volumeId), volumeId, o)).locations, fromCache: false }
    } catch (err) {
      if (stale && isTransient(err)) {
        this.#stats.staleHits++
        return { locations: stale, fromCache: true }
      }
      throw err
    }
  }

  #locator(ctx: CallContext, volumeId: number): Locate {
    return (refresh) => this.#locate(ctx, volumeId, refresh)
  }

  /**
   * Runs op at the copies of a volume until one succeeds. A 404 (file not found) from a copy
   * sends the call on to the others; if none has it, the 404 stands. A failure to answer, a 5xx
   * or a stale location moves on to the next copy; when all failed, the location is refreshed
   * once (if it came from the cache), then whole rounds follow after a backoff, up to `retries`.
   * Any other answer (a 4xx) ends the call at once.
   */
  async #onCopies<T>(ctx: CallContext, locate: Locate, op: (loc: Location, attemptTimeoutMs: number) => Promise<T>): Promise<T> {
    let attempts = 0
    let refresh = false
    let refreshed = false
    let last: NeedleClientError | undefined
    const tried = new Set<string>()
    const summary = (also?: string): NeedleClientError =>
      withAttempts(
        attempts === 1 && also === undefined
          ? last!
          : new NeedleClientError(last!.code, `${ctx.what}: every copy failed (${attempts} attempts at ${[...tried].join(', ')}${also ?? ''}); the last: ${last!.message}`, {
              statusCode: last!.statusCode,
              url: last!.url,
              fid: ctx.fid,
              cause: last,
            }),
        attempts,
      )
    for (let round = 0; ; ) {
      let located: Located
      try {
        located = await locate(refresh)
      } catch (err) {
        // The copies failed, and now the master lists none alive (it saw them go): the copies' failure is the news.
        if (last !== undefined && isNeedleClientError(err) && (err.code === 'NS_ERR_VOLUME_NOT_FOUND' || isTransient(err))) {
          throw summary(`, and then the master: ${err.message}`)
        }
        throw err
      }
      refresh = false
      // Locations the master gave during this call need no refresh when they fail.
      if (!located.fromCache) refreshed = true
      let missing: NeedleClientError | undefined
      for (const loc of this.#order(located.locations)) {
        if (last !== undefined) this.#stats.failovers++
        attempts++
        tried.add(loc.publicUrl)
        try {
          return await op(loc, this.options.attemptTimeoutMs)
        } catch (err) {
          if (!isNeedleClientError(err)) throw err
          if (isMissing(err)) {
            missing ??= err
            continue
          }
          if (!isTransient(err) && !isStale(err)) throw withAttempts(err, attempts)
          last = err
          if (remainingMs(ctx) <= 0) break
        }
      }
      if (missing) throw withAttempts(missing, attempts)
      if (remainingMs(ctx) <= 0) throw summary()
      if (located.fromCache && !refreshed) {
        refresh = refreshed = true
        continue
      }
      round++
      if (round > this.options.retries) throw summary()
      try {
        await this.#backoff(ctx, round - 1, last)
      } catch (err) {
        if (err === last) throw summary()
        throw err
      }
    }
  }
}
