/**
 * Upload input made replayable: whatever the caller gives (bytes, a Node stream, a web stream,
 * any async iterable of chunks) is read into one Buffer, never past a byte limit, so that a
 * retry to a new fid sends the same bytes again and the MD5 is known before the first request.
 */
import { NeedleClientError, isNeedleClientError } from './errors.js'

export type UploadData = Uint8Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array>

function tooLarge(what: string, bytesMax: number, seen: number | undefined): NeedleClientError {
  const size = seen === undefined ? `larger than ${bytesMax} bytes` : `${seen} bytes, more than ${bytesMax}`
  return new NeedleClientError('NS_ERR_BODY_TOO_LARGE', `${what}: the file is ${size} (fileBytesMax); nothing was uploaded`)
}

function asBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8')
  throw new TypeError(`upload data must yield Uint8Array chunks (got ${chunk === null ? 'null' : typeof chunk})`)
}

/** Stops a source we no longer read: a Node stream is destroyed, an iterator returned. */
function release(data: object): void {
  const destroy = (data as { destroy?: unknown }).destroy
  if (typeof destroy === 'function') (destroy as () => void).call(data)
}

/** Reads data into one Buffer of at most bytesMax bytes; more is NS_ERR_BODY_TOO_LARGE, before any upload. */
export async function collect(data: UploadData, bytesMax: number, what: string): Promise<Buffer> {
  if (data instanceof Uint8Array) {
    if (data.byteLength > bytesMax) throw tooLarge(what, bytesMax, data.byteLength)
    return asBuffer(data)
  }
  if (data === null || typeof data !== 'object' || typeof (data as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function') {
    throw new TypeError('upload data must be a Uint8Array, a readable stream or an async iterable of Uint8Array')
  }
  const chunks: Buffer[] = []
  let bytes = 0
  try {
    for await (const chunk of data as AsyncIterable<unknown>) {
      const buf = asBuffer(chunk)
      bytes += buf.length
      if (bytes > bytesMax) {
        release(data)
        throw tooLarge(what, bytesMax, undefined)
      }
      chunks.push(buf)
    }
  } catch (err) {
    if (isNeedleClientError(err) || err instanceof TypeError) throw err
    throw new NeedleClientError('NS_ERR_BAD_REQUEST', `${what}: reading the data to upload failed: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes)
}
