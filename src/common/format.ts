/**
 * The on-disk format of a volume, described once. A volume is `<vid>.dat` (a superblock, then
 * needles back to back, each aligned to 8 bytes) and `<vid>.idx` (fixed-size entries appended
 * after each needle, a checkpoint for fast start-up that can always be rebuilt from `.dat`).
 * All integers are little-endian, so the index file can be read through a Uint32Array view.
 *
 * Superblock (SUPERBLOCK_SIZE = 64 bytes, at offset 0 of `.dat`):
 *
 *   offset size field
 *   0      4    magic "NDLS"
 *   4      1    format version (FORMAT_VERSION)
 *   5      1    replica placement, `xyz` packed as x*100 + y*10 + z
 *   6      2    reserved, zero
 *   8      4    compaction revision (u32)
 *   12     4    volume id (u32)
 *   16     8    created at, milliseconds since the epoch (u48 in 8 bytes)
 *   24     8    checksum seed (u64): seeds every needle checksum of this volume
 *   32     24   collection name, ASCII, zero-padded (all zero: no collection)
 *   56     8    xxh64 of bytes 0 … 55 (unseeded)
 *
 * Needle (NEEDLE_HEADER_SIZE + bodySize + NEEDLE_FOOTER_SIZE, padded to a multiple of 8):
 *
 *   header  0      4    cookie (u32)
 *           4      4    key, low half (u32)
 *           8      4    key, high half (u32)
 *           12     4    bodySize (u32): bytes of the body, BODY_FIXED_SIZE … BODY_SIZE_MAX
 *   body    16     1    flags (FLAG_*)
 *           17     1    nameLength (bytes of UTF-8, 0 … 255)
 *           18     1    mimeLength (bytes of ASCII, 0 … 255)
 *           19     1    reserved, zero
 *           20     4    dataSize (u32)
 *           24     8    last modified, milliseconds since the epoch (u48 in 8 bytes)
 *           32     16   MD5 of the data (zero unless FLAG_HAS_MD5)
 *           48     n    file name, then mime type, then data
 *   footer  16+bodySize 8   appended at, milliseconds since the epoch (u48 in 8 bytes)
 *           24+bodySize 8   xxh64, seeded with the volume's checksum seed, of every byte of
 *                            the needle before it (header, body, time)
 *   padding to the next multiple of NEEDLE_ALIGNMENT, zero
 *
 * A tombstone is a needle with FLAG_TOMBSTONE, no name or mime type, and a reference as its
 * data: the needle it deletes, so that an undelete within the grace period can find the bytes
 * again (the tombstone's append time is the time of the delete). A link is a needle with
 * FLAG_LINK and a reference as its data: the needle whose bytes it shares (MD5 dedup, and an
 * undeleted file). A link may carry its own name, mime type and time; it never points at
 * another link or at a tombstone.
 *
 * Reference (REF_SIZE = 24 bytes, the data of a tombstone or a link):
 *
 *   0  4  offset of the needle referred to, in units of NEEDLE_ALIGNMENT
 *   4  4  its bodySize        8  4  its file's dataSize (what a reader of the link gets)
 *   12 4  its key, low half   16 4  its key, high half    20 4  its cookie
 *
 * The checksum seed is random per volume and never leaves the server, so bytes a user uploads
 * can never pass for a needle of the volume, even if they hold a well-formed needle: a scan
 * that resynchronizes after damage cannot be fooled into indexing forged content.
 *
 * Index entry (IDX_ENTRY_SIZE = 16 bytes):
 *
 *   0  4  key, low half      4  4  key, high half
 *   8  4  offset of the needle in `.dat`, in units of NEEDLE_ALIGNMENT bytes
 *   12 4  bodySize of the needle, IDX_TOMBSTONE_SIZE for a tombstone, or IDX_DAMAGED_SIZE for
 *         a damaged region that recovery skipped (it ends where the next entry starts)
 *
 * Offsets count 8-byte units in 32 bits, so a volume holds at most VOLUME_BYTES_MAX (32 GiB).
 * Encoders and decoders here are pure: no I/O, no clock (times are passed in).
 */
