/**
 * The wire format of a replication batch: many writes and deletes, for any volumes, in one
 * request from the data server that took them to another copy (`POST /admin/replicate`).
 * Batching is to replication what group commit is to fsync: one request carries the writes that
 * arrived together, so a copy costs far less than a client request.
 *
 * Each record (all integers little-endian):
 *
 *   offset size field
 *   0      1    kind: 1 write, 2 delete, 3 link, 4 undelete
 *   1      1    nameLength (bytes of UTF-8)
 *   2      1    mimeLength (bytes of ASCII)
 *   3      1    flags: bit 0 set when an MD5 is given
 *   4      4    volume id
 *   8      4    cookie
 *   12     4    key, low half
 *   16     4    key, high half
 *   20     4    dataLength
 *   24     8    last modified, milliseconds since the epoch
 *   32     16   MD5 of the data (zero unless flagged)
 *   48     n    file name, mime type, data
 *
 * The data of a link is the file whose bytes it shares: key low half, key high half, cookie
 * (3 × u32); the MD5 is that of the shared bytes. An undelete carries no data.
 *
 * Decoding checks every length against the buffer, so a short or garbled body is refused
 * whole, before anything is applied.
 */
import { NeedleError } from '../common/errors.js'
import { MIME_BYTES_MAX, NAME_BYTES_MAX } from '../common/format.js'

export const KIND_WRITE = 1
export const KIND_DELETE = 2
export const KIND_LINK = 3
export const KIND_UNDELETE = 4
const LINK_TARGET_SIZE = 12
export const RECORD_HEADER_SIZE = 48
const HAS_MD5 = 1

export interface ReplicaOp {
  readonly kind: typeof KIND_WRITE | typeof KIND_DELETE | typeof KIND_LINK | typeof KIND_UNDELETE
  readonly volumeId: number
  readonly cookie: number
  readonly keyHi: number
  readonly keyLo: number
  readonly data?: Buffer
  readonly name?: string
  readonly mime?: string
  readonly lastModifiedMs?: number
  readonly md5?: Buffer
  /** For a link: the file whose bytes it shares. */
  readonly target?: { readonly keyHi: number; readonly keyLo: number; readonly cookie: number }
}

function linkTarget(target: NonNullable<ReplicaOp['target']>): Buffer {
  const buf = Buffer.allocUnsafe(LINK_TARGET_SIZE)
  buf.writeUInt32LE(target.keyLo, 0)
  buf.writeUInt32LE(target.keyHi, 4)
  buf.writeUInt32LE(target.cookie, 8)
  return buf
}

/** One record, as the buffers to send (the header with name and mime, then the data). */
export function encodeOp(op: ReplicaOp): Buffer[] {
  const name = op.name === undefined ? undefined : Buffer.from(op.name, 'utf8')
  const mime = op.mime === undefined ? undefined : Buffer.from(op.mime, 'latin1')
  if (op.kind === KIND_LINK && !op.target) throw new TypeError('a link record needs its target')
  const data = op.kind === KIND_LINK ? linkTarget(op.target!) : op.data
  const head = Buffer.alloc(RECORD_HEADER_SIZE + (name?.length ?? 0) + (mime?.length ?? 0))
  head.writeUInt8(op.kind, 0)
  head.writeUInt8(name?.length ?? 0, 1)
  head.writeUInt8(mime?.length ?? 0, 2)
  head.writeUInt8(op.md5 ? HAS_MD5 : 0, 3)
  head.writeUInt32LE(op.volumeId, 4)
  head.writeUInt32LE(op.cookie, 8)
  head.writeUInt32LE(op.keyLo, 12)
  head.writeUInt32LE(op.keyHi, 16)
  head.writeUInt32LE(data?.length ?? 0, 20)
  head.writeDoubleLE(op.lastModifiedMs ?? 0, 24)
  if (op.md5) op.md5.copy(head, 32)
  let at = RECORD_HEADER_SIZE
  if (name) at += name.copy(head, at)
  if (mime) mime.copy(head, at)
  return data && data.length > 0 ? [head, data] : [head]
}

function bad(why: string): NeedleError {
  return new NeedleError('NS_ERR_BAD_REQUEST', `malformed replication batch: ${why}`)
}

/** Every record of a batch; the data of each is a view into body. */
export function decodeOps(body: Buffer, opsMax: number): ReplicaOp[] {
  const ops: ReplicaOp[] = []
  let at = 0
  while (at < body.length) {
    if (ops.length >= opsMax) throw bad(`more than ${opsMax} records`)
    if (body.length - at < RECORD_HEADER_SIZE) throw bad('a record header is cut short')
    const kind = body.readUInt8(at)
    if (kind !== KIND_WRITE && kind !== KIND_DELETE && kind !== KIND_LINK && kind !== KIND_UNDELETE) throw bad(`unknown record kind ${kind}`)
    const nameLength = body.readUInt8(at + 1)
    const mimeLength = body.readUInt8(at + 2)
    const flags = body.readUInt8(at + 3)
    const dataLength = body.readUInt32LE(at + 20)
    const lastModifiedMs = body.readDoubleLE(at + 24)
    if (nameLength > NAME_BYTES_MAX || mimeLength > MIME_BYTES_MAX) throw bad('a name or mime type is too long')
    if (!Number.isSafeInteger(lastModifiedMs) || lastModifiedMs < 0) throw bad('a time is not a whole number of milliseconds')
    const end = at + RECORD_HEADER_SIZE + nameLength + mimeLength + dataLength
    if (end > body.length) throw bad('a record is cut short')
    if (kind === KIND_LINK && dataLength !== LINK_TARGET_SIZE) throw bad('a link record without its target')
    let p = at + RECORD_HEADER_SIZE
    const name = nameLength > 0 ? body.toString('utf8', p, p + nameLength) : undefined
    p += nameLength
    const mime = mimeLength > 0 ? body.toString('latin1', p, p + mimeLength) : undefined
    p += mimeLength
    ops.push({
      kind,
      volumeId: body.readUInt32LE(at + 4),
      cookie: body.readUInt32LE(at + 8),
      keyLo: body.readUInt32LE(at + 12),
      keyHi: body.readUInt32LE(at + 16),
      ...(kind === KIND_WRITE ? { data: body.subarray(p, end), lastModifiedMs } : {}),
      ...(kind === KIND_LINK
        ? { lastModifiedMs, target: { keyLo: body.readUInt32LE(p), keyHi: body.readUInt32LE(p + 4), cookie: body.readUInt32LE(p + 8) } }
        : {}),
      ...(name !== undefined ? { name } : {}),
      ...(mime !== undefined ? { mime } : {}),
      ...(flags & HAS_MD5 ? { md5: body.subarray(at + 32, at + 48) } : {}),
    })
    at = end
  }
  return ops
}
