/**
 * Scrubbing: re-reading a volume's needles from the disk and checking them, and repairing a
 * damaged one from another copy. Used by the background Scrubber (each server checks its own
 * copies, slowly) and by verify (one server compares every copy of a volume).
 *
 * Invariants:
 * - A repair only ever stores a file another copy holds whole (its checksum verified there, its
 *   MD5 checked here on arrival), under the cookie that copy has; reads never see bad bytes
 *   meanwhile, because every read verifies the checksum.
 * - The Scrubber reads at most bytesPerSecond on average, one needle at a time, off the event
 *   loop (through the thread pool), and stops at once on close().
 * - The Scrubber repairs a damaged needle only when most copies hold the file and none has it
 *   deleted; anything else is left for verify, which sees every copy.
 */
import { createHash } from 'node:crypto'
import { Counter, type Registry } from 'prom-client'
import { secretHeaders } from '../common/auth.js'
import { NeedleError, isNeedleError } from '../common/errors.js'
import { answerError, callPeer, originOf } from '../common/peer.js'
import { copyCountOfByte } from '../common/placement.js'
import type { ClusterLink } from './cluster.js'
import { keyHex, parseKeyHex, type KeyState } from './replica-compare.js'
import { KIND_WRITE, decodeOps, encodeOp, type ReplicaOp } from './replica-batch.js'
import type { Store } from './store.js'
import type { InspectedKey, Volume } from './volume.js'

/** Keys in one scan page at most. */
export const SCAN_PAGE_KEYS_MAX = 1000
/** A scan page stops once it has read this many bytes from the disk (after at least one key). */
export const SCAN_PAGE_BYTES_MAX = 64 * 1024 * 1024
/** Keys taken from the index at a time by the Scrubber. */
const SCRUB_KEYS_PER_STEP = 256
/** The Scrubber sleeps once it is this far ahead of its byte rate. */
const SCRUB_SLEEP_MIN_MS = 20

/** A key as the scan route answers it. */
export function keyState(k: InspectedKey): KeyState {
  return {
    key: keyHex(k.keyHi, k.keyLo),
    cookie: k.cookie.toString(16).padStart(8, '0'),
    state: k.state,
    size: k.size,
    md5: k.md5 ? k.md5.toString('hex') : '',
    appendAtMs: k.appendAtMs,
    ...(k.error !== undefined ? { error: k.error } : {}),
  }
}

export interface ScanPage {
  readonly entries: KeyState[]
  /** The key to ask for the next page after; undefined on the last page. */
  readonly next: string | undefined
}

/** One page of a volume's keys after `after`, each checked on the disk. */
export async function scanPage(volume: Volume, after: string | undefined, limit: number, bytesMax = SCAN_PAGE_BYTES_MAX): Promise<ScanPage> {
  const from = after === undefined ? undefined : parseKeyHex(after)
  if (after !== undefined && from === undefined) throw new NeedleError('NS_ERR_BAD_REQUEST', 'after must be a key: up to 16 hex digits')
  const keys = volume.keysAfter(from, limit)
  const entries: KeyState[] = []
  let bytes = 0
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!
    const found = await volume.inspect(k.keyHi, k.keyLo)
    if (found) {
      entries.push(keyState(found))
      bytes += found.bytesRead
    }
    if (bytes >= bytesMax && i + 1 < keys.length) return { entries, next: keyHex(k.keyHi, k.keyLo) }
  }
  const last = keys[keys.length - 1]
  return { entries, next: keys.length >= limit && last ? keyHex(last.keyHi, last.keyLo) : undefined }
}