import xxhash from 'xxhash-wasm'
import { NeedleError } from './errors.js'

const hasher = await xxhash()

// ---------------------------------------------------------------------------------------------
// Sizes and offsets. Each is derived from the ones before it.

export const FORMAT_VERSION = 2
export const MAGIC = 0x534c444e // "NDLS" read as a little-endian u32
export const NEEDLE_ALIGNMENT = 8
export const VOLUME_BYTES_MAX = 0x1_0000_0000 * NEEDLE_ALIGNMENT // 32 GiB

export const SB_MAGIC = 0
export const SB_VERSION = SB_MAGIC + 4
export const SB_PLACEMENT = SB_VERSION + 1
export const SB_RESERVED_A = SB_PLACEMENT + 1
export const SB_COMPACT_REVISION = SB_RESERVED_A + 2
export const SB_VOLUME_ID = SB_COMPACT_REVISION + 4
export const SB_CREATED_AT = SB_VOLUME_ID + 4
export const SB_CHECKSUM_SEED = SB_CREATED_AT + 8
export const SB_COLLECTION = SB_CHECKSUM_SEED + 8
export const COLLECTION_BYTES_MAX = 24
export const SB_CHECKSUM = SB_COLLECTION + COLLECTION_BYTES_MAX
export const SUPERBLOCK_SIZE = SB_CHECKSUM + 8

export const H_COOKIE = 0
export const H_KEY_LO = H_COOKIE + 4
export const H_KEY_HI = H_KEY_LO + 4
export const H_BODY_SIZE = H_KEY_HI + 4
export const NEEDLE_HEADER_SIZE = H_BODY_SIZE + 4

// Body fields, relative to the start of the body.
export const B_FLAGS = 0
export const B_NAME_LENGTH = B_FLAGS + 1
export const B_MIME_LENGTH = B_NAME_LENGTH + 1
export const B_RESERVED = B_MIME_LENGTH + 1
export const B_DATA_SIZE = B_RESERVED + 1
export const B_LAST_MODIFIED = B_DATA_SIZE + 4
export const B_MD5 = B_LAST_MODIFIED + 8
export const MD5_SIZE = 16
export const BODY_FIXED_SIZE = B_MD5 + MD5_SIZE

export const F_APPEND_AT = 0
export const F_CHECKSUM = F_APPEND_AT + 8
export const NEEDLE_FOOTER_SIZE = F_CHECKSUM + 8

export const NAME_BYTES_MAX = 255
export const MIME_BYTES_MAX = 255
/** The index keeps the body size in 31 bits (its top bit marks deleted entries in memory). */
export const BODY_SIZE_MAX = 0x7fff_ffff - NEEDLE_HEADER_SIZE - NEEDLE_FOOTER_SIZE - NEEDLE_ALIGNMENT
export const DATA_BYTES_MAX = BODY_SIZE_MAX - BODY_FIXED_SIZE - NAME_BYTES_MAX - MIME_BYTES_MAX
/** The smallest possible needle: an empty file without name, type or time. */
export const NEEDLE_MIN_LENGTH = align(NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + NEEDLE_FOOTER_SIZE)

export const REF_OFFSET = 0
export const REF_BODY_SIZE = REF_OFFSET + 4
export const REF_DATA_SIZE = REF_BODY_SIZE + 4
export const REF_KEY_LO = REF_DATA_SIZE + 4
export const REF_KEY_HI = REF_KEY_LO + 4
export const REF_COOKIE = REF_KEY_HI + 4
export const REF_SIZE = REF_COOKIE + 4
/** Every tombstone has this body size (its data is one reference) and this length. */
export const TOMBSTONE_BODY_SIZE = BODY_FIXED_SIZE + REF_SIZE
export const TOMBSTONE_LENGTH = align(NEEDLE_HEADER_SIZE + TOMBSTONE_BODY_SIZE + NEEDLE_FOOTER_SIZE)

