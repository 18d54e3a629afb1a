/**
 * One volume: `<vid>.dat` (superblock + needles) and `<vid>.idx` (checkpoint of the index), with
 * the in-memory index of every needle.
 *
 * Invariants:
 * - `.dat` only ever grows by whole needles appended at #datBytes; a failed append is cut back
 *   (ftruncate) before any later append, so `.dat` is always superblock + contiguous needles,
 *   except for a torn tail after a crash, which #recover cuts back on the next open.
 * - `.idx` entries are appended after their needles are in `.dat`, in `.dat` order. An entry is
 *   never the only copy of a fact: everything in `.idx` can be rebuilt from `.dat`.
 * - The in-memory index changes only after an append is durable under the fsync policy, so a
 *   read never returns bytes that were not acknowledged, and an acknowledged write is in `.dat`.
 * - Appends are serialized through one queue per volume; reads run concurrently with them and
 *   only touch offsets below #datBytes, which no append rewrites.
 * - Recovery never cuts `.dat` below a whole needle whose checksum is valid.
 * - Writes and deletes of one key run one at a time (#keyLocks), so the cookie check of each
 *   sees the outcome of the one before it.
 * - A volume is "full" once `.dat` reaches volumeBytesMax: it takes no more files, but still
 *   takes tombstones (up to VOLUME_BYTES_MAX), so that files in a full volume can be deleted and
 *   their space reclaimed. "Read-only" is an operator's stop and refuses both.
 */