/** The file a copy holds for key, as a write record (its bytes, name, type, time and MD5). */
export async function fileRecord(volume: Volume, keyHi: number, keyLo: number): Promise<Buffer> {
  const found = await volume.inspect(keyHi, keyLo)
  if (!found || found.state === 'deleted') {
    throw Object.assign(new NeedleError('NS_ERR_NOT_FOUND', 'file not found'), { deleted: found?.state === 'deleted' })
  }
  if (found.state === 'damaged') throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${volume.id}: ${found.error ?? 'damaged'}`)
  const needle = await volume.read(keyHi, keyLo, found.cookie)
  const op: ReplicaOp = {
    kind: KIND_WRITE,
    volumeId: volume.id,
    cookie: needle.cookie,
    keyHi,
    keyLo,
    data: needle.data,
    md5: needle.md5 ?? createHash('md5').update(needle.data).digest(),
    ...(needle.name !== undefined ? { name: needle.name } : {}),
    ...(needle.mime !== undefined ? { mime: needle.mime } : {}),
    ...(needle.lastModifiedMs !== undefined ? { lastModifiedMs: needle.lastModifiedMs } : {}),
  }
  return Buffer.concat(encodeOp(op))
}

export interface PeerContext {
  readonly cluster: ClusterLink
  readonly secret: string | undefined
  readonly timeoutMs: number
  readonly fileBytesMax: number
}

/** What a peer answered for a file: its record, or that it has none (and whether deleted). */
export type PeerFile = { readonly kind: 'file'; readonly op: ReplicaOp } | { readonly kind: 'none'; readonly deleted: boolean }

/** Asks a peer for its copy of a file. Throws when the peer does not answer or is damaged too. */
export async function fetchFile(ctx: PeerContext, peer: string, volumeId: number, keyHi: number, keyLo: number): Promise<PeerFile> {
  const url = `${originOf(peer)}/admin/needle?volume=${volumeId}&key=${keyHex(keyHi, keyLo)}`
  const answer = await callPeer(ctx.cluster.agent, url, {
    headers: secretHeaders(ctx.secret),
    timeoutMs: ctx.timeoutMs,
    answerBytesMax: ctx.fileBytesMax + 64 * 1024,
  })
  if (answer.statusCode === 404) {
    const { code } = answerError(answer)
    let deleted = false
    try {
      deleted = (JSON.parse(answer.body.toString('utf8')) as { deleted?: unknown }).deleted === true
    } catch {
      // Not our answer: treated as nothing there.
    }
    if (code === 'NS_ERR_NOT_FOUND') return { kind: 'none', deleted }
  }
  if (answer.statusCode !== 200) {
    const { error, code } = answerError(answer)
    throw new NeedleError(code === 'NS_ERR_CORRUPT_NEEDLE' ? 'NS_ERR_CORRUPT_NEEDLE' : 'NS_ERR_BAD_GATEWAY', `${peer}: ${answer.statusCode} ${error}`)
  }
  const [op] = decodeOps(answer.body, 1)
  if (!op || op.kind !== KIND_WRITE || op.keyHi !== keyHi || op.keyLo !== keyLo || op.volumeId !== volumeId) {
    throw new NeedleError('NS_ERR_BAD_GATEWAY', `${peer} answered another file than the one asked for`)
  }
  return { kind: 'file', op }
}

/** Stores a file a peer sent over this copy's (checking its MD5 first). */
export async function restoreFile(volume: Volume, op: ReplicaOp): Promise<{ size: number }> {
  const data = op.data ?? Buffer.alloc(0)
  if (!op.md5 || !createHash('md5').update(data).digest().equals(op.md5)) {
    throw new NeedleError('NS_ERR_BAD_GATEWAY', 'the copy sent does not match its MD5: damaged on the way')
  }
  return volume.restore({
    cookie: op.cookie,
    keyHi: op.keyHi,
    keyLo: op.keyLo,
    data,
    md5: op.md5,
    ...(op.name !== undefined ? { name: op.name } : {}),
    ...(op.mime !== undefined ? { mime: op.mime } : {}),
    ...(op.lastModifiedMs !== undefined ? { lastModifiedMs: op.lastModifiedMs } : {}),
  })
}

/**
 * Fetches key's file from `peer` and stores it here, under the cookie the caller expects (a
 * peer whose file has another cookie changed since the caller looked: nothing is stored).
 */
export async function pullFile(ctx: PeerContext, volume: Volume, peer: string, keyHi: number, keyLo: number, cookie: number | undefined): Promise<{ size: number }> {
  const got = await fetchFile(ctx, peer, volume.id, keyHi, keyLo)
  if (got.kind === 'none') throw new NeedleError('NS_ERR_NOT_FOUND', `${peer} holds no live file for key ${keyHex(keyHi, keyLo)}`)
  if (cookie !== undefined && got.op.cookie !== cookie) throw new NeedleError('NS_ERR_COOKIE_MISMATCH', `${peer} holds the key under another cookie now`)
  return restoreFile(volume, got.op)
}

// ---------------------------------------------------------------------------------------------
// The background scrubber.

export interface ScrubMetrics {
  readonly damaged: Counter
  readonly repaired: Counter
  readonly bytes: Counter
  readonly passes: Counter
}

export function createScrubMetrics(registry: Registry): ScrubMetrics {
  return {
    damaged: new Counter({ name: 'needlestore_scrub_damaged_total', help: 'Damaged needles the scrubber found (each pass counts again what is still damaged).', registers: [registry] }),
    repaired: new Counter({ name: 'needlestore_scrub_repaired_total', help: 'Damaged needles the scrubber replaced with a good copy from another server.', registers: [registry] }),
    bytes: new Counter({ name: 'needlestore_scrub_bytes_total', help: 'Bytes the scrubber read and checked.', registers: [registry] }),
    passes: new Counter({ name: 'needlestore_scrub_passes_total', help: 'Passes over every volume the scrubber finished.', registers: [registry] }),
  }
}

export interface ScrubberOptions {
  readonly store: Store
  readonly peers: PeerContext
  /** Average bytes read per second at most (0: the scrubber does not run). */
  readonly bytesPerSecond: number
  /** Time from the end of a pass to the start of the next. */
  readonly intervalMs: number
  readonly metrics: ScrubMetrics
  readonly log: (message: string) => void
}

/**
 * Re-reads every needle of every volume of the server, slowly, in key order, and repairs a
 * damaged one from another copy. A pass starts at start(), and again intervalMs after each
 * pass ends.
 */
export class Scrubber {
  readonly #opts: ScrubberOptions
  #closed = false
  #running: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
  #wake: (() => void) | undefined
  #debtMs = 0

  constructor(opts: ScrubberOptions) {
    this.#opts = opts
  }

  start(): void {
    if (this.#opts.bytesPerSecond <= 0 || this.#running || this.#closed) return
    this.#running = this.#loop().catch((err) => this.#opts.log(`scrubber stopped: ${(err as Error).message}`))
  }

  async close(): Promise<void> {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#wake?.()
    await this.#running
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      await this.#pass()
      if (this.#closed) return
      this.#opts.metrics.passes.inc()
      await this.#sleep(this.#opts.intervalMs)
    }
  }

  async #pass(): Promise<void> {
    for (const { id } of this.#opts.store.list()) {
      let after: { keyHi: number; keyLo: number } | undefined
      pages: for (;;) {
        const volume = this.#opts.store.get(id)
        if (this.#closed || !volume) return
        let keys
        try {
          keys = volume.keysAfter(after, SCRUB_KEYS_PER_STEP)
        } catch {
          break // closed or removed meanwhile
        }
        for (const k of keys) {
          if (this.#closed) return
          if (k.deleted) continue
          let found: InspectedKey | undefined
          try {
            found = await volume.inspect(k.keyHi, k.keyLo)
          } catch (err) {
            // A volume closed meanwhile (removed, or replaced by compaction) is taken up again next pass.
            if (isNeedleError(err) && err.code === 'NS_ERR_VOLUME_CLOSED') break pages
            this.#opts.log(`scrub: volume ${id} key ${keyHex(k.keyHi, k.keyLo)}: ${(err as Error).message}`)
            continue
          }
          if (!found) continue
          this.#opts.metrics.bytes.inc(found.bytesRead)
          if (found.state === 'damaged') await this.#repair(volume, found)
          await this.#pace(found.bytesRead)
        }
        if (keys.length < SCRUB_KEYS_PER_STEP) break
        const last = keys[keys.length - 1]!
        after = { keyHi: last.keyHi, keyLo: last.keyLo }
      }
    }
  }

  async #repair(volume: Volume, found: InspectedKey): Promise<void> {
    const { metrics, log, peers } = this.#opts
    metrics.damaged.inc()
    const key = keyHex(found.keyHi, found.keyLo)
    const others = peers.cluster.peersOf(volume.id)
    const copies = copyCountOfByte(volume.placement)
    const where = `volume ${volume.id} key ${key}`
    log(`scrub: ${where} is damaged: ${found.error ?? 'fails its checks'}`)
    const files: ReplicaOp[] = []
    for (const peer of others) {
      try {
        const got = await fetchFile(peers, peer, volume.id, found.keyHi, found.keyLo)
        if (got.kind === 'none' && got.deleted) {
          log(`scrub: ${where}: deleted on ${peer}; left for verify`)
          return
        }
        if (got.kind === 'file') files.push(got.op)
      } catch (err) {
        log(`scrub: ${where}: ${peer}: ${(err as Error).message}`)
      }
    }
    // This copy holds the key too (damaged): with the whole ones, most copies must hold it.
    if (files.length === 0 || (files.length + 1) * 2 < copies) {
      log(`scrub: ${where}: ${files.length} of ${others.length} other copies hold it whole; left for verify`)
      return
    }
    try {
      await restoreFile(volume, files[0]!)
      metrics.repaired.inc()
      log(`scrub: ${where}: repaired from another copy`)
    } catch (err) {
      log(`scrub: ${where}: repair failed: ${(err as Error).message}`)
    }
  }

  /** Sleeps as long as reading `bytes` takes at the scrubber's rate, in steps of at least SCRUB_SLEEP_MIN_MS. */
  async #pace(bytes: number): Promise<void> {
    this.#debtMs += (bytes * 1000) / this.#opts.bytesPerSecond
    if (this.#debtMs < SCRUB_SLEEP_MIN_MS) {
      // Still let other work run between needles read from the page cache.
      await new Promise<void>((resolve) => setImmediate(resolve))
      return
    }
    const ms = this.#debtMs
    this.#debtMs = 0
    await this.#sleep(ms)
  }

  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve()
    return new Promise<void>((resolve) => {
      this.#wake = resolve
      this.#timer = setTimeout(resolve, Math.min(ms, 2 ** 31 - 1))
      this.#timer.unref()
    })
  }
}
