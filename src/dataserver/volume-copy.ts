/**
 * Copying a whole volume from another data server, for re-replication: the master asks a server
 * that satisfies the placement to pull a volume from a healthy copy.
 *
 * The source serves its files' committed bytes (`GET /admin/volume/file`) and a digest of its
 * state (`GET /admin/volume/digest`); the destination pulls `.dat`, then `.idx`, into
 * `<vid>.dat.copying` and `<vid>.idx.copying`, asks for a digest (lengths, counts and the
 * SHA-256 of `.dat`, taken at one instant), pulls the tails appended meanwhile up to exactly
 * the digest's lengths, and checks the SHA-256 of the `.dat` bytes it received (hashed as they
 * arrive) against the digest; it
 * syncs the files, renames them into place (`.idx` first: a lone `.idx` is never opened), opens
 * the volume (recovery checks `.idx` against `.dat`) and compares its counts with the digest.
 * Only then is the volume served.
 *
 * Invariants:
 * - A crash mid-copy leaves only `*.copying` files, which the store removes at its next start.
 * - Bytes are served only below the volume's committed lengths, which appends never rewrite.
 * - A copy that does not match the digest is removed and never served.
 * - The copy is the source's state at the digest: what the source appends after it is not in
 *   the copy. Re-replication copies volumes that take no writes (a copy is missing), so the
 *   source does not change; a volume copied while it takes writes would miss some.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rename, rm, statfs, type FileHandle } from 'node:fs/promises'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { request, type Dispatcher } from 'undici'
import { secretHeaders } from '../common/auth.js'
import { NeedleError, diskError } from '../common/errors.js'
import { parseVolumeId } from '../common/fid.js'
import { answerError, answerJson, callPeer, createPeerAgent, originOf } from '../common/peer.js'
import { formatPlacement, parsePlacement, placementFromByte } from '../common/placement.js'
import type { ClusterLink } from './cluster.js'
import type { Store } from './store.js'
import { datPath, idxPath, syncDir, type Volume } from './volume.js'

export type VolumeFileKind = 'dat' | 'idx'

/** What a source says of its copy at one moment; a destination's copy must match it. */
export interface VolumeDigest {
  readonly volume: number
  readonly replication: string
  readonly collection: string
  readonly datBytes: number
  readonly idxBytes: number
  readonly liveCount: number
  readonly deletedCount: number
  /** SHA-256 of `.dat`'s first datBytes bytes, hex. */
  readonly datSha256: string
}

export interface CopyResult {
  readonly volume: number
  readonly from: string
  readonly datBytes: number
  readonly idxBytes: number
  readonly liveCount: number
  readonly datSha256: string
  /** 1 when bytes were appended at the source during the first pass and pulled after it. */
  readonly tailRounds: number
  readonly ms: number
}

/** The header that names a file's committed length when its bytes were served. */
export const COMMITTED_HEADER = 'x-needlestore-committed-bytes'
/** Disk room kept free beyond the copy's own bytes. */
const DISK_SPARE_BYTES = 64 * 1024 * 1024
const READ_CHUNK_BYTES = 1024 * 1024

function committedBytes(volume: Volume, kind: VolumeFileKind): number {
  return kind === 'dat' ? volume.datBytes : volume.idxBytes
}

function pathOf(dir: string, volumeId: number, kind: VolumeFileKind): string {
  return kind === 'dat' ? datPath(dir, volumeId) : idxPath(dir, volumeId)
}

/** SHA-256 (hex) of a file's first `bytes` bytes. */
async function sha256Of(path: string, bytes: number): Promise<string> {
  const hash = createHash('sha256')
  if (bytes > 0) {
    for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1, highWaterMark: READ_CHUNK_BYTES })) hash.update(chunk as Buffer)
  }
  return hash.digest('hex')
}

/**
 * The digest of a volume now: lengths and counts taken at one instant, then `.dat` hashed up to
 * that length (unless withSha is false: datSha256 is then '').
 */