import { constants as fsc, read as readCallback, readSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { access, open, rename, rm, statfs, type FileHandle } from 'node:fs/promises'
import { endianness } from 'node:os'
import { dirname, join } from 'node:path'
import { NeedleError, diskError, isNeedleError } from '../common/errors.js'
import {
  BODY_FIXED_SIZE,
  BODY_SIZE_MAX,
  align,
  NEEDLE_ALIGNMENT,
  B_DATA_SIZE,
  B_FLAGS,
  B_MD5,
  H_COOKIE,
  H_KEY_HI,
  H_KEY_LO,
  FLAG_HAS_MD5,
  FLAG_LINK,
  FLAG_TOMBSTONE,
  H_BODY_SIZE,
  IDX_ENTRY_SIZE,
  IDX_DAMAGED_SIZE,
  IDX_OFFSET,
  IDX_SIZE,
  IDX_TOMBSTONE_SIZE,
  MD5_SIZE,
  MIME_BYTES_MAX,
  NAME_BYTES_MAX,
  REF_SIZE,
  NEEDLE_HEADER_SIZE,
  SUPERBLOCK_SIZE,
  TOMBSTONE_BODY_SIZE,
  TOMBSTONE_LENGTH,
  VOLUME_BYTES_MAX,
  decodeNeedle,
  decodeNeedleHeader,
  decodeSuperblock,
  needleIntact,
  encodeIdxEntry,
  encodeNeedle,
  encodeSuperblock,
  needleLength,
  toByteOffset,
  toUnits,
  type Needle,
  type NeedleInput,
  type NeedleRef,
  type Superblock,
} from '../common/format.js'
import { NeedleIndex } from './needle-index.js'
import type { ReadCache } from './read-cache.js'

export type FsyncPolicy = 'group' | 'interval' | 'none'

export interface VolumeOptions {
  /** Directory that holds the volume's files. */
  readonly dir: string
  readonly volumeId: number
  /** Above this many bytes in `.dat` the volume turns read-only. At most VOLUME_BYTES_MAX. */
  readonly volumeBytesMax: number
  /** group: one fsync covers the appends that arrived together, before they are acknowledged;
   *  interval: acknowledged once written, fsync every fsyncIntervalMs; none: never fsync. */
  readonly fsync: FsyncPolicy
  readonly fsyncIntervalMs: number
  /** Appends waiting in the queue at most; past it a write fails with NS_ERR_OVERLOADED. */
  readonly writeQueueMax: number
  /** Bytes of needles written in one batch (one fsync) at most. */
  readonly writeBatchBytesMax: number
  /** Appends in one batch (one fsync) at most; 1 means an fsync for every write. */
  readonly writeBatchMax: number
  /** Needles up to this many bytes are read synchronously (0: every read goes to the pool). */
  readonly syncReadBytesMax: number
  /** Recently read needles, shared by the server's volumes; none when undefined. */
  readonly readCache?: ReadCache
  /** Milliseconds since the epoch; injected so that tests control time. */
  readonly now: () => number
  /** Called once for each problem recovery found and mended (a torn tail, a damaged `.idx`). */
  readonly onRecovery?: (message: string) => void
}

/** What every volume of a server shares: all of VolumeOptions but which volume and where. */
export type VolumeSettings = Omit<VolumeOptions, 'dir' | 'volumeId' | 'onRecovery'>

export interface CreateVolumeOptions extends VolumeOptions {
  readonly placement: number
  /** The collection the volume belongs to ('' for none). */
  readonly collection?: string
}

/** What a caller gives to store a file. */
export interface WriteInput {
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  readonly data: Uint8Array
  readonly name?: string
  readonly mime?: string
  readonly lastModifiedMs?: number
  readonly md5?: Uint8Array
}

/** What a caller gives to store a file that shares the bytes of a file of the volume. */
export interface LinkInput {
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  readonly name?: string
  readonly mime?: string
  readonly lastModifiedMs?: number
  /** The MD5 the caller expects of the shared bytes. */
  readonly md5: Buffer
  /** The live file whose bytes are shared. */
  readonly target: { readonly keyHi: number; readonly keyLo: number; readonly cookie: number }
}

/** What the index holds for a key, as #peek reads it. */
interface Peeked {
  readonly cookie: number
  /** The size of the file (for a tombstone: of the file it deleted). */
  readonly dataSize: number
  readonly deleted: boolean
  /** Where the key's needle (for a deleted key: its tombstone) lies. */
  readonly offset: number
  readonly bodySize: number
}

const EMPTY = new Uint8Array(0)

/** A link read as a file: the shared bytes, with the link's own key, cookie, name, type and time. */
function linked(link: Needle, bytes: Needle): Needle {
  return {
    ...bytes,
    cookie: link.cookie,
    keyHi: link.keyHi,
    keyLo: link.keyLo,
    ref: link.ref,
    name: link.name ?? bytes.name,
    mime: link.mime ?? bytes.mime,
    lastModifiedMs: link.lastModifiedMs ?? bytes.lastModifiedMs,
    md5: bytes.md5 ?? link.md5,
    appendAtMs: link.appendAtMs,
  }
}

export interface VolumeStatus {
  readonly id: number
  readonly placement: number
  readonly collection: string
  readonly compactRevision: number
  readonly readOnly: boolean
  readonly datBytes: number
  readonly liveCount: number
  readonly deletedCount: number
  readonly liveBytes: number
  readonly garbageBytes: number
  readonly garbageRatio: number
}

interface PendingAppend {
  readonly buf: Buffer
  readonly keyHi: number
  readonly keyLo: number
  /** Body size for the index, or IDX_TOMBSTONE_SIZE. */
  readonly size: number
  /** For a needle holding a reference (a link, a tombstone): the generation it was computed in. */
  readonly generation: number | undefined
  /** A repair's copy of a file: it may use the room tombstones may (see appendLimit). */
  readonly repair?: boolean
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

/** Room a tombstone may use past volumeBytesMax: enough for deletes of a full volume. */
function appendLimit(volumeBytesMax: number, size: number): number {
  return size === IDX_TOMBSTONE_SIZE ? VOLUME_BYTES_MAX : volumeBytesMax
}

type State = 'open' | 'closing' | 'closed'

export function datPath(dir: string, volumeId: number): string {
  return join(dir, `${volumeId}.dat`)
}

export function idxPath(dir: string, volumeId: number): string {
  return join(dir, `${volumeId}.idx`)
}

// `.idx` is read through a Uint32Array view, which has the machine's byte order.
if (endianness() !== 'LE') throw new Error('needlestore reads its index files as little-endian words')

const SCAN_CHUNK_BYTES = 4 * 1024 * 1024
const IDX_LOAD_ENTRIES = 1 << 20

export class Volume {
  readonly id: number
  readonly #opts: VolumeOptions
  #dat: FileHandle
  #idx: FileHandle
  #index = new NeedleIndex()
  #superblock: Superblock
  #datBytes: number
  #idxBytes: number
  #liveBytes = 0
  #readOnly = false
  #fileDidNotFit = false
  #state: State = 'open'
  readonly #seed: bigint
  readonly #keyLocks = new Map<string, Promise<unknown>>()
  readonly #asyncReads = new Set<Promise<unknown>>()
  /** This instance's key in the read cache (a reopened or rewritten volume gets a new one). */
  #cacheId: number
  #queue: PendingAppend[] = []
  #draining: Promise<void> | undefined
  /** The batch being written, if any. */
  #writing: Promise<void> | undefined
  /** While set, no batch starts: a compaction is swapping the files. */
  #gate: Promise<void> | undefined
  /** Bumped each time a compaction moves the needles, so a reference computed before is redone. */
  #generation = 0
  #compaction: Promise<unknown> | undefined
  #dirty = false
  #syncTimer: NodeJS.Timeout | undefined

  private constructor(opts: VolumeOptions, dat: FileHandle, idx: FileHandle, sb: Superblock, datBytes: number, idxBytes: number) {
    this.id = opts.volumeId
    this.#opts = opts
    this.#dat = dat
    this.#idx = idx
    this.#superblock = sb
    this.#seed = sb.checksumSeed
    this.#cacheId = opts.readCache?.volumeId() ?? 0
    this.#datBytes = datBytes
    this.#idxBytes = idxBytes
    if (opts.fsync === 'interval') {
      this.#syncTimer = setInterval(() => void this.#intervalSync(), opts.fsyncIntervalMs)
      this.#syncTimer.unref()
    }
  }

  /**
   * Creates a new empty volume. The `.dat` is written under a temporary name, synced and renamed,
   * so a crash leaves either no volume or a whole superblock.
   */
  static async create(opts: CreateVolumeOptions): Promise<Volume> {
    const dat = datPath(opts.dir, opts.volumeId)
    const tmp = `${dat}.new`
    const sb = encodeSuperblock({
      placement: opts.placement,
      compactRevision: 0,
      volumeId: opts.volumeId,
      createdAtMs: opts.now(),
      checksumSeed: randomBytes(8).readBigUInt64LE(0),
      collection: opts.collection ?? '',
    })
    try {
      await assertAbsent(dat)
      const fh = await open(tmp, 'w')
      try {
        await fh.writeFile(sb)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rm(idxPath(opts.dir, opts.volumeId), { force: true })
      await rename(tmp, dat)
      await syncDir(opts.dir)
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {})
      throw diskError(err, `create volume ${opts.volumeId}`)
    }
    return Volume.open(opts)
  }

  /** Opens an existing volume, recovering from whatever a crash left behind. */
  static async open(opts: VolumeOptions): Promise<Volume> {
    if (opts.volumeBytesMax > VOLUME_BYTES_MAX) throw new TypeError(`volumeBytesMax may be at most ${VOLUME_BYTES_MAX}`)
    let dat: FileHandle | undefined
    let idx: FileHandle | undefined
    try {
      await finishCompaction(opts.dir, opts.volumeId, opts.onRecovery)
      dat = await open(datPath(opts.dir, opts.volumeId), 'r+')
      idx = await open(idxPath(opts.dir, opts.volumeId), fsc.O_RDWR | fsc.O_CREAT, 0o644)
      const datBytes = (await dat.stat()).size
      const head = Buffer.alloc(SUPERBLOCK_SIZE)
      await dat.read(head, 0, SUPERBLOCK_SIZE, 0)
      const sb = decodeSuperblock(head)
      if (sb.volumeId !== opts.volumeId) {
        throw new NeedleError('NS_ERR_CORRUPT_VOLUME', `${datPath(opts.dir, opts.volumeId)} holds volume ${sb.volumeId}`)
      }
      const volume = new Volume(opts, dat, idx, sb, datBytes, (await idx.stat()).size)
      await volume.#recover()
      return volume
    } catch (err) {
      await dat?.close().catch(() => {})
      await idx?.close().catch(() => {})
      throw diskError(err, `open volume ${opts.volumeId}`)
    }
  }

  /** True when the volume takes no new files: full, or stopped by an operator. */
  get readOnly(): boolean {
    return this.#readOnly || this.full
  }

  /** True once `.dat` has reached volumeBytesMax, or a file did not fit in what is left. */
  get full(): boolean {
    return this.#fileDidNotFit || this.#datBytes >= this.#opts.volumeBytesMax
  }

  /**
   * Lets an operator stop writes and deletes to the volume, or allow them again (also after a
   * file did not fit, while the volume is below volumeBytesMax).
   */
  setReadOnly(readOnly: boolean): void {
    this.#readOnly = readOnly
    if (!readOnly) this.#fileDidNotFit = false
  }

  /** The collection the volume belongs to ('' for none). */
  get collection(): string {
    return this.#superblock.collection
  }

  /** The replica placement in the superblock, `xyz` packed as x*100 + y*10 + z. */
  get placement(): number {
    return this.#superblock.placement
  }

  get datBytes(): number {
    return this.#datBytes
  }

  get liveCount(): number {
    return this.#index.liveCount
  }

  /** Bytes of `.idx` that hold whole entries for needles already in `.dat`. */
  get idxBytes(): number {
    return this.#idxBytes
  }

  status(): VolumeStatus {
    const payload = this.#datBytes - SUPERBLOCK_SIZE
    const garbageBytes = payload - this.#liveBytes
    return {
      id: this.id,
      placement: this.#superblock.placement,
      collection: this.#superblock.collection,
      compactRevision: this.#superblock.compactRevision,
      readOnly: this.readOnly,
      datBytes: this.#datBytes,
      liveCount: this.#index.liveCount,
      deletedCount: this.#index.deletedCount,
      liveBytes: this.#liveBytes,
      garbageBytes,
      garbageRatio: payload > 0 ? garbageBytes / payload : 0,
    }
  }

  // -------------------------------------------------------------------------------------------
  // Reads.

  /**
   * Reads the live file for key: its needle, or for a link the shared bytes with the link's own
   * name, type and time. A wrong cookie, an unknown or a deleted key all answer NS_ERR_NOT_FOUND.
   * A needle that fails its checksum raises NS_ERR_CORRUPT_NEEDLE.
   */
  async read(keyHi: number, keyLo: number, cookie: number): Promise<Needle> {
    for (;;) {
      const generation = this.#generation
      try {
        const { offsetUnits, length } = this.#locate(keyHi, keyLo)
        const needle = this.#checkFound(await this.#needleAt(offsetUnits, length, keyHi, keyLo), keyHi, keyLo, cookie)
        if (!needle.ref) return needle
        return linked(needle, await this.#target(needle.ref))
      } catch (err) {
        // A compaction moved the needles between the two reads of a link: read again.
        if (generation === this.#generation) throw err
      }
    }
  }

  /**
   * Like read(), without waiting: a small needle is read synchronously (usually from the page
   * cache, in microseconds, less than a round trip to libuv's thread pool costs). Answers
   * undefined for a file larger than syncReadBytesMax, which read() must fetch instead.
   */
  readSync(keyHi: number, keyLo: number, cookie: number): Needle | undefined {
    const { offsetUnits, length } = this.#locate(keyHi, keyLo)
    if (length > this.#opts.syncReadBytesMax) return undefined
    const needle = this.#checkFound(this.#readSmall(offsetUnits, length, keyHi, keyLo), keyHi, keyLo, cookie)
    if (!needle.ref) return needle
    const targetLength = needleLength(needle.ref.bodySize)
    if (targetLength > this.#opts.syncReadBytesMax) return undefined
    return linked(needle, this.#checkTarget(this.#readSmall(needle.ref.offset, targetLength, needle.ref.keyHi, needle.ref.keyLo), needle.ref))
  }

  /** Where the live needle for key lies, and how long it is; NS_ERR_NOT_FOUND if none. */
  #locate(keyHi: number, keyLo: number): { offsetUnits: number; length: number } {
    this.#assertOpen()
    const index = this.#index
    if (!index.lookup(keyHi, keyLo) || index.foundDeleted) throw notFound()
    return { offsetUnits: index.foundOffset, length: needleLength(index.foundSize) }
  }

  /** The needle at offsetUnits, read synchronously when small, else through the thread pool. */
  async #needleAt(offsetUnits: number, length: number, keyHi: number, keyLo: number): Promise<Needle> {
    if (length <= this.#opts.syncReadBytesMax) return this.#readSmall(offsetUnits, length, keyHi, keyLo)
    const buf = Buffer.allocUnsafe(length)
    let bytesRead: number
    try {
      bytesRead = await this.#trackRead(preadAsync(this.#dat.fd, buf, length, toByteOffset(offsetUnits)))
    } catch (err) {
      throw diskError(err, `read volume ${this.id}`)
    }
    return this.#decodeRead(buf, bytesRead, offsetUnits)
  }

  /**
   * A small needle, from the read cache (checked again) or read synchronously; kept in the
   * cache when it is the needle of key.
   */
  #readSmall(offsetUnits: number, length: number, keyHi: number, keyLo: number): Needle {
    const cache = this.#opts.readCache
    const cached = cache?.get(this.#cacheId, offsetUnits)
    if (cached) {
      if (!needleIntact(cached.raw, cached.needle, this.#seed)) {
        cache!.delete(this.#cacheId, offsetUnits)
        throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: a needle kept in memory was damaged`)
      }
      return cached.needle
    }
    // A needle that will be kept gets a buffer of its own, so it pins no slab.
    const keep = cache !== undefined && cache.admits(length)
    const buf = keep ? Buffer.allocUnsafeSlow(length) : readBuffer(length)
    let bytesRead: number
    try {
      bytesRead = readSync(this.#dat.fd, buf, 0, length, toByteOffset(offsetUnits))
    } catch (err) {
      throw diskError(err, `read volume ${this.id}`)
    }
    const needle = this.#decodeRead(buf, bytesRead, offsetUnits)
    if (keep && needle.keyHi === keyHi && needle.keyLo === keyLo) cache.set(this.#cacheId, offsetUnits, { needle, raw: buf })
    return needle
  }

  /** The needle in buf, whole and with a valid checksum, else NS_ERR_CORRUPT_NEEDLE. */
  #decodeRead(buf: Buffer, bytesRead: number, offsetUnits: number): Needle {
    if (bytesRead !== buf.length) throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: short read`)
    try {
      return decodeNeedle(buf, 0, this.#seed)
    } catch (err) {
      throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id} at ${toByteOffset(offsetUnits)}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** The key asked for (else the index is wrong: corrupt), the right cookie, not a tombstone. */
  #checkFound(needle: Needle, keyHi: number, keyLo: number, cookie: number): Needle {
    if (needle.keyHi !== keyHi || needle.keyLo !== keyLo) {
      throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: the index points at another needle`)
    }
    if (needle.cookie !== cookie || needle.tombstone) throw notFound()
    return needle
  }

  /** The data needle a link or a tombstone refers to. */
  async #target(ref: NeedleRef): Promise<Needle> {
    return this.#checkTarget(await this.#needleAt(ref.offset, needleLength(ref.bodySize), ref.keyHi, ref.keyLo), ref)
  }

  /** The needle a reference names is there, whole: else NS_ERR_CORRUPT_NEEDLE. */
  #checkTarget(needle: Needle, ref: NeedleRef): Needle {
    if (needle.keyHi !== ref.keyHi || needle.keyLo !== ref.keyLo || needle.cookie !== ref.cookie || needle.bodySize !== ref.bodySize) {
      throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: a link points at another needle`)
    }
    return needle
  }

  /** A whole, valid needle at offsetUnits, whatever its key (recovery checks). */
  async #readNeedleAt(offsetUnits: number, bodySize: number): Promise<Needle> {
    const buf = Buffer.allocUnsafe(needleLength(bodySize))
    await readFully(this.#dat, buf, buf.length, toByteOffset(offsetUnits))
    return decodeNeedle(buf, 0, this.#seed)
  }

  /** Keeps close() from closing the file under a read that the thread pool still runs. */
  async #trackRead<T>(read: Promise<T>): Promise<T> {
    this.#asyncReads.add(read)
    try {
      return await read
    } finally {
      this.#asyncReads.delete(read)
    }
  }

  /**
   * What the index holds for key (live or deleted): where its needle lies, its cookie and the
   * size of its file. For a deleted key, the needle is the tombstone, and the size is that of
   * the file it deleted.
   */
  async #peek(keyHi: number, keyLo: number): Promise<Peeked | undefined> {
    const index = this.#index
    if (!index.lookup(keyHi, keyLo)) return undefined
    const deleted = index.foundDeleted
    const offset = index.foundOffset
    const bodySize = index.foundSize
    const buf = Buffer.allocUnsafe(NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE)
    await this.#readAt(buf, offset)
    const header = decodeNeedleHeader(buf)
    const flags = buf.readUInt8(NEEDLE_HEADER_SIZE + B_FLAGS)
    let dataSize = buf.readUInt32LE(NEEDLE_HEADER_SIZE + B_DATA_SIZE)
    if (flags & (FLAG_LINK | FLAG_TOMBSTONE)) {
      // The size of the file is that of the needle referred to. Links and tombstones are small.
      const ref = (await this.#needleAt(offset, needleLength(header.bodySize), keyHi, keyLo)).ref
      if (!ref) throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: a link without its reference`)
      dataSize = ref.dataSize
    }
    return { cookie: header.cookie, dataSize, deleted, offset, bodySize }
  }

  /** Fills buf from `.dat` at offsetUnits (synchronously when small, like reads). */
  async #readAt(buf: Buffer, offsetUnits: number): Promise<void> {
    const position = toByteOffset(offsetUnits)
    try {
      // The same rule as for reads: a small read costs less done here than in the thread pool.
      const bytesRead = buf.length <= this.#opts.syncReadBytesMax
        ? readSync(this.#dat.fd, buf, 0, buf.length, position)
        : await this.#trackRead(preadAsync(this.#dat.fd, buf, buf.length, position))
      if (bytesRead !== buf.length) throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: short read at ${position}`)
    } catch (err) {
      throw diskError(err, `read volume ${this.id}`)
    }
  }

  // -------------------------------------------------------------------------------------------
  // Writes and deletes.

  /**
   * Stores a file under key. Writing a key that exists replaces it (the newest needle wins) only
   * when the cookie matches; otherwise NS_ERR_COOKIE_MISMATCH. Resolves once the needle is
   * durable under the fsync policy and visible to reads.
   */
  async write(input: WriteInput): Promise<{ size: number }> {
    this.#assertOpen()
    if (this.readOnly) throw readOnly(this.id)
    return this.#underKeyLock(input.keyHi, input.keyLo, async () => {
      await this.#checkCookie(input.keyHi, input.keyLo, input.cookie)
      const buf = encodeNeedle(input satisfies NeedleInput, this.#opts.now(), this.#seed)
      await this.#append(buf, input.keyHi, input.keyLo, buf.readUInt32LE(H_BODY_SIZE))
      return { size: input.data.length }
    })
  }

  /**
   * Stores a file under key that shares the bytes of the live file `target` of this volume (MD5
   * dedup): a link needle, with the new file's own name, type and time. NS_ERR_DEDUP_MISS when
   * the target is not a live file of this volume or its MD5 differs from `md5`; the caller then
   * stores the bytes in full.
   */
  async link(input: LinkInput): Promise<{ size: number }> {
    this.#assertOpen()
    if (this.readOnly) throw readOnly(this.id)
    return this.#underKeyLock(input.keyHi, input.keyLo, async () => {
      let size = 0
      await this.#appendReferring(input.keyHi, input.keyLo, async () => {
        await this.#checkCookie(input.keyHi, input.keyLo, input.cookie)
        const { ref, md5 } = await this.#linkTarget(input)
        size = ref.dataSize
        const buf = encodeNeedle({ ...input, data: EMPTY, ref, md5 }, this.#opts.now(), this.#seed)
        return { buf, size: buf.readUInt32LE(H_BODY_SIZE) }
      })
      return { size }
    })
  }

  /**
   * The checks of link(), without storing anything: NS_ERR_DEDUP_MISS (or a cookie mismatch)
   * now means link() would fail the same way, unless a write or delete comes in between.
   */
  async checkLink(input: LinkInput): Promise<void> {
    this.#assertOpen()
    if (this.readOnly) throw readOnly(this.id)
    await this.#checkCookie(input.keyHi, input.keyLo, input.cookie)
    await this.#linkTarget(input)
  }

  /** The bytes a link to input.target shares, and their MD5, checked against input.md5. */
  async #linkTarget(input: LinkInput): Promise<{ ref: NeedleRef; md5: Buffer }> {
    const miss = (why: string) => new NeedleError('NS_ERR_DEDUP_MISS', `volume ${this.id}: the stored copy ${why}`)
    const { target } = input
    const index = this.#index
    if (!index.lookup(target.keyHi, target.keyLo) || index.foundDeleted) throw miss('is gone')
    const offset = index.foundOffset
    const bodySize = index.foundSize
    // The header and fixed body say all a link needs (a read verifies the bytes every time),
    // so the stored file's data is not read here.
    const head = Buffer.allocUnsafe(NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE)
    await this.#readAt(head, offset)
    const header = decodeNeedleHeader(head)
    if (header.keyHi !== target.keyHi || header.keyLo !== target.keyLo) {
      throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: the index points at another needle`)
    }
    const flags = head.readUInt8(NEEDLE_HEADER_SIZE + B_FLAGS)
    if (header.cookie !== target.cookie || flags & FLAG_TOMBSTONE) throw miss('is gone')
    let ref: NeedleRef
    let md5: Buffer | undefined
    if (flags & FLAG_LINK) {
      // A link shares the bytes its target shares: links never point at links.
      const link = await this.#needleAt(offset, needleLength(bodySize), target.keyHi, target.keyLo)
      ref = link.ref!
      md5 = link.md5
    } else {
      ref = { offset, bodySize, dataSize: head.readUInt32LE(NEEDLE_HEADER_SIZE + B_DATA_SIZE), keyHi: header.keyHi, keyLo: header.keyLo, cookie: header.cookie }
      if (flags & FLAG_HAS_MD5) md5 = Buffer.from(head.subarray(NEEDLE_HEADER_SIZE + B_MD5, NEEDLE_HEADER_SIZE + B_MD5 + MD5_SIZE))
    }
    md5 ??= createHash('md5').update((await this.#target(ref)).data).digest()
    if (!md5.equals(input.md5)) throw miss('has other bytes (its MD5 differs)')
    return { ref, md5 }
  }

  /**
   * Deletes key by appending a tombstone that refers to the needle it deletes. Idempotent: an
   * unknown key, a wrong cookie (which must answer like an unknown key) or a key already deleted
   * succeed. Answers the file's size when the file is known, else 0.
   */
  async delete(keyHi: number, keyLo: number, cookie: number): Promise<{ size: number }> {
    this.#assertOpen()
    return this.#underKeyLock(keyHi, keyLo, async () => {
      let size = 0
      await this.#appendReferring(keyHi, keyLo, async () => {
        const existing = await this.#peek(keyHi, keyLo)
        size = existing && existing.cookie === cookie ? existing.dataSize : 0
        if (!existing || existing.cookie !== cookie || existing.deleted) return undefined
        if (this.#readOnly) throw readOnly(this.id)
        const ref: NeedleRef = { offset: existing.offset, bodySize: existing.bodySize, dataSize: existing.dataSize, keyHi, keyLo, cookie }
        return { buf: encodeNeedle({ cookie, keyHi, keyLo, data: EMPTY, tombstone: true, ref }, this.#opts.now(), this.#seed), size: IDX_TOMBSTONE_SIZE }
      })
      return { size }
    })
  }

  /**
   * Restores a deleted file whose bytes are still in the volume and whose delete is at most
   * graceMs old: a link to those bytes, with the file's name, type and time. A live file is left
   * as it is (undeleted: false). NS_ERR_NOT_FOUND when nothing is known to restore (or the
   * cookie is wrong), NS_ERR_UNDELETE_EXPIRED past the grace period.
   */
  async undelete(keyHi: number, keyLo: number, cookie: number, graceMs: number): Promise<{ size: number; undeleted: boolean }> {
    this.#assertOpen()
    if (this.readOnly) throw readOnly(this.id)
    return this.#underKeyLock(keyHi, keyLo, async () => {
      let result = { size: 0, undeleted: false }
      await this.#appendReferring(keyHi, keyLo, async () => {
        const existing = await this.#peek(keyHi, keyLo)
        if (!existing || existing.cookie !== cookie) throw notFound()
        result = { size: existing.dataSize, undeleted: existing.deleted }
        if (!existing.deleted) return undefined
        const tombstone = await this.#needleAt(existing.offset, needleLength(existing.bodySize), keyHi, keyLo)
        if (!tombstone.tombstone || !tombstone.ref) throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: the index points at a deleted key's tombstone that is not one`)
        const deletedAgoMs = this.#opts.now() - tombstone.appendAtMs
        if (deletedAgoMs > graceMs) {
          throw new NeedleError('NS_ERR_UNDELETE_EXPIRED', `deleted ${Math.round(deletedAgoMs / 1000)} s ago, past the grace period of ${Math.round(graceMs / 1000)} s`)
        }
        // The needle deleted: a file's own bytes, or a link to bytes it shares.
        const deleted = await this.#target(tombstone.ref)
        const ref = deleted.ref ?? tombstone.ref
        if (deleted.ref) await this.#target(deleted.ref)
        const buf = encodeNeedle({
          cookie,
          keyHi,
          keyLo,
          data: EMPTY,
          ref,
          ...(deleted.name !== undefined ? { name: deleted.name } : {}),
          ...(deleted.mime !== undefined ? { mime: deleted.mime } : {}),
          ...(deleted.lastModifiedMs !== undefined ? { lastModifiedMs: deleted.lastModifiedMs } : {}),
          ...(deleted.md5 !== undefined ? { md5: deleted.md5 } : {}),
        }, this.#opts.now(), this.#seed)
        result = { size: ref.dataSize, undeleted: true }
        return { buf, size: buf.readUInt32LE(H_BODY_SIZE) }
      })
      return result
    })
  }

  /**
   * Appends the needle encode() makes (nothing when it answers undefined). A needle that refers
   * to another by offset is encoded again if a compaction moved the needles in between.
   */
  async #appendReferring(keyHi: number, keyLo: number, encode: () => Promise<{ buf: Buffer; size: number } | undefined>): Promise<void> {
    for (;;) {
      const generation = this.#generation
      let needle: { buf: Buffer; size: number } | undefined
      try {
        needle = await encode()
      } catch (err) {
        if (generation === this.#generation) throw err
        continue
      }
      if (!needle) return
      try {
        await this.#append(needle.buf, keyHi, keyLo, needle.size, { generation })
        return
      } catch (err) {
        if (err !== MOVED) throw err
      }
    }
  }

  /** A write or link may replace key only with its cookie. */
  async #checkCookie(keyHi: number, keyLo: number, cookie: number): Promise<void> {
    const existing = await this.#peek(keyHi, keyLo)
    if (existing && existing.cookie !== cookie) {
      throw new NeedleError('NS_ERR_COOKIE_MISMATCH', 'the file id exists with another cookie')
    }
  }

  /** Runs fn after every earlier write or delete of the same key has finished. */
  async #underKeyLock<T>(keyHi: number, keyLo: number, fn: () => Promise<T>): Promise<T> {
    const name = `${keyHi}:${keyLo}`
    const before = this.#keyLocks.get(name)
    const run = (before ? before.then(fn, fn) : fn())
    const settled = run.then(
      () => {},
      () => {},
    )
    this.#keyLocks.set(name, settled)
    try {
      return await run
    } finally {
      if (this.#keyLocks.get(name) === settled) this.#keyLocks.delete(name)
    }
  }

  #append(buf: Buffer, keyHi: number, keyLo: number, size: number, opts: { readonly generation?: number; readonly repair?: boolean } = {}): Promise<void> {
    if (this.#state !== 'open') return Promise.reject(closed(this.id))
    if (this.#queue.length >= this.#opts.writeQueueMax) {
      return Promise.reject(new NeedleError('NS_ERR_OVERLOADED', `volume ${this.id}: ${this.#queue.length} writes queued`))
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ buf, keyHi, keyLo, size, generation: opts.generation, ...(opts.repair ? { repair: true } : {}), resolve, reject })
      this.#draining ??= this.#drain().finally(() => {
        this.#draining = undefined
      })
    })
  }

  /** Writes queued appends in batches: one writev, one `.idx` write and one fsync per batch. */
  async #drain(): Promise<void> {
    // Let the appends that arrive in the same turn of the event loop join the first batch.
    await new Promise<void>((resolve) => setImmediate(resolve))
    while (this.#queue.length > 0) {
      if (this.#gate) await this.#gate
      const batch = this.#takeBatch()
      if (batch.length === 0) continue
      this.#writing = this.#writeBatch(batch)
      await this.#writing
      this.#writing = undefined
    }
  }

  #takeBatch(): PendingAppend[] {
    const batch: PendingAppend[] = []
    let bytes = 0
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!
      if (next.generation !== undefined && next.generation !== this.#generation) {
        // Its reference names an offset from before a compaction: the caller encodes it again.
        this.#queue.shift()
        next.reject(MOVED)
        continue
      }
      if (batch.length > 0 && (bytes + next.buf.length > this.#opts.writeBatchBytesMax || batch.length >= this.#opts.writeBatchMax)) break
      const end = this.#datBytes + bytes + next.buf.length
      if (this.#readOnly || end > appendLimit(this.#opts.volumeBytesMax, next.repair ? IDX_TOMBSTONE_SIZE : next.size)) {
        // No room for this append: it fails. A file that does not fit marks the volume full.
        if (next.size !== IDX_TOMBSTONE_SIZE && !next.repair) this.#fileDidNotFit = true
        this.#queue.shift()
        next.reject(readOnly(this.id))
        continue
      }
      this.#queue.shift()
      batch.push(next)
      bytes += next.buf.length
    }
    return batch
  }

  async #writeBatch(batch: PendingAppend[]): Promise<void> {
    const datStart = this.#datBytes
    const idxStart = this.#idxBytes
    const idxBuf = Buffer.allocUnsafe(batch.length * IDX_ENTRY_SIZE)
    let at = datStart
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!
      encodeIdxEntry({ keyHi: p.keyHi, keyLo: p.keyLo, offset: toUnits(at), size: p.size }, idxBuf, i * IDX_ENTRY_SIZE)
      at += p.buf.length
    }
    const datEnd = at
    try {
      await writeFully(this.#dat, batch.map((p) => p.buf), datStart)
      await writeFully(this.#idx, [idxBuf], idxStart)
      if (this.#opts.fsync === 'group') await this.#dat.datasync()
      else this.#dirty = true
    } catch (err) {
      const error = diskError(err, `write volume ${this.id}`)
      await this.#rollBack(datStart, idxStart)
      for (const p of batch) p.reject(error)
      return
    }
    this.#datBytes = datEnd
    this.#idxBytes = idxStart + idxBuf.length
    at = datStart
    for (const p of batch) {
      this.#applyToIndex(p.keyHi, p.keyLo, toUnits(at), p.size)
      at += p.buf.length
    }
    for (const p of batch) p.resolve()
  }

  /**
   * Cuts both files back to where they were before a failed batch, so the next append lands
   * right after the last whole needle. If even that fails, the volume turns read-only: later
   * appends could otherwise land behind a hole, and reads stay safe.
   */
  async #rollBack(datBytes: number, idxBytes: number): Promise<void> {
    try {
      await this.#dat.truncate(datBytes)
      await this.#idx.truncate(idxBytes)
    } catch {
      this.#readOnly = true
    }
  }

  #applyToIndex(keyHi: number, keyLo: number, offsetUnits: number, size: number): void {
    this.#liveBytes += applyEntry(this.#index, keyHi, keyLo, offsetUnits, size)
  }

  async #intervalSync(): Promise<void> {
    if (!this.#dirty || this.#state === 'closed') return
    this.#dirty = false
    try {
      await this.#dat.datasync()
    } catch {
      // An fsync that failed leaves the page cache in an unknown state: stop taking writes.
      this.#readOnly = true
    }
  }

  /** Waits for queued appends, syncs both files and closes them. */
  async close(): Promise<void> {
    if (this.#state !== 'open') return
    this.#state = 'closing'
    if (this.#syncTimer) clearInterval(this.#syncTimer)
    // A compaction stops at its next needle (or finishes its swap) and cleans up after itself.
    await this.#compaction?.catch(() => {})
    // Appends queued before close() are written; new ones are refused (#append checks state).
    while (this.#draining) await this.#draining
    await Promise.allSettled([...this.#asyncReads])
    try {
      if (this.#opts.fsync !== 'none') {
        await this.#dat.datasync()
        await this.#idx.datasync()
      }
    } finally {
      this.#state = 'closed'
      await this.#dat.close()
      await this.#idx.close()
    }
  }

  #assertOpen(): void {
    if (this.#state !== 'open') throw closed(this.id)
  }

  // -------------------------------------------------------------------------------------------
  // Compaction.

  /**
   * Rewrites the volume without its garbage, while reads and writes go on: the live needles,
   * the needles a live link shares, and the tombstones (with what they deleted) still inside
   * the undelete grace period are copied, in their order, into `<vid>.cpd` / `<vid>.cpx`; what
   * was appended meanwhile is copied after them; then, with appends held for a moment, the last
   * tail is copied, both files are synced, a commit marker is written, and the new files are
   * renamed over the old ones. A crash before the marker leaves the old volume (the new files
   * are removed at the next open); after it, the next open finishes the renames.
   */
  compact(opts: CompactOptions): Promise<CompactResult> {
    this.#assertOpen()
    if (this.#compaction) return Promise.reject(new NeedleError('NS_ERR_COMPACTING', `volume ${this.id} is being compacted`))
    const run = this.#compact(opts).finally(() => {
      this.#compaction = undefined
    })
    this.#compaction = run
    return run
  }

  get compacting(): boolean {
    return this.#compaction !== undefined
  }

  async #compact(opts: CompactOptions): Promise<CompactResult> {
    const started = Date.now()
    const { dir, volumeId } = this.#opts
    const fault = opts.fault ?? (() => {})
    const beforeBytes = this.#datBytes
    await this.#checkRoom(opts.roomSlackBytes ?? COMPACT_ROOM_SLACK_BYTES)
    const nowMs = this.#opts.now()
    const inGrace = (tombstone: Needle) => nowMs - tombstone.appendAtMs <= opts.graceMs
    // The snapshot is copied at the asked rate; the tail (what came in meanwhile) at full speed.
    const throttle = new Throttle(opts.bytesPerSecond ?? 0)
    const unthrottled = new Throttle(0)
    const snapshotEnd = this.#datBytes
    const snapshotIdxBytes = this.#idxBytes
    const snapshotUnits = toUnits(snapshotEnd)

    // Pass 1: what must be kept besides the current needles: what live links share, and what
    // tombstones in their grace period deleted (and, for a deleted link, what it shared).
    // Links and tombstones are small: `.idx` (which lists every needle of `.dat` up to the
    // snapshot, in order) says which needles could be one, and only those are read.
    const referenced = new Set<number>()
    const linkTargets = new Map<number, number>()
    await this.#smallNeedles(snapshotIdxBytes, async (units, bodySize) => {
      const needle = await this.#needleAt(units, needleLength(bodySize), -1, -1).catch(() => undefined)
      if (!needle?.ref) return
      if (!needle.tombstone) linkTargets.set(units, needle.ref.offset)
      const index = this.#index
      if (!index.lookup(needle.keyHi, needle.keyLo) || index.foundOffset !== units) return
      if (!needle.tombstone || inGrace(needle)) referenced.add(needle.ref.offset)
    })
    for (const offset of [...referenced]) {
      const target = linkTargets.get(offset)
      if (target !== undefined) referenced.add(target)
    }
    linkTargets.clear()

    // Pass 2: copy.
    const cpd = await open(compactDatPath(dir, volumeId), 'w+')
    const cpx = await open(compactIdxPath(dir, volumeId), 'w+')
    const superblock = { ...this.#superblock, compactRevision: this.#superblock.compactRevision + 1 }
    const out = new CompactWriter(cpd, cpx, this.#seed, encodeSuperblock(superblock))
    let committed = false
    let release: (() => void) | undefined
    try {
      const keysWithOldNeedles = new Set<string>()
      await this.#scanNeedles(SUPERBLOCK_SIZE, snapshotEnd, throttle, async (needle, units, raw) => {
        const index = this.#index
        const known = index.lookup(needle.keyHi, needle.keyLo)
        const isCurrent = known && index.foundOffset === units
        const keyName = `${needle.keyHi}:${needle.keyLo}`
        let keep: boolean
        if (isCurrent) {
          // A tombstone past its grace goes, unless an older needle of its key stays (a link
          // shares it): then it must stay too, or that needle would read as live again.
          keep = !needle.tombstone || inGrace(needle.whole!) || keysWithOldNeedles.has(keyName)
        } else {
          // Kept when something refers to it, or may: a key written or deleted since the
          // snapshot keeps its older needles, which a tombstone or a link in the tail may name.
          keep = referenced.has(units) || (known && index.foundOffset >= snapshotUnits)
          if (keep) keysWithOldNeedles.add(keyName)
        }
        if (keep) await out.copy(needle, units, await raw())
      })
      fault('copied')

      // The tail: what was appended since the snapshot, until little is left (or for a few
      // rounds, when writes come in as fast as they are copied).
      let copiedTo = snapshotEnd
      for (let round = 0; round < COMPACT_TAIL_ROUNDS && this.#datBytes - copiedTo > COMPACT_TAIL_HOLD_BYTES; round++) {
        const end = this.#datBytes
        await this.#scanNeedles(copiedTo, end, unthrottled, async (needle, units, raw) => out.copy(needle, units, await raw()))
        copiedTo = end
      }

      // Hold appends, copy the rest, and swap.
      this.#assertOpen()
      this.#gate = new Promise<void>((resolve) => (release = resolve))
      await this.#writing
      await this.#scanNeedles(copiedTo, this.#datBytes, unthrottled, async (needle, units, raw) => out.copy(needle, units, await raw()))
      if (out.index.liveCount !== this.#index.liveCount) {
        // A live needle could not be read whole (damage the scan skipped): never drop a file.
        throw new NeedleError('NS_ERR_CORRUPT_VOLUME', `volume ${this.id}: ${this.#index.liveCount - out.index.liveCount} live needles cannot be read whole; repair the volume before compacting it (nothing was changed)`)
      }
      await out.finish()
      fault('synced')
      await writeMarker(compactMarkerPath(dir, volumeId), superblock.compactRevision)
      committed = true
      fault('marked')
      await rename(compactDatPath(dir, volumeId), datPath(dir, volumeId))
      fault('renamed-dat')
      await rename(compactIdxPath(dir, volumeId), idxPath(dir, volumeId))
      await syncDir(dir)
      fault('renamed')
      await rm(compactMarkerPath(dir, volumeId))
      await syncDir(dir)

      const oldDat = this.#dat
      const oldIdx = this.#idx
      this.#dat = cpd
      this.#idx = cpx
      this.#index = out.index
      this.#liveBytes = out.liveBytes
      this.#datBytes = out.datBytes
      this.#idxBytes = out.idxBytes
      this.#superblock = superblock
      this.#cacheId = this.#opts.readCache?.volumeId() ?? 0
      this.#generation++
      this.#gate = undefined
      release!()
      await Promise.allSettled([...this.#asyncReads])
      await oldDat.close().catch(() => {})
      await oldIdx.close().catch(() => {})
      return { volume: this.id, beforeBytes, afterBytes: out.datBytes, needles: out.needles, revision: superblock.compactRevision, ms: Date.now() - started }
    } catch (err) {
      if (!committed) {
        await cpd.close().catch(() => {})
        await cpx.close().catch(() => {})
        await rm(compactDatPath(dir, volumeId), { force: true }).catch(() => {})
        await rm(compactIdxPath(dir, volumeId), { force: true }).catch(() => {})
      } else {
        // Past the marker the old files may be gone: the next open finishes the swap.
        this.#readOnly = true
      }
      this.#gate = undefined
      release?.()
      throw diskError(err, `compact volume ${this.id}`)
    }
  }

  /**
   * Calls fn for every needle of the first idxBytes of `.idx` small enough to be a link or a
   * tombstone (a tombstone's entry has IDX_TOMBSTONE_SIZE), with its offset and body size.
   */
  async #smallNeedles(idxBytes: number, fn: (units: number, bodySize: number) => Promise<void>): Promise<void> {
    const entries = Math.floor(idxBytes / IDX_ENTRY_SIZE)
    const chunk = Buffer.alloc(Math.min(entries, IDX_LOAD_ENTRIES) * IDX_ENTRY_SIZE)
    for (let first = 0; first < entries; first += IDX_LOAD_ENTRIES) {
      this.#assertOpen()
      const count = Math.min(IDX_LOAD_ENTRIES, entries - first)
      await readFully(this.#idx, chunk, count * IDX_ENTRY_SIZE, first * IDX_ENTRY_SIZE)
      for (let i = 0; i < count; i++) {
        const size = chunk.readUInt32LE(i * IDX_ENTRY_SIZE + IDX_SIZE)
        if (size === IDX_DAMAGED_SIZE || (size !== IDX_TOMBSTONE_SIZE && size > LINK_BODY_SIZE_MAX)) continue
        await fn(chunk.readUInt32LE(i * IDX_ENTRY_SIZE + IDX_OFFSET), size === IDX_TOMBSTONE_SIZE ? TOMBSTONE_BODY_SIZE : size)
      }
    }
  }

  /** Refuses to start without room for a copy of the live bytes (and some slack). */
  async #checkRoom(slackBytes: number): Promise<void> {
    const fs = await statfs(this.#opts.dir)
    const free = fs.bavail * fs.bsize
    const need = this.#liveBytes + SUPERBLOCK_SIZE + slackBytes
    if (free < need) {
      throw new NeedleError('NS_ERR_DISK_FULL', `compacting volume ${this.id} needs about ${need} bytes free, and ${free} are: nothing was changed`)
    }
  }

  /**
   * Calls fn for every needle in [from, to) of `.dat`. A file's needle is stepped over by its
   * header (its checksum is left to reads and scrubs: a damaged file is carried over as it is,
   * never dropped); a link or a tombstone is decoded and verified, for its reference. A
   * stretch that is not a needle is skipped, as recovery does.
   */
  async #scanNeedles(from: number, to: number, throttle: Throttle, fn: (needle: ScannedNeedle, units: number, raw: () => Promise<Buffer>) => unknown): Promise<void> {
    const reader = new ChunkReader(this.#dat, to)
    let pos = from
    let ranSince = performance.now()
    while (pos < to) {
      this.#assertOpen()
      // Requests share this event loop: give them a turn every millisecond or so.
      if (performance.now() - ranSince > COMPACT_SLICE_MS) {
        await new Promise((resolve) => setImmediate(resolve))
        ranSince = performance.now()
      }
      const head = await reader.bytes(pos, NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE)
      const bodySize = head?.readUInt32LE(H_BODY_SIZE) ?? 0
      if (head && bodySize >= BODY_FIXED_SIZE && bodySize <= BODY_SIZE_MAX && pos + needleLength(bodySize) <= to && (head.readUInt8(NEEDLE_HEADER_SIZE + B_FLAGS) & (FLAG_LINK | FLAG_TOMBSTONE)) === 0) {
        const length = needleLength(bodySize)
        const file = { keyHi: head.readUInt32LE(H_KEY_HI), keyLo: head.readUInt32LE(H_KEY_LO), cookie: head.readUInt32LE(H_COOKIE), bodySize, length, tombstone: false, ref: undefined }
        // A file's bytes are read only when fn asks for them (when it is kept), and count then.
        const at = pos
        await fn(file, toUnits(at), async () => {
          await throttle.spend(length)
          return (await reader.bytes(at, length))!
        })
        pos += length
        continue
      }
      const needle = await tryNeedleAt(reader, pos, this.#seed)
      if (!needle) {
        const next = await findNextNeedle(reader, pos, this.#seed)
        if (next === undefined) break
        pos = next
        continue
      }
      const raw = (await reader.bytes(pos, needle.length))!
      await fn({ ...needle, whole: needle }, toUnits(pos), async () => raw)
      pos += needle.length
      await throttle.spend(needle.length)
    }
  }

  // -------------------------------------------------------------------------------------------
  // Recovery.

  /**
   * Loads `.idx`, checks it against `.dat`, and indexes the needles `.dat` holds past it.
   * - A partial last `.idx` entry, or entries that point outside `.dat` or out of order (a crash
   *   before the needle reached the disk, or damage), are dropped from that point on.
   * - If the needle behind the last kept entry is not whole and valid, `.idx` is not trusted at
   *   all and the index is rebuilt by scanning `.dat` from the superblock.
   * - Needles past the last kept entry are scanned, indexed and appended to `.idx`. At a needle
   *   that is not whole and valid, the rest of the file is searched for a valid needle: if there
   *   is one, the damaged bytes are skipped and kept (never cut below a valid needle); if there
   *   is none, `.dat` is cut back there (a torn tail).
   */
  async #recover(): Promise<void> {
    const datBytes = this.#datBytes
    let kept = 0
    let scanFrom = SUPERBLOCK_SIZE
    let lastOffset = -1
    let lastSize = 0
    // After an entry for a damaged region, the next entry may start anywhere past it.
    let afterDamage = false
    const wholeEntries = Math.floor(this.#idxBytes / IDX_ENTRY_SIZE)
    // Buffer.alloc never hands out a slice of the shared pool, so the Uint32Array view below
    // starts on a 4-byte boundary.
    const chunk = Buffer.alloc(Math.min(wholeEntries, IDX_LOAD_ENTRIES) * IDX_ENTRY_SIZE)
    load: for (let first = 0; first < wholeEntries; first += IDX_LOAD_ENTRIES) {
      const count = Math.min(IDX_LOAD_ENTRIES, wholeEntries - first)
      await readFully(this.#idx, chunk, count * IDX_ENTRY_SIZE, first * IDX_ENTRY_SIZE)
      const words = new Uint32Array(chunk.buffer, chunk.byteOffset, count * 4)
      for (let i = 0; i < count; i++) {
        const keyLo = words[i * 4]!
        const keyHi = words[i * 4 + 1]!
        const offset = words[i * 4 + 2]!
        const size = words[i * 4 + 3]!
        const start = toByteOffset(offset)
        if (size === IDX_DAMAGED_SIZE) {
          if (start !== scanFrom || afterDamage || start >= datBytes) break load
          afterDamage = true
          kept++
          continue
        }
        const end = start + (size === IDX_TOMBSTONE_SIZE ? TOMBSTONE_LENGTH : needleLength(size))
        if ((afterDamage ? start <= scanFrom : start !== scanFrom) || end > datBytes) break load
        afterDamage = false
        this.#applyToIndex(keyHi, keyLo, offset, size)
        kept++
        scanFrom = end
        lastOffset = offset
        lastSize = size
      }
    }
    // A damaged region's entry is kept only with the entry after it; the scan finds it again.
    if (afterDamage) kept--
    if (kept < wholeEntries || this.#idxBytes % IDX_ENTRY_SIZE !== 0) {
      this.#opts.onRecovery?.(`volume ${this.id}: .idx kept ${kept} of ${wholeEntries} entries (${this.#idxBytes} bytes)`)
    }
    if (kept > 0 && !(await this.#isWholeNeedle(lastOffset, lastSize))) {
      this.#opts.onRecovery?.(`volume ${this.id}: .idx does not match .dat; rebuilding the index from .dat`)
      this.#index = new NeedleIndex()
      this.#liveBytes = 0
      kept = 0
      scanFrom = SUPERBLOCK_SIZE
    }
    this.#idxBytes = kept * IDX_ENTRY_SIZE
    await this.#idx.truncate(this.#idxBytes)
    await this.#scanDat(scanFrom)
  }

  async #isWholeNeedle(offsetUnits: number, size: number): Promise<boolean> {
    try {
      const needle = await this.#readNeedleAt(offsetUnits, size === IDX_TOMBSTONE_SIZE ? TOMBSTONE_BODY_SIZE : size)
      return needle.tombstone === (size === IDX_TOMBSTONE_SIZE)
    } catch {
      return false
    }
  }

  /** Indexes every valid needle from byte `from` to the end of `.dat`, as described above. */
  async #scanDat(from: number): Promise<void> {
    const reader = new ChunkReader(this.#dat, this.#datBytes)
    const pendingIdx: Buffer[] = []
    let pos = from
    let indexed = 0
    while (pos < this.#datBytes) {
      const needle = await tryNeedleAt(reader, pos, this.#seed)
      if (needle) {
        const size = needle.tombstone ? IDX_TOMBSTONE_SIZE : needle.bodySize
        pendingIdx.push(encodeIdxEntry({ keyHi: needle.keyHi, keyLo: needle.keyLo, offset: toUnits(pos), size }))
        this.#applyToIndex(needle.keyHi, needle.keyLo, toUnits(pos), size)
        indexed++
        pos += needle.length
        if (pendingIdx.length >= 4096) await this.#flushIdx(pendingIdx)
        continue
      }
      const next = await findNextNeedle(reader, pos, this.#seed)
      if (next === undefined) {
        this.#opts.onRecovery?.(`volume ${this.id}: cut a torn tail of ${this.#datBytes - pos} bytes at ${pos}`)
        await this.#dat.truncate(pos)
        await this.#dat.datasync()
        this.#datBytes = pos
        break
      }
      // Recorded in `.idx`, so the next start does not scan from here again.
      this.#opts.onRecovery?.(`volume ${this.id}: skipped ${next - pos} damaged bytes at ${pos}`)
      pendingIdx.push(encodeIdxEntry({ keyHi: 0, keyLo: 0, offset: toUnits(pos), size: IDX_DAMAGED_SIZE }))
      pos = next
    }
    await this.#flushIdx(pendingIdx)
    if (indexed > 0) this.#opts.onRecovery?.(`volume ${this.id}: indexed ${indexed} needles from .dat`)
  }

  async #flushIdx(entries: Buffer[]): Promise<void> {
    if (entries.length === 0) return
    const buf = Buffer.concat(entries)
    entries.length = 0
    await writeFully(this.#idx, [buf], this.#idxBytes)
    this.#idxBytes += buf.length
  }

  // -------------------------------------------------------------------------------------------
  // Scrub and verify: walking the index, checking each key's needle on disk, and storing a good
  // copy of a file over a damaged one.

  /**
   * Up to `limit` keys of the index above `after` (from the first key when undefined), in
   * increasing key order, live and deleted. The walk skips the index's segments below `after`
   * and stops once the page is full, so a page costs about its own keys, and no more memory.
   */
  keysAfter(after: { readonly keyHi: number; readonly keyLo: number } | undefined, limit: number): IndexedKey[] {
    this.#assertOpen()
    const page: IndexedKey[] = []
    if (limit < 1) return page
    const full = {}
    try {
      this.#index.forEach((keyHi, keyLo, _offset, _size, deleted) => {
        if (after && (keyHi < after.keyHi || (keyHi === after.keyHi && keyLo <= after.keyLo))) return
        page.push({ keyHi, keyLo, deleted })
        if (page.length >= limit) throw full
      }, after)
    } catch (err) {
      if (err !== full) throw err
    }
    return page
  }

  /**
   * What the volume holds for key, read from the disk (never from the read cache, whose copy
   * may be whole while the disk's is not) and checked: the needle's checksum, and for a link the
   * checksum of the bytes it shares. Undefined for a key the index does not know. Damage is an
   * answer (`damaged`), not an error; a failed disk read is an error.
   */
  async inspect(keyHi: number, keyLo: number): Promise<InspectedKey | undefined> {
    this.#assertOpen()
    const index = this.#index
    if (!index.lookup(keyHi, keyLo)) return undefined
    const deleted = index.foundDeleted
    const offset = index.foundOffset
    const bodySize = index.foundSize
    let bytesRead = 0
    const readRaw = async (offsetUnits: number, size: number): Promise<{ buf: Buffer; n: number }> => {
      const buf = Buffer.allocUnsafe(needleLength(size))
      bytesRead += buf.length
      try {
        return { buf, n: await this.#trackRead(preadAsync(this.#dat.fd, buf, buf.length, toByteOffset(offsetUnits))) }
      } catch (err) {
        throw diskError(err, `read volume ${this.id}`)
      }
    }
    const first = await readRaw(offset, bodySize)
    // Until the needle is checked, its cookie is only what its header says.
    let cookie = first.n >= NEEDLE_HEADER_SIZE ? first.buf.readUInt32LE(0) : 0
    let appendAtMs = 0
    try {
      const needle = this.#decodeRead(first.buf, first.n, offset)
      if (needle.keyHi !== keyHi || needle.keyLo !== keyLo) {
        throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: the index points at another needle`)
      }
      cookie = needle.cookie
      appendAtMs = needle.appendAtMs
      if (deleted || needle.tombstone) {
        if (!deleted || !needle.tombstone) throw new NeedleError('NS_ERR_CORRUPT_NEEDLE', `volume ${this.id}: the index and the needle disagree on a delete`)
        return { keyHi, keyLo, cookie, state: 'deleted', size: needle.ref?.dataSize ?? 0, md5: undefined, appendAtMs, bytesRead }
      }
      let bytes = needle
      if (needle.ref) {
        const target = await readRaw(needle.ref.offset, needle.ref.bodySize)
        bytes = this.#checkTarget(this.#decodeRead(target.buf, target.n, needle.ref.offset), needle.ref)
      }
      const md5 = bytes.md5 ?? needle.md5 ?? createHash('md5').update(bytes.data).digest()
      return { keyHi, keyLo, cookie, state: 'live', size: bytes.data.length, md5: Buffer.from(md5), appendAtMs, bytesRead }
    } catch (err) {
      if (!isNeedleError(err) || err.code !== 'NS_ERR_CORRUPT_NEEDLE') throw err
      // A damaged tombstone still deletes: reads answer 404 whatever its bytes are.
      if (deleted) return { keyHi, keyLo, cookie, state: 'deleted', size: 0, md5: undefined, appendAtMs, bytesRead }
      return { keyHi, keyLo, cookie, state: 'damaged', size: 0, md5: undefined, appendAtMs, bytesRead, error: err.message }
    }
  }

  /**
   * Stores a good copy of a file over whatever the volume holds for its key, as a repair does:
   * like write(), except that a damaged needle (whose cookie cannot be trusted) is replaced
   * whatever cookie its header shows, and a full volume takes it (a repair replaces a file it
   * already counts, as a tombstone does). A live or deleted file with another cookie is still
   * NS_ERR_COOKIE_MISMATCH; an operator's read-only stop refuses it.
   */
  async restore(input: WriteInput): Promise<{ size: number }> {
    this.#assertOpen()
    if (this.#readOnly) throw readOnly(this.id)
    return this.#underKeyLock(input.keyHi, input.keyLo, async () => {
      const existing = await this.inspect(input.keyHi, input.keyLo)
      if (existing && existing.state !== 'damaged' && existing.cookie !== input.cookie) {
        throw new NeedleError('NS_ERR_COOKIE_MISMATCH', 'the file id exists with another cookie')
      }
      const buf = encodeNeedle(input satisfies NeedleInput, this.#opts.now(), this.#seed)
      await this.#append(buf, input.keyHi, input.keyLo, buf.readUInt32LE(H_BODY_SIZE), { repair: true })
      return { size: input.data.length }
    })
  }
}

/** A key of the index, as keysAfter() lists it. */
export interface IndexedKey {
  readonly keyHi: number
  readonly keyLo: number
  readonly deleted: boolean
}

/** What inspect() found for a key. */
export interface InspectedKey {
  readonly keyHi: number
  readonly keyLo: number
  /** The file's cookie; for a damaged needle, what its header says (unchecked). */
  readonly cookie: number
  /** live: whole and valid; damaged: a needle (or the bytes a link shares) fails its checks;
   *  deleted: the key's last needle is a tombstone. */
  readonly state: 'live' | 'damaged' | 'deleted'
  /** Bytes of the file (live), of the file deleted (deleted), or 0. */
  readonly size: number
  /** The MD5 of a live file's bytes (the stored one, else computed). */
  readonly md5: Buffer | undefined
  /** When the key's needle was appended (0 when it is damaged). */
  readonly appendAtMs: number
  /** Bytes read from the disk to check it. */
  readonly bytesRead: number
  /** Why a damaged needle is damaged. */
  readonly error?: string
}

/** Reads a file front to back through one large buffer, for scans. */
class ChunkReader {
  readonly #fh: FileHandle
  readonly #fileBytes: number
  #buf = Buffer.allocUnsafe(SCAN_CHUNK_BYTES)
  #start = 0
  #length = 0

  constructor(fh: FileHandle, fileBytes: number) {
    this.#fh = fh
    this.#fileBytes = fileBytes
  }

  /** A view of `length` bytes at `pos`, valid until the next call; undefined past the end. */
  async bytes(pos: number, length: number): Promise<Buffer | undefined> {
    if (pos + length > this.#fileBytes) return undefined
    if (pos < this.#start || pos + length > this.#start + this.#length) {
      if (length > this.#buf.length) this.#buf = Buffer.allocUnsafe(length)
      this.#start = pos
      this.#length = Math.min(this.#buf.length, this.#fileBytes - pos)
      await readFully(this.#fh, this.#buf, this.#length, pos)
    }
    return this.#buf.subarray(pos - this.#start, pos - this.#start + length)
  }
}

/** The whole, valid needle at byte `pos`, or undefined. Its buffers are views into the reader. */
async function tryNeedleAt(reader: ChunkReader, pos: number, seed: bigint): Promise<Needle | undefined> {
  const head = await reader.bytes(pos, NEEDLE_HEADER_SIZE)
  if (!head) return undefined
  const bodySize = head.readUInt32LE(H_BODY_SIZE)
  if (bodySize < BODY_FIXED_SIZE || bodySize > BODY_SIZE_MAX) return undefined
  const buf = await reader.bytes(pos, needleLength(bodySize))
  if (!buf) return undefined
  try {
    return decodeNeedle(buf, 0, seed)
  } catch {
    return undefined
  }
}

/** The byte offset of the next valid needle after `pos`, trying every aligned position. */
async function findNextNeedle(reader: ChunkReader, pos: number, seed: bigint): Promise<number | undefined> {
  for (let at = pos + NEEDLE_ALIGNMENT; ; at += NEEDLE_ALIGNMENT) {
    const head = await reader.bytes(at, NEEDLE_HEADER_SIZE)
    if (!head) return undefined
    if (await tryNeedleAt(reader, at, seed)) return at
  }
}

/**
 * Applies one `.idx` entry to an index; answers the change of live bytes. A deleted key's entry
 * points at its tombstone, which points at what it deleted.
 */
function applyEntry(index: NeedleIndex, keyHi: number, keyLo: number, offsetUnits: number, size: number): number {
  if (size === IDX_TOMBSTONE_SIZE) {
    const gone = index.lookup(keyHi, keyLo) && !index.foundDeleted ? needleLength(index.foundSize) : 0
    index.set(keyHi, keyLo, offsetUnits, TOMBSTONE_BODY_SIZE)
    index.markDeleted(keyHi, keyLo)
    return -gone
  }
  const previous = index.set(keyHi, keyLo, offsetUnits, size)
  return needleLength(size) - (previous > 0 ? needleLength(previous) : 0)
}

export interface CompactOptions {
  /** Tombstones younger than this are kept, with what they deleted, so undelete still works. */
  readonly graceMs: number
  /** Bytes read per second at most (0 or undefined: no limit). */
  readonly bytesPerSecond?: number
  /** Free bytes wanted beyond the live bytes before starting (default 16 MiB). */
  readonly roomSlackBytes?: number
  /** Called at each step of the commit (tests crash the process there). */
  readonly fault?: (step: CompactStep) => void
}

export type CompactStep = 'copied' | 'synced' | 'marked' | 'renamed-dat' | 'renamed'
export const COMPACT_STEPS: readonly CompactStep[] = ['copied', 'synced', 'marked', 'renamed-dat', 'renamed']

export interface CompactResult {
  readonly volume: number
  readonly beforeBytes: number
  readonly afterBytes: number
  readonly needles: number
  readonly revision: number
  readonly ms: number
}

/** The largest body a link can have: its reference, a name and a type. */
const LINK_BODY_SIZE_MAX = BODY_FIXED_SIZE + NAME_BYTES_MAX + MIME_BYTES_MAX + REF_SIZE

/** Appends are held once the tail left to copy is this small, or after this many rounds. */
const COMPACT_TAIL_HOLD_BYTES = 1024 * 1024
const COMPACT_TAIL_ROUNDS = 4
/** Room wanted beyond the live bytes before a compaction starts. */
const COMPACT_ROOM_SLACK_BYTES = 16 * 1024 * 1024
const COMPACT_FLUSH_BYTES = 4 * 1024 * 1024
/** Longest stretch a compaction runs on the event loop before it lets requests in. */
const COMPACT_SLICE_MS = 1

export function compactDatPath(dir: string, volumeId: number): string {
  return join(dir, `${volumeId}.cpd`)
}

export function compactIdxPath(dir: string, volumeId: number): string {
  return join(dir, `${volumeId}.cpx`)
}

/** Present from the moment both compacted files are durable until the swap is done. */
export function compactMarkerPath(dir: string, volumeId: number): string {
  return join(dir, `${volumeId}.cpc`)
}

async function writeMarker(path: string, revision: number): Promise<void> {
  const fh = await open(path, 'w')
  try {
    await fh.writeFile(`${revision}\n`)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await syncDir(dirname(path))
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false
  }
}

/**
 * What a crash left of a compaction: with the commit marker, the swap is finished (each rename
 * that has not happened yet); without it, the half-made files are removed.
 */
export async function finishCompaction(dir: string, volumeId: number, log?: (message: string) => void): Promise<void> {
  const marker = compactMarkerPath(dir, volumeId)
  if (await exists(marker)) {
    if (await exists(compactDatPath(dir, volumeId))) await rename(compactDatPath(dir, volumeId), datPath(dir, volumeId))
    if (await exists(compactIdxPath(dir, volumeId))) await rename(compactIdxPath(dir, volumeId), idxPath(dir, volumeId))
    await syncDir(dir)
    await rm(marker)
    await syncDir(dir)
    log?.(`volume ${volumeId}: finished a compaction that a stop interrupted after its commit`)
    return
  }
  let removed = false
  for (const path of [compactDatPath(dir, volumeId), compactIdxPath(dir, volumeId)]) {
    if (await exists(path)) {
      await rm(path)
      removed = true
    }
  }
  if (removed) log?.(`volume ${volumeId}: dropped a compaction that a stop interrupted before its commit`)
}

/** Keeps a long scan under a byte rate, by sleeping between needles. */
class Throttle {
  readonly #bytesPerSecond: number
  readonly #start = performance.now()
  #spent = 0

  constructor(bytesPerSecond: number) {
    this.#bytesPerSecond = bytesPerSecond
  }

  async spend(bytes: number): Promise<void> {
    if (this.#bytesPerSecond <= 0) return
    this.#spent += bytes
    const aheadMs = (this.#spent / this.#bytesPerSecond) * 1000 - (performance.now() - this.#start)
    if (aheadMs > 10) await new Promise((resolve) => setTimeout(resolve, aheadMs))
  }
}

/**
 * The new files of a compaction: needles copied in their order (a link or a tombstone encoded
 * again, its reference moved to where the needle it names now lies), their `.idx` entries, and
 * the index of the new files, written in large chunks.
 */
class CompactWriter {
  readonly index = new NeedleIndex()
  liveBytes = 0
  datBytes = 0
  idxBytes = 0
  needles = 0
  readonly #dat: FileHandle
  readonly #idx: FileHandle
  readonly #seed: bigint
  /** Needles and entries not written yet: copied into two buffers, written when one is full. */
  readonly #datBuf = Buffer.allocUnsafeSlow(COMPACT_FLUSH_BYTES)
  #datUsed = 0
  readonly #idxBuf = Buffer.allocUnsafeSlow(COMPACT_FLUSH_BYTES / 16)
  #idxUsed = 0
  #datFlushed = 0
  #idxFlushed = 0
  /** Old offset → new offset of every copied needle, in increasing old offsets. */
  #oldOffsets = new Uint32Array(1024)
  #newOffsets = new Uint32Array(1024)
  #moved = 0

  constructor(dat: FileHandle, idx: FileHandle, seed: bigint, superblock: Buffer) {
    this.#dat = dat
    this.#idx = idx
    this.#seed = seed
    this.#datUsed = superblock.copy(this.#datBuf, 0)
    this.datBytes = superblock.length
  }

  async copy(scanned: ScannedNeedle, oldUnits: number, raw: Buffer): Promise<void> {
    const units = toUnits(this.datBytes)
    let buf: Buffer
    if (scanned.ref && scanned.whole) {
      const needle = scanned.whole
      if (!needle.ref) throw new TypeError('a scanned reference without its needle')
      // A tombstone past its grace may name a needle that was not kept: offset 0, never read.
      // A link always finds its bytes, or the compaction stops: a file is never left broken.
      const moved = this.#where(needle.ref.offset)
      if (moved === undefined && !needle.tombstone) {
        throw new NeedleError('NS_ERR_CORRUPT_VOLUME', `the bytes a link shares (at ${toByteOffset(needle.ref.offset)}) were not found whole; repair the volume before compacting it (nothing was changed)`)
      }
      const ref = { ...needle.ref, offset: moved ?? 0 }
      buf = encodeNeedle({
        cookie: needle.cookie,
        keyHi: needle.keyHi,
        keyLo: needle.keyLo,
        data: EMPTY,
        ref,
        ...(needle.tombstone ? { tombstone: true } : {}),
        ...(needle.name !== undefined ? { name: needle.name } : {}),
        ...(needle.mime !== undefined ? { mime: needle.mime } : {}),
        ...(needle.lastModifiedMs !== undefined ? { lastModifiedMs: needle.lastModifiedMs } : {}),
        ...(needle.md5 !== undefined ? { md5: needle.md5 } : {}),
      }, needle.appendAtMs, this.#seed)
    } else {
      buf = raw
    }
    const size = scanned.tombstone ? IDX_TOMBSTONE_SIZE : scanned.bodySize
    if (this.#datUsed + buf.length > this.#datBuf.length || this.#idxUsed + IDX_ENTRY_SIZE > this.#idxBuf.length) await this.#flush()
    if (buf.length > this.#datBuf.length) {
      await writeFully(this.#dat, [buf], this.#datFlushed)
      this.#datFlushed += buf.length
    } else {
      this.#datUsed += buf.copy(this.#datBuf, this.#datUsed)
    }
    encodeIdxEntry({ keyHi: scanned.keyHi, keyLo: scanned.keyLo, offset: units, size }, this.#idxBuf, this.#idxUsed)
    this.#idxUsed += IDX_ENTRY_SIZE
    this.#remember(oldUnits, units)
    this.liveBytes += applyEntry(this.index, scanned.keyHi, scanned.keyLo, units, size)
    this.datBytes += buf.length
    this.idxBytes += IDX_ENTRY_SIZE
    this.needles++
  }

  #remember(oldUnits: number, units: number): void {
    if (this.#moved === this.#oldOffsets.length) {
      const old = new Uint32Array(this.#moved * 2)
      old.set(this.#oldOffsets)
      this.#oldOffsets = old
      const moved = new Uint32Array(this.#moved * 2)
      moved.set(this.#newOffsets)
      this.#newOffsets = moved
    }
    this.#oldOffsets[this.#moved] = oldUnits
    this.#newOffsets[this.#moved] = units
    this.#moved++
  }

  /** Where the needle that was at oldUnits now lies, if it was copied. */
  #where(oldUnits: number): number | undefined {
    let lo = 0
    let hi = this.#moved - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const at = this.#oldOffsets[mid]!
      if (at === oldUnits) return this.#newOffsets[mid]
      if (at < oldUnits) lo = mid + 1
      else hi = mid - 1
    }
    return undefined
  }

  async #flush(): Promise<void> {
    if (this.#datUsed > 0) {
      await writeFully(this.#dat, [this.#datBuf.subarray(0, this.#datUsed)], this.#datFlushed)
      this.#datFlushed += this.#datUsed
      this.#datUsed = 0
    }
    if (this.#idxUsed > 0) {
      await writeFully(this.#idx, [this.#idxBuf.subarray(0, this.#idxUsed)], this.#idxFlushed)
      this.#idxFlushed += this.#idxUsed
      this.#idxUsed = 0
    }
  }

  /** Writes what is buffered and makes both files durable. */
  async finish(): Promise<void> {
    await this.#flush()
    await this.#dat.datasync()
    await this.#idx.datasync()
  }
}

/** A needle as a compaction's scan sees it: a file's by its header, a link or tombstone whole. */
interface ScannedNeedle {
  readonly keyHi: number
  readonly keyLo: number
  readonly cookie: number
  readonly bodySize: number
  readonly length: number
  readonly tombstone: boolean
  readonly ref: NeedleRef | undefined
  /** The decoded, verified needle (links and tombstones). */
  readonly whole?: Needle
}

/** Rejects an append whose reference a compaction made stale; never leaves this module. */
const MOVED = new Error('the needles moved')

function notFound(): NeedleError {
  return new NeedleError('NS_ERR_NOT_FOUND', 'file not found')
}

function closed(id: number): NeedleError {
  return new NeedleError('NS_ERR_VOLUME_CLOSED', `volume ${id} is closed`)
}

function readOnly(id: number): NeedleError {
  return new NeedleError('NS_ERR_VOLUME_READ_ONLY', `volume ${id} is read-only`)
}

async function assertAbsent(path: string): Promise<void> {
  try {
    const fh = await open(path, 'r')
    await fh.close()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  throw new NeedleError('NS_ERR_VOLUME_EXISTS', `${path} exists`)
}

/** Makes a rename or a file creation in dir durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function writeFully(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  let remaining = bufs
  let pos = position
  while (remaining.length > 0) {
    const total = remaining.reduce((n, b) => n + b.length, 0)
    const { bytesWritten } = await fh.writev(remaining, pos)
    if (bytesWritten === total) return
    if (bytesWritten === 0) throw Object.assign(new Error('no bytes written'), { code: 'ENOSPC' })
    pos += bytesWritten
    let skip = bytesWritten
    const rest: Buffer[] = []
    for (const b of remaining) {
      if (skip >= b.length) skip -= b.length
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b)
        skip = 0
      }
    }
    remaining = rest
  }
}

const SLAB_BYTES = 1024 * 1024
const SLAB_PIECE_MAX = 64 * 1024
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
let slabUsed = 0

/**
 * A buffer for one synchronous needle read. Small ones are carved from a shared slab, so a read
 * costs no allocation of its own; a slab is freed by the garbage collector once no response
 * still holds a piece of it.
 */
function readBuffer(length: number): Buffer {
  if (length > SLAB_PIECE_MAX) return Buffer.allocUnsafe(length)
  if (slabUsed + length > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
    slabUsed = 0
  }
  const piece = slab.subarray(slabUsed, slabUsed + length)
  slabUsed += align(length)
  return piece
}

function preadAsync(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    readCallback(fd, buf, 0, length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)))
  })
}

async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done)
    if (bytesRead === 0) throw new NeedleError('NS_ERR_IO', `unexpected end of file at ${position + done}`)
    done += bytesRead
  }
}