export const FLAG_TOMBSTONE = 0x01
export const FLAG_HAS_NAME = 0x02
export const FLAG_HAS_MIME = 0x04
export const FLAG_HAS_LAST_MODIFIED = 0x08
export const FLAG_HAS_MD5 = 0x10
export const FLAG_LINK = 0x20
/** Flags this version understands; a needle with any other bit set is refused as corrupt. */
export const FLAGS_KNOWN = FLAG_TOMBSTONE | FLAG_HAS_NAME | FLAG_HAS_MIME | FLAG_HAS_LAST_MODIFIED | FLAG_HAS_MD5 | FLAG_LINK

export const IDX_KEY_LO = 0
export const IDX_KEY_HI = IDX_KEY_LO + 4
export const IDX_OFFSET = IDX_KEY_HI + 4
export const IDX_SIZE = IDX_OFFSET + 4
export const IDX_ENTRY_SIZE = IDX_SIZE + 4
export const IDX_TOMBSTONE_SIZE = 0
export const IDX_DAMAGED_SIZE = 0xffff_ffff

if (SUPERBLOCK_SIZE !== 64 || SUPERBLOCK_SIZE % NEEDLE_ALIGNMENT !== 0) throw new Error('superblock layout')
if (NEEDLE_HEADER_SIZE !== 16 || BODY_FIXED_SIZE !== 32 || NEEDLE_FOOTER_SIZE !== 16 || REF_SIZE !== 24) throw new Error('needle layout')
if (IDX_ENTRY_SIZE !== 16) throw new Error('index entry layout')

// ---------------------------------------------------------------------------------------------
// Helpers.

/** Rounds a byte count up to the needle alignment. */
export function align(bytes: number): number {
  return Math.ceil(bytes / NEEDLE_ALIGNMENT) * NEEDLE_ALIGNMENT
}

/** Total bytes a needle with this body size takes in `.dat`, padding included. */
export function needleLength(bodySize: number): number {
  return align(NEEDLE_HEADER_SIZE + bodySize + NEEDLE_FOOTER_SIZE)
}

/** The xxh64 of a byte range with a seed, as a BigInt. */
export function checksum(bytes: Uint8Array, seed = 0n): bigint {
  return hasher.h64Raw(bytes, seed)
}

function writeU48(buf: Buffer, offset: number, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** 48) throw new TypeError(`time ${value} does not fit 48 bits`)
  buf.writeUIntLE(value, offset, 6)
  buf.writeUInt16LE(0, offset + 6)
}

function readU48(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt16LE(offset + 4) * 0x1_0000_0000
}

function corrupt(why: string): NeedleError {
  return new NeedleError('NS_ERR_CORRUPT_NEEDLE', `corrupt needle: ${why}`)
}

// ---------------------------------------------------------------------------------------------
// Superblock.

export interface Superblock {
  readonly version: number
  readonly placement: number
  readonly compactRevision: number
  readonly volumeId: number
  readonly createdAtMs: number
  /** Seeds the checksum of every needle in the volume (u64). */
  readonly checksumSeed: bigint
  /** The collection the volume belongs to ('' for none). */
  readonly collection: string
}

