/**
 * File ids, as in SeaweedFS: `<volume id>,<key hex><cookie as 8 hex>`, for example
 * `3,01637037d6` is volume 3, key 0x01, cookie 0x637037d6. The key is written as big-endian
 * bytes with leading zero bytes left out (at least one byte). A suffix `_d` (decimal) names
 * key + d, for the ids handed out by one assign with count > 1.
 *
 * Keys are 64-bit. They travel as two unsigned 32-bit halves (`keyHi`, `keyLo`) so that the hot
 * path never allocates a BigInt.
 */
import { NeedleError } from './errors.js'

export interface FileId {
  readonly volumeId: number
  readonly keyHi: number
  readonly keyLo: number
  readonly cookie: number
}

export const VOLUME_ID_MAX = 0xffff_ffff
const TWO_32 = 0x1_0000_0000
const DECIMAL = /^[0-9]+$/

function bad(text: string, why: string): NeedleError {
  return new NeedleError('NS_ERR_BAD_FID', `malformed file id ${JSON.stringify(text.slice(0, 80))}: ${why}`)
}

/** Parses a decimal volume id (1 … 2^32-1). */
export function parseVolumeId(text: string): number {
  if (!DECIMAL.test(text) || text.length > 10) throw bad(text, 'the volume id must be a decimal number')
  const id = Number(text)
  if (id < 1 || id > VOLUME_ID_MAX) throw bad(text, 'the volume id must be between 1 and 4294967295')
  return id
}

/** The value of a hexadecimal digit's char code, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

/** The number written by text[from, to) in hexadecimal (at most 8 digits, all valid). */
function hexRange(text: string, from: number, to: number): number {
  let value = 0
  for (let i = from; i < to; i++) value = value * 16 + hexDigit(text.charCodeAt(i))
  return value
}

/**
 * Parses `<vid>,<key><cookie>[_d]`. The delta suffix is added to the key (with carry), so
 * `3,01637037d6_1` names key 0x02. It runs on every request, so it scans characters instead of
 * building substrings.
 */
export function parseFid(text: string): FileId {
  const comma = text.indexOf(',')
  if (comma < 0) throw bad(text, 'expected "<volume id>,<key><cookie>"')
  const volumeId = parseVolumeId(text.slice(0, comma))
  const underscore = text.indexOf('_', comma + 1)
  const hexEnd = underscore >= 0 ? underscore : text.length
  const hexLength = hexEnd - comma - 1
  if (hexLength <= 8) throw bad(text, 'the key and cookie part is too short')
  if (hexLength > 24) throw bad(text, 'the key and cookie part is too long')
  for (let i = comma + 1; i < hexEnd; i++) {
    if (hexDigit(text.charCodeAt(i)) < 0) throw bad(text, 'the key and cookie must be hexadecimal')
  }
  let delta = 0
  if (underscore >= 0) {
    const suffix = text.slice(underscore + 1)
    if (!DECIMAL.test(suffix) || suffix.length > 9) throw bad(text, 'the suffix after "_" must be a small decimal number')
    delta = Number(suffix)
  }
  const cookieStart = hexEnd - 8
  const cookie = hexRange(text, cookieStart, hexEnd)
  const loStart = Math.max(comma + 1, cookieStart - 8)
  let keyLo = hexRange(text, loStart, cookieStart)
  let keyHi = hexRange(text, comma + 1, loStart)
  if (delta > 0) {
    keyLo += delta
    if (keyLo >= TWO_32) {
      keyLo -= TWO_32
      keyHi += 1
      if (keyHi >= TWO_32) throw bad(text, 'the key overflows 64 bits')
    }
  }
  return { volumeId, keyHi, keyLo, cookie }
}

/** Hex of a 64-bit key given as halves, big-endian, leading zero bytes left out. */
export function formatKey(keyHi: number, keyLo: number): string {
  const full = keyHi.toString(16).padStart(8, '0') + keyLo.toString(16).padStart(8, '0')
  let start = 0
  while (start < 14 && full[start] === '0' && full[start + 1] === '0') start += 2
  return full.slice(start)
}

export function formatFid(fid: FileId): string {
  return `${fid.volumeId},${formatKey(fid.keyHi, fid.keyLo)}${fid.cookie.toString(16).padStart(8, '0')}`
}

/** The key as a BigInt, for display and tests; never on a hot path. */
export function keyToBigInt(keyHi: number, keyLo: number): bigint {
  return (BigInt(keyHi) << 32n) | BigInt(keyLo)
}

export function keyFromBigInt(key: bigint): { keyHi: number; keyLo: number } {
  if (key < 0n || key >= 1n << 64n) throw new TypeError('key must fit in 64 bits')
  return { keyHi: Number(key >> 32n), keyLo: Number(key & 0xffff_ffffn) }
}

export interface FidPath {
  readonly fid: FileId
  /** A file name given in the path (`/3/01637037d6/name.jpg`), if any. */
  readonly name: string | undefined
  /** The extension given on the id (`/3,01637037d6.jpg` → "jpg"), if any. */
  readonly ext: string | undefined
  /** The id as the path gave it, in the comma form, without extension: `3,01637037d6_1`. */
  readonly text: string
}

/**
 * Parses the path forms a data server accepts for a file, as SeaweedFS does:
 * `/3,01637037d6`, `/3,01637037d6.jpg`, `/3/01637037d6`, `/3/01637037d6.jpg`,
 * `/3/01637037d6/name.jpg` and `/3,01637037d6/name.jpg`, each optionally with `_d`.
 */
export function parseFidPath(path: string): FidPath {
  // The common form, `/3,01637037d6` with no query, name or extension, without splitting.
  if (path.length > 1 && path.charCodeAt(0) === 47 && path.indexOf('/', 1) < 0 && path.indexOf('?') < 0 && path.indexOf('.') < 0) {
    const text = path.slice(1)
    return { fid: parseFid(text), name: undefined, ext: undefined, text }
  }
  const q = path.indexOf('?')
  const clean = (q >= 0 ? path.slice(0, q) : path).replace(/^\/+/, '')
  const parts = clean.split('/')
  let idPart: string
  let name: string | undefined
  if (parts.length === 1) {
    idPart = parts[0]!
  } else if (parts.length === 2 && parts[0]!.includes(',')) {
    idPart = parts[0]!
    name = parts[1]
  } else if (parts.length === 2 || parts.length === 3) {
    idPart = `${parts[0]},${parts[1]}`
    name = parts[2]
  } else {
    throw bad(path, 'too many path segments')
  }
  let ext: string | undefined
  const dot = idPart.indexOf('.')
  if (dot >= 0) {
    ext = idPart.slice(dot + 1) || undefined
    idPart = idPart.slice(0, dot)
  }
  if (name !== undefined) {
    try {
      name = decodeURIComponent(name) || undefined
    } catch {
      throw bad(path, 'the file name is not valid percent-encoding')
    }
  }
  return { fid: parseFid(idPart), name, ext, text: idPart }
}