export async function digestOf(dir: string, volume: Volume, withSha = true): Promise<VolumeDigest> {
  const s = volume.status()
  const idxBytes = volume.idxBytes
  return {
    volume: volume.id,
    replication: formatPlacement(placementFromByte(s.placement)),
    collection: s.collection,
    datBytes: s.datBytes,
    idxBytes,
    liveCount: s.liveCount,
    deletedCount: s.deletedCount,
    datSha256: withSha ? await sha256Of(datPath(dir, volume.id), s.datBytes) : '',
  }
}

export interface CopyOptions {
  readonly store: Store
  readonly volumeId: number
  /** `host:port` of the source. */
  readonly from: string
  readonly secret: string | undefined
  readonly dispatcher: Dispatcher
  /** A pull that receives nothing for this long fails. */
  readonly idleTimeoutMs: number
  /** When given, the source's copy must have this replication and collection. */
  readonly replication?: string
  readonly collection?: string
}

/** Pulls the volume from `from`, verifies it and serves it here; see the module comment. */
export async function copyVolume(o: CopyOptions): Promise<CopyResult> {
  const startedMs = Date.now()
  const origin = originOf(o.from)
  const first = await fetchDigest(o, origin, false)
  if (o.replication !== undefined && first.replication !== o.replication) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', `volume ${o.volumeId} on ${o.from} has replication ${first.replication}, not ${o.replication}`)
  }
  if (o.collection !== undefined && first.collection !== o.collection) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', `volume ${o.volumeId} on ${o.from} is in collection "${first.collection}", not "${o.collection}"`)
  }
  await checkRoom(o.store.dir, first.datBytes + first.idxBytes)
  let final: VolumeDigest | undefined
  let tailRounds = 0
  await o.store.adopt(
    o.volumeId,
    async (dir) => {
      const tmp = { dat: `${datPath(dir, o.volumeId)}.copying`, idx: `${idxPath(dir, o.volumeId)}.copying` }
      const files: Record<VolumeFileKind, FileHandle | undefined> = { dat: undefined, idx: undefined }
      try {
        files.dat = await open(tmp.dat, 'w')
        files.idx = await open(tmp.idx, 'w')
        const have = { dat: 0, idx: 0 }
        // `.dat` is hashed as it arrives (in order, from byte 0), not read again afterwards.
        const hashes = { dat: createHash('sha256'), idx: undefined }
        // First the bulk: each file up to its end now.
        for (const kind of ['dat', 'idx'] as const) have[kind] = (await pull(o, origin, kind, 0, Number.MAX_SAFE_INTEGER, files[kind]!, hashes[kind])).end
        // Then the tail, up to the lengths of one digest: a consistent state of the source
        // (lengths and counts taken at one instant), whatever is appended after it.
        const digest = await fetchDigest(o, origin)
        const want = { dat: digest.datBytes, idx: digest.idxBytes }
        for (const kind of ['dat', 'idx'] as const) {
          if (want[kind] < have[kind]) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} has ${want[kind]} bytes of ${kind} of volume ${o.volumeId}, fewer than the ${have[kind]} it sent`)
          if (want[kind] > have[kind]) {
            tailRounds = 1
            have[kind] = (await pull(o, origin, kind, have[kind], want[kind] - have[kind], files[kind]!, hashes[kind])).end
          }
          if (have[kind] !== want[kind]) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} sent ${have[kind]} of the ${want[kind]} bytes of ${kind} of volume ${o.volumeId}`)
        }
        await files.dat!.datasync()
        await files.idx!.datasync()
        const sha = hashes.dat.digest('hex')
        if (sha !== digest.datSha256) {
          throw new NeedleError('NS_ERR_CORRUPT_VOLUME', `the copy of volume ${o.volumeId} from ${o.from} does not match its SHA-256 (${sha} here, ${digest.datSha256} there)`)
        }
        final = digest
        await files.dat!.close()
        await files.idx!.close()
        files.dat = files.idx = undefined
        await rename(tmp.idx, idxPath(dir, o.volumeId))
        await rename(tmp.dat, datPath(dir, o.volumeId))
        await syncDir(dir)
      } catch (err) {
        throw diskError(err, `copy volume ${o.volumeId} from ${o.from}`)
      } finally {
        await files.dat?.close().catch(() => {})
        await files.idx?.close().catch(() => {})
        await rm(tmp.dat, { force: true }).catch(() => {})
        await rm(tmp.idx, { force: true }).catch(() => {})
      }
    },
    async (volume) => {
      const d = final!
      const s = volume.status()
      if (s.datBytes !== d.datBytes || s.liveCount !== d.liveCount || s.deletedCount !== d.deletedCount) {
        throw new NeedleError(
          'NS_ERR_CORRUPT_VOLUME',
          `the copy of volume ${o.volumeId} opened with ${s.liveCount} live and ${s.deletedCount} deleted files in ${s.datBytes} bytes; ${o.from} has ${d.liveCount}, ${d.deletedCount}, ${d.datBytes}`,
        )
      }
    },
  )
  const d = final!
  return { volume: o.volumeId, from: o.from, datBytes: d.datBytes, idxBytes: d.idxBytes, liveCount: d.liveCount, datSha256: d.datSha256, tailRounds, ms: Date.now() - startedMs }
}