export function encodeSuperblock(sb: Omit<Superblock, 'version'>): Buffer {
  const buf = Buffer.alloc(SUPERBLOCK_SIZE)
  buf.writeUInt32LE(MAGIC, SB_MAGIC)
  buf.writeUInt8(FORMAT_VERSION, SB_VERSION)
  buf.writeUInt8(sb.placement, SB_PLACEMENT)
  buf.writeUInt32LE(sb.compactRevision, SB_COMPACT_REVISION)
  buf.writeUInt32LE(sb.volumeId, SB_VOLUME_ID)
  writeU48(buf, SB_CREATED_AT, sb.createdAtMs)
  buf.writeBigUInt64LE(sb.checksumSeed, SB_CHECKSUM_SEED)
  if (!isCollectionName(sb.collection)) throw new TypeError(`collection ${JSON.stringify(sb.collection)} is not a valid name`)
  buf.write(sb.collection, SB_COLLECTION, 'latin1')
  buf.writeBigUInt64LE(checksum(buf.subarray(0, SB_CHECKSUM)), SB_CHECKSUM)
  return buf
}

export function decodeSuperblock(buf: Buffer): Superblock {
  const fail = (why: string) => new NeedleError('NS_ERR_CORRUPT_VOLUME', `bad superblock: ${why}`)
  if (buf.length < SUPERBLOCK_SIZE) throw fail(`${buf.length} bytes, expected ${SUPERBLOCK_SIZE}`)
  if (buf.readUInt32LE(SB_MAGIC) !== MAGIC) throw fail('not a needlestore volume (wrong magic)')
  if (buf.readBigUInt64LE(SB_CHECKSUM) !== checksum(buf.subarray(0, SB_CHECKSUM))) throw fail('checksum mismatch')
  const version = buf.readUInt8(SB_VERSION)
  if (version !== FORMAT_VERSION) throw fail(`format version ${version}, this build reads ${FORMAT_VERSION}`)
  return {
    version,
    placement: buf.readUInt8(SB_PLACEMENT),
    compactRevision: buf.readUInt32LE(SB_COMPACT_REVISION),
    volumeId: buf.readUInt32LE(SB_VOLUME_ID),
    createdAtMs: readU48(buf, SB_CREATED_AT),
    checksumSeed: buf.readBigUInt64LE(SB_CHECKSUM_SEED),
    collection: buf.toString('latin1', SB_COLLECTION, SB_COLLECTION + COLLECTION_BYTES_MAX).replace(/\0+$/, ''),
  }
}

const COLLECTION_NAME = /^[A-Za-z0-9_.-]*$/

/** A collection name: up to COLLECTION_BYTES_MAX of letters, digits, `_`, `.` and `-` ('' is none). */
export function isCollectionName(name: string): boolean {
  return name.length <= COLLECTION_BYTES_MAX && COLLECTION_NAME.test(name)
}

/** A collection named in a request ('' when absent), or NS_ERR_BAD_REQUEST. */
export function collectionParam(name: unknown): string {
  if (name === undefined) return ''
  if (typeof name !== 'string' || !isCollectionName(name)) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', `collection ${JSON.stringify(name)} must be at most ${COLLECTION_BYTES_MAX} letters, digits, "_", "." or "-"`)
  }
  return name
}

// ---------------------------------------------------------------------------------------------
// Needles.

/** Where another needle lies and what it holds: the data of a tombstone or a link. */
export interface NeedleRef {
  readonly offset: number
  readonly bodySize: number
  readonly dataSize: number
  readonly keyHi: number
  readonly keyLo: number
  readonly cookie: number
}

export function encodeRef(ref: NeedleRef): Buffer {
  const buf = Buffer.allocUnsafe(REF_SIZE)
  buf.writeUInt32LE(ref.offset, REF_OFFSET)
  buf.writeUInt32LE(ref.bodySize, REF_BODY_SIZE)
  buf.writeUInt32LE(ref.dataSize, REF_DATA_SIZE)
  buf.writeUInt32LE(ref.keyLo, REF_KEY_LO)
  buf.writeUInt32LE(ref.keyHi, REF_KEY_HI)
  buf.writeUInt32LE(ref.cookie, REF_COOKIE)
  return buf
}

