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
import { open, rename, rm, type FileHandle } from 'node:fs/promises'
import { endianness } from 'node:os'
import { join } from 'node:path'
import { NeedleError, diskError } from '../common/errors.js'
import {
  BODY_FIXED_SIZE,
  BODY_SIZE_MAX,
  align,
  NEEDLE_ALIGNMENT,
  B_DATA_SIZE,
  B_FLAGS,
  B_MD5,
  FLAG_HAS_MD5,
  FLAG_LINK,
  FLAG_TOMBSTONE,
  H_BODY_SIZE,
  IDX_ENTRY_SIZE,
  IDX_DAMAGED_SIZE,
  IDX_TOMBSTONE_SIZE,
  MD5_SIZE,
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
  readonly #dat: FileHandle
  readonly #idx: FileHandle
  #index = new NeedleIndex()
  readonly #superblock: Superblock
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
  readonly #cacheId: number
  #queue: PendingAppend[] = []
  #draining: Promise<void> | undefined
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
    const { offsetUnits, length } = this.#locate(keyHi, keyLo)
    const needle = this.#checkFound(await this.#needleAt(offsetUnits, length, keyHi, keyLo), keyHi, keyLo, cookie)
    if (!needle.ref) return needle
    return linked(needle, await this.#target(needle.ref))
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
      await this.#checkCookie(input.keyHi, input.keyLo, input.cookie)
      const { ref, md5 } = await this.#linkTarget(input)
      const buf = encodeNeedle({ ...input, data: EMPTY, ref, md5 }, this.#opts.now(), this.#seed)
      await this.#append(buf, input.keyHi, input.keyLo, buf.readUInt32LE(H_BODY_SIZE))
      return { size: ref.dataSize }
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
      const existing = await this.#peek(keyHi, keyLo)
      if (!existing || existing.cookie !== cookie) return { size: 0 }
      if (existing.deleted) return { size: existing.dataSize }
      if (this.#readOnly) throw readOnly(this.id)
      const ref: NeedleRef = { offset: existing.offset, bodySize: existing.bodySize, dataSize: existing.dataSize, keyHi, keyLo, cookie }
      const buf = encodeNeedle({ cookie, keyHi, keyLo, data: EMPTY, tombstone: true, ref }, this.#opts.now(), this.#seed)
      await this.#append(buf, keyHi, keyLo, IDX_TOMBSTONE_SIZE)
      return { size: existing.dataSize }
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
      const existing = await this.#peek(keyHi, keyLo)
      if (!existing || existing.cookie !== cookie) throw notFound()
      if (!existing.deleted) return { size: existing.dataSize, undeleted: false }
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
      const restored = deleted
      const buf = encodeNeedle({
        cookie,
        keyHi,
        keyLo,
        data: EMPTY,
        ref,
        ...(restored.name !== undefined ? { name: restored.name } : {}),
        ...(restored.mime !== undefined ? { mime: restored.mime } : {}),
        ...(restored.lastModifiedMs !== undefined ? { lastModifiedMs: restored.lastModifiedMs } : {}),
        ...(restored.md5 !== undefined ? { md5: restored.md5 } : {}),
      }, this.#opts.now(), this.#seed)
      await this.#append(buf, keyHi, keyLo, buf.readUInt32LE(H_BODY_SIZE))
      return { size: ref.dataSize, undeleted: true }
    })
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

  #append(buf: Buffer, keyHi: number, keyLo: number, size: number): Promise<void> {
    if (this.#state !== 'open') return Promise.reject(closed(this.id))
    if (this.#queue.length >= this.#opts.writeQueueMax) {
      return Promise.reject(new NeedleError('NS_ERR_OVERLOADED', `volume ${this.id}: ${this.#queue.length} writes queued`))
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ buf, keyHi, keyLo, size, resolve, reject })
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
      const batch = this.#takeBatch()
      if (batch.length > 0) await this.#writeBatch(batch)
    }
  }

  #takeBatch(): PendingAppend[] {
    const batch: PendingAppend[] = []
    let bytes = 0
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!
      if (batch.length > 0 && (bytes + next.buf.length > this.#opts.writeBatchBytesMax || batch.length >= this.#opts.writeBatchMax)) break
      const end = this.#datBytes + bytes + next.buf.length
      if (this.#readOnly || end > appendLimit(this.#opts.volumeBytesMax, next.size)) {
        // No room for this append: it fails. A file that does not fit marks the volume full.
        if (next.size !== IDX_TOMBSTONE_SIZE) this.#fileDidNotFit = true
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
    const index = this.#index
    if (size === IDX_TOMBSTONE_SIZE) {
      // A deleted key's entry points at its tombstone, which points at what it deleted.
      if (index.lookup(keyHi, keyLo) && !index.foundDeleted) this.#liveBytes -= needleLength(index.foundSize)
      index.set(keyHi, keyLo, offsetUnits, TOMBSTONE_BODY_SIZE)
      index.markDeleted(keyHi, keyLo)
      return
    }
    const previous = index.set(keyHi, keyLo, offsetUnits, size)
    if (previous > 0) this.#liveBytes -= needleLength(previous)
    this.#liveBytes += needleLength(size)
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