async function checkRoom(dir: string, bytes: number): Promise<void> {
  let free: number
  try {
    const s = await statfs(dir)
    free = s.bavail * s.bsize
  } catch (err) {
    throw diskError(err, `check free space in ${dir}`)
  }
  if (free < bytes + DISK_SPARE_BYTES) {
    throw new NeedleError('NS_ERR_DISK_FULL', `a copy of ${bytes} bytes needs more room than the ${free} bytes free in ${dir}`)
  }
}

async function fetchDigest(o: CopyOptions, origin: string, withSha = true): Promise<VolumeDigest> {
  const answer = await callPeer(o.dispatcher, `${origin}/admin/volume/digest?volume=${o.volumeId}${withSha ? '' : '&sha=false'}`, { headers: secretHeaders(o.secret), timeoutMs: 10 * o.idleTimeoutMs })
  if (answer.statusCode !== 200) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} answered ${answer.statusCode} for the digest of volume ${o.volumeId}: ${answerError(answer).error}`)
  const d = answerJson<VolumeDigest>(answer, o.from)
  for (const k of ['datBytes', 'idxBytes', 'liveCount', 'deletedCount'] as const) {
    if (!Number.isSafeInteger(d[k]) || d[k] < 0) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} sent a digest without ${k}`)
  }
  return d
}

/**
 * Appends the source's bytes of one file from `offset` to its committed end (at most limit
 * bytes) to fh, in order,
 * as they arrive (async iteration gives backpressure). Returns the new end here and the
 * committed length the source had when it answered.
 */