export function decodeRef(buf: Buffer, at = 0): NeedleRef {
  return {
    offset: buf.readUInt32LE(at + REF_OFFSET),
    bodySize: buf.readUInt32LE(at + REF_BODY_SIZE),
    dataSize: buf.readUInt32LE(at + REF_DATA_SIZE),
    keyLo: buf.readUInt32LE(at + REF_KEY_LO),
    keyHi: buf.readUInt32LE(at + REF_KEY_HI),
    cookie: buf.readUInt32LE(at + REF_COOKIE),
  }
}

export interface NeedleInput {
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  /** The file's bytes; ignored for a tombstone or a link, whose data is their reference. */
  readonly data: Uint8Array
  readonly tombstone?: boolean
  /** The needle a tombstone deletes (required for one), or the needle a link shares. */
  readonly ref?: NeedleRef
  readonly name?: string
  readonly mime?: string
  readonly lastModifiedMs?: number
  readonly md5?: Uint8Array
}

export interface Needle {
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  readonly flags: number
  readonly tombstone: boolean
  /** The reference a tombstone or a link holds as its data. */
  readonly ref: NeedleRef | undefined
  /** A view into the buffer the needle was decoded from (no copy). */
  readonly data: Buffer
  readonly name: string | undefined
  readonly mime: string | undefined
  readonly lastModifiedMs: number | undefined
  readonly md5: Buffer | undefined
  readonly appendAtMs: number
  readonly bodySize: number
  /** Bytes the needle takes in `.dat`, padding included. */
  readonly length: number
  readonly checksum: bigint
}

export interface NeedleHeader {
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  readonly bodySize: number
}

/** Body size of a needle holding these fields; throws TypeError past a limit. */
export function bodySizeOf(dataSize: number, nameBytes: number, mimeBytes: number): number {
  if (nameBytes > NAME_BYTES_MAX) throw new TypeError(`file name is ${nameBytes} bytes, at most ${NAME_BYTES_MAX}`)
  if (mimeBytes > MIME_BYTES_MAX) throw new TypeError(`mime type is ${mimeBytes} bytes, at most ${MIME_BYTES_MAX}`)
  if (dataSize > DATA_BYTES_MAX) throw new TypeError(`data is ${dataSize} bytes, at most ${DATA_BYTES_MAX}`)
  return BODY_FIXED_SIZE + nameBytes + mimeBytes + dataSize
}

/**
 * Encodes a needle into a fresh buffer of exactly needleLength(bodySize) bytes, its checksum
 * seeded with the volume's checksum seed.
 */
export function encodeNeedle(input: NeedleInput, appendAtMs: number, seed = 0n): Buffer {
  // A tombstone carries nothing but its key and reference, so every tombstone has TOMBSTONE_LENGTH.
  if (input.tombstone && !input.ref) throw new TypeError('a tombstone needs the reference of the needle it deletes')
  const name = input.name && !input.tombstone ? Buffer.from(input.name, 'utf8') : undefined
  if (input.mime && !/^[\x20-\x7e]*$/.test(input.mime)) throw new TypeError('mime type must be printable ASCII')
  const mime = input.mime && !input.tombstone ? Buffer.from(input.mime, 'latin1') : undefined
  const data = input.ref ? encodeRef(input.ref) : input.data
  const bodySize = bodySizeOf(data.length, name?.length ?? 0, mime?.length ?? 0)
  const length = needleLength(bodySize)
  const buf = Buffer.allocUnsafe(length)
  buf.writeUInt32LE(input.cookie, H_COOKIE)
  buf.writeUInt32LE(input.keyLo, H_KEY_LO)
  buf.writeUInt32LE(input.keyHi, H_KEY_HI)
  buf.writeUInt32LE(bodySize, H_BODY_SIZE)
  const body = NEEDLE_HEADER_SIZE
  let flags = 0
  if (input.tombstone) flags |= FLAG_TOMBSTONE
  else if (input.ref) flags |= FLAG_LINK
  if (name) flags |= FLAG_HAS_NAME
  if (mime) flags |= FLAG_HAS_MIME
  if (input.lastModifiedMs !== undefined && !input.tombstone) flags |= FLAG_HAS_LAST_MODIFIED
  if (input.md5 && !input.tombstone) {
    if (input.md5.length !== MD5_SIZE) throw new TypeError(`md5 must be ${MD5_SIZE} bytes`)
    flags |= FLAG_HAS_MD5
  }
  buf.writeUInt8(flags, body + B_FLAGS)
  buf.writeUInt8(name?.length ?? 0, body + B_NAME_LENGTH)
  buf.writeUInt8(mime?.length ?? 0, body + B_MIME_LENGTH)
  buf.writeUInt8(0, body + B_RESERVED)
  buf.writeUInt32LE(data.length, body + B_DATA_SIZE)
  writeU48(buf, body + B_LAST_MODIFIED, flags & FLAG_HAS_LAST_MODIFIED ? (input.lastModifiedMs ?? 0) : 0)
  if (flags & FLAG_HAS_MD5) buf.set(input.md5!, body + B_MD5)
  else buf.fill(0, body + B_MD5, body + B_MD5 + MD5_SIZE)
  let at = body + BODY_FIXED_SIZE
  if (name) at += name.copy(buf, at)
  if (mime) at += mime.copy(buf, at)
  buf.set(data, at)
  at += data.length
  writeU48(buf, at + F_APPEND_AT, appendAtMs)
  buf.writeBigUInt64LE(checksum(buf.subarray(0, at + F_CHECKSUM), seed), at + F_CHECKSUM)
  buf.fill(0, at + NEEDLE_FOOTER_SIZE)
  return buf
}

/** Reads the header at `offset`; checks only that the body size is plausible. */
export function decodeNeedleHeader(buf: Buffer, offset = 0): NeedleHeader {
  if (buf.length - offset < NEEDLE_HEADER_SIZE) throw corrupt('truncated header')
  const bodySize = buf.readUInt32LE(offset + H_BODY_SIZE)
  if (bodySize < BODY_FIXED_SIZE || bodySize > BODY_SIZE_MAX) throw corrupt(`impossible body size ${bodySize}`)
  return {
    cookie: buf.readUInt32LE(offset + H_COOKIE),
    keyLo: buf.readUInt32LE(offset + H_KEY_LO),
    keyHi: buf.readUInt32LE(offset + H_KEY_HI),
    bodySize,
  }
}

/**
 * Decodes and verifies the needle that starts at `offset` of `buf`. Throws
 * NS_ERR_CORRUPT_NEEDLE when any byte is wrong: a bad checksum, a truncated needle, fields that
 * contradict each other, or nonzero padding.
 */