async function pull(o: CopyOptions, origin: string, kind: VolumeFileKind, offset: number, limit: number, fh: FileHandle, hash?: Hash): Promise<{ end: number; committed: number }> {
  const url = `${origin}/admin/volume/file?volume=${o.volumeId}&kind=${kind}&offset=${offset}${limit < Number.MAX_SAFE_INTEGER ? `&limit=${limit}` : ''}`
  let res: Dispatcher.ResponseData
  try {
    res = await request(url, { dispatcher: o.dispatcher, headers: secretHeaders(o.secret), headersTimeout: o.idleTimeoutMs, bodyTimeout: o.idleTimeoutMs })
  } catch (err) {
    throw new NeedleError('NS_ERR_PEER_UNREACHABLE', `GET ${url}: ${(err as Error).message}`, { cause: err })
  }
  if (res.statusCode !== 200) {
    const text = await res.body.text().catch(() => '')
    let why = text.slice(0, 500)
    try {
      why = (JSON.parse(text) as { error?: string }).error ?? why
    } catch {}
    throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} answered ${res.statusCode} for ${kind} of volume ${o.volumeId}: ${why}`)
  }
  const committed = Number(res.headers[COMMITTED_HEADER])
  const length = Number(res.headers['content-length'])
  let pos = offset
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash?.update(chunk)
      let written = 0
      while (written < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, written, chunk.length - written, pos)
        written += bytesWritten
        pos += bytesWritten
      }
    }
  } catch (err) {
    res.body.destroy()
    throw err
  }
  if (!Number.isSafeInteger(committed) || pos - offset !== length || pos > committed) {
    throw new NeedleError('NS_ERR_BAD_GATEWAY', `${o.from} sent ${pos - offset} bytes of ${kind} of volume ${o.volumeId} (length ${length}, committed ${committed})`)
  }
  return { end: pos, committed }
}

// ---------------------------------------------------------------------------------------------
// Routes.

export interface VolumeCopyRoutes {
  readonly app: FastifyInstance
  readonly store: Store
  readonly cluster: ClusterLink
  readonly secret: string | undefined
  readonly idleTimeoutMs: number
  readonly guard: (req: FastifyRequest) => Promise<void>
  readonly log: (message: string) => void
}

export function registerVolumeCopyRoutes(r: VolumeCopyRoutes): void {
  const { app, store, guard } = r
  const dispatcher = createPeerAgent({ connections: 4 })
  app.addHook('onClose', async () => dispatcher.close())
  const volumeOf = (q: Record<string, string | undefined>): Volume => {
    if (q.volume === undefined) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter volume is required')
    return store.volume(parseVolumeId(q.volume))
  }
  const nonNegative = (name: string, text: string | undefined, fallback: number): number => {
    if (text === undefined) return fallback
    const n = Number(text)
    if (!Number.isSafeInteger(n) || n < 0) throw new NeedleError('NS_ERR_BAD_REQUEST', `${name} must be a non-negative integer`)
    return n
  }

  // A volume file's committed bytes from offset (at most limit of them), streamed.
  app.get('/admin/volume/file', { preHandler: guard }, async (req, reply) => {
    const q = req.query as Record<string, string | undefined>
    const volume = volumeOf(q)
    if (q.kind !== 'dat' && q.kind !== 'idx') throw new NeedleError('NS_ERR_BAD_REQUEST', 'kind must be dat or idx')
    const kind: VolumeFileKind = q.kind
    const committed = committedBytes(volume, kind)
    const offset = nonNegative('offset', q.offset, 0)
    const limit = nonNegative('limit', q.limit, Number.MAX_SAFE_INTEGER)
    if (offset > committed) throw new NeedleError('NS_ERR_RANGE_NOT_SATISFIABLE', `offset ${offset} is past the ${committed} committed bytes of ${kind}`)
    const length = Math.min(limit, committed - offset)
    reply.header('content-type', 'application/octet-stream').header('content-length', String(length)).header(COMMITTED_HEADER, String(committed))
    if (length === 0) return reply.send(Buffer.alloc(0))
    return reply.send(createReadStream(pathOf(store.dir, volume.id, kind), { start: offset, end: offset + length - 1, highWaterMark: READ_CHUNK_BYTES }))
  })

  app.get('/admin/volume/digest', { preHandler: guard }, async (req) => {
    const q = req.query as Record<string, string | undefined>
    return digestOf(store.dir, volumeOf(q), q.sha !== 'false')
  })

  // The master names every copy of a volume after it made a new one (re-replication).
  app.post('/admin/volume/peers', { preHandler: guard }, async (req) => {
    const q = req.query as Record<string, string | undefined>
    const volume = volumeOf(q)
    if (!q.locations) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter locations is required')
    r.cluster.setLocations(volume.id, q.locations.split(','))
    return { volume: volume.id, locations: q.locations.split(',') }
  })

  // Makes this server a copy of a volume another server holds (re-replication).
  app.post('/admin/volume/copy', { preHandler: guard }, async (req, reply) => {
    const q = req.query as Record<string, string | undefined>
    if (q.volume === undefined || !q.from) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameters volume and from are required')
    const volumeId = parseVolumeId(q.volume)
    const result = await copyVolume({
      store,
      volumeId,
      from: q.from,
      secret: r.secret,
      dispatcher,
      idleTimeoutMs: r.idleTimeoutMs,
      ...(q.replication ? { replication: formatPlacement(parsePlacement(q.replication)) } : {}),
      ...(q.collection !== undefined ? { collection: q.collection } : {}),
    })
    // The master names every copy the volume has now, so that writes replicate at once.
    if (q.locations) r.cluster.setLocations(volumeId, q.locations.split(','))
    r.log(`volume ${volumeId}: copied from ${q.from} (${result.datBytes} bytes, ${result.liveCount} files, ${result.ms} ms), verified`)
    void r.cluster.beat()
    return reply.code(201).send(result)
  })
}