export function decodeNeedle(buf: Buffer, offset = 0, seed = 0n): Needle {
  const header = decodeNeedleHeader(buf, offset)
  const length = needleLength(header.bodySize)
  if (buf.length - offset < length) throw corrupt(`truncated: ${buf.length - offset} of ${length} bytes`)
  const body = offset + NEEDLE_HEADER_SIZE
  const footer = body + header.bodySize
  const stored = buf.readBigUInt64LE(footer + F_CHECKSUM)
  const actual = checksum(buf.subarray(offset, footer + F_CHECKSUM), seed)
  if (stored !== actual) throw corrupt('checksum mismatch')
  for (let i = footer + NEEDLE_FOOTER_SIZE; i < offset + length; i++) {
    if (buf[i] !== 0) throw corrupt('nonzero padding')
  }
  const flags = buf.readUInt8(body + B_FLAGS)
  if ((flags & ~FLAGS_KNOWN) !== 0) throw corrupt(`unknown flags 0x${flags.toString(16)}`)
  const nameLength = buf.readUInt8(body + B_NAME_LENGTH)
  const mimeLength = buf.readUInt8(body + B_MIME_LENGTH)
  const dataSize = buf.readUInt32LE(body + B_DATA_SIZE)
  if (BODY_FIXED_SIZE + nameLength + mimeLength + dataSize !== header.bodySize) throw corrupt('field sizes do not add up')
  const tombstone = (flags & FLAG_TOMBSTONE) !== 0
  const link = (flags & FLAG_LINK) !== 0
  if (tombstone && (header.bodySize !== TOMBSTONE_BODY_SIZE || link)) throw corrupt('a tombstone with contents')
  if (link && dataSize !== REF_SIZE) throw corrupt('a link without its reference')
  let at = body + BODY_FIXED_SIZE
  const name = nameLength > 0 ? buf.toString('utf8', at, at + nameLength) : undefined
  at += nameLength
  const mime = mimeLength > 0 ? buf.toString('latin1', at, at + mimeLength) : undefined
  at += mimeLength
  return {
    cookie: header.cookie,
    keyHi: header.keyHi,
    keyLo: header.keyLo,
    flags,
    tombstone,
    ref: tombstone || link ? decodeRef(buf, at) : undefined,
    data: buf.subarray(at, at + dataSize),
    name,
    mime,
    lastModifiedMs: (flags & FLAG_HAS_LAST_MODIFIED) !== 0 ? readU48(buf, body + B_LAST_MODIFIED) : undefined,
    md5: (flags & FLAG_HAS_MD5) !== 0 ? buf.subarray(body + B_MD5, body + B_MD5 + MD5_SIZE) : undefined,
    appendAtMs: readU48(buf, footer + F_APPEND_AT),
    bodySize: header.bodySize,
    length,
    checksum: stored,
  }
}

/**
 * True when `buf` still holds exactly the bytes `needle` was decoded from: its checksum is
 * computed again. For needles kept in memory, so that a copy damaged there is never served.
 */
export function needleIntact(buf: Buffer, needle: Needle, seed = 0n): boolean {
  const footer = NEEDLE_HEADER_SIZE + needle.bodySize
  return buf.length >= needle.length && checksum(buf.subarray(0, footer + F_CHECKSUM), seed) === needle.checksum &&
    buf.readBigUInt64LE(footer + F_CHECKSUM) === needle.checksum
}

// ---------------------------------------------------------------------------------------------
// Index entries.

export interface IdxEntry {
  readonly keyHi: number
  readonly keyLo: number
  /** Offset in `.dat`, in units of NEEDLE_ALIGNMENT bytes. */
  readonly offset: number
  /** Body size of the needle, or IDX_TOMBSTONE_SIZE. */
  readonly size: number
}

export function encodeIdxEntry(entry: IdxEntry, buf: Buffer = Buffer.allocUnsafe(IDX_ENTRY_SIZE), at = 0): Buffer {
  buf.writeUInt32LE(entry.keyLo, at + IDX_KEY_LO)
  buf.writeUInt32LE(entry.keyHi, at + IDX_KEY_HI)
  buf.writeUInt32LE(entry.offset, at + IDX_OFFSET)
  buf.writeUInt32LE(entry.size, at + IDX_SIZE)
  return buf
}

export function decodeIdxEntry(buf: Buffer, at = 0): IdxEntry {
  return {
    keyLo: buf.readUInt32LE(at + IDX_KEY_LO),
    keyHi: buf.readUInt32LE(at + IDX_KEY_HI),
    offset: buf.readUInt32LE(at + IDX_OFFSET),
    size: buf.readUInt32LE(at + IDX_SIZE),
  }
}

/** Byte offset in `.dat` for an offset in alignment units. */
export function toByteOffset(units: number): number {
  return units * NEEDLE_ALIGNMENT
}

/** Offset in alignment units for a byte offset (which must be aligned). */
export function toUnits(byteOffset: number): number {
  if (byteOffset % NEEDLE_ALIGNMENT !== 0) throw new TypeError(`offset ${byteOffset} is not aligned`)
  return byteOffset / NEEDLE_ALIGNMENT
}
