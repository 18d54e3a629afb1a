/**
 * The data server's HTTP API (fastify): files by fid, status, metrics and volume admin routes.
 * Route shapes follow SeaweedFS's volume server so that its clients work unchanged.
 */
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import multipart from '@fastify/multipart'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { checkSecret } from '../common/auth.js'
import { NeedleError, isNeedleError } from '../common/errors.js'
import { formatFid, parseFid, parseFidPath, parseVolumeId, type FidPath, type FileId } from '../common/fid.js'
import { openDedupRef } from '../common/dedup-ref.js'
import { collectionParam } from '../common/format.js'
import { originOf } from '../common/peer.js'
import { bearerOf, verifyToken } from '../common/token.js'
import { Compactor } from './compactor.js'
import { ClusterLink, REPLICATE_BATCH_BYTES_MAX, REPLICATE_BATCH_OPS_MAX, type ReplicaOutcome, type ReplicaResult } from './cluster.js'
import { KIND_DELETE, KIND_LINK, KIND_UNDELETE, KIND_WRITE, decodeOps, type ReplicaOp } from './replica-batch.js'
import { toErrorResponse } from '../common/http-errors.js'
import { OCTET_STREAM, essence, isActiveContent, mimeFromName } from '../common/mime.js'
import { formatPlacement, parsePlacement, placementFromByte, placementToByte } from '../common/placement.js'
import { OP_INDEX, createMetrics, type DataServerMetrics, type Op } from './metrics.js'
import { resolveDataServerOptions, type DataServerInput, type DataServerOptions, type ServerVolumeSettings } from './options.js'
import { parseRange } from './range.js'
import { ReadCache } from './read-cache.js'
import { Store } from './store.js'
import { Scrubber, createScrubMetrics } from './scrub.js'
import { peerContext, registerVerifyRoutes } from './verify.js'
import { registerVolumeCopyRoutes } from './volume-copy.js'
import type { Needle } from '../common/format.js'
import type { LinkInput, Volume } from './volume.js'

export const VERSION = 'needlestore 0.1.0'

/** Served files never change under their fid, so caches may keep them for a year. */
const CACHE_CONTROL = 'public, max-age=31536000, immutable'

export interface DataServer {
  readonly app: FastifyInstance
  readonly store: Store
  readonly options: DataServerOptions
  readonly metrics: DataServerMetrics
  readonly cluster: ClusterLink
  readonly compactor: Compactor
  /** The background scrubber, once listening (none when --scrub-bytes-per-second is 0). */
  scrubber?: Scrubber
  /** `http://host:port` once listening. */
  url: string
  close(): Promise<void>
}

/** Builds the server and opens its volumes without listening (tests use inject()). */
export async function createDataServer(input: DataServerInput): Promise<DataServer> {
  const options = resolveDataServerOptions(input)
  const readCache = options.readCacheBytes > 0 ? new ReadCache(options.readCacheBytes) : undefined
  const store = await Store.open({
    dir: options.dir,
    volumesMax: options.volumesMax,
    log: options.log,
    volume: { ...volumeSettings(options), ...(readCache ? { readCache } : {}) },
  })
  let metrics: DataServerMetrics | undefined
  const cluster = new ClusterLink(
    {
      master: options.master,
      secret: options.secret,
      dataCenter: options.dataCenter,
      rack: options.rack,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      replicateTimeoutMs: options.replicateTimeoutMs,
      reconcileQueueMax: options.reconcileQueueMax,
      log: options.log,
      onReplicationFailure: () => metrics?.replicationFailures.inc(),
    },
    store,
  )
  metrics = createMetrics(store, readCache, cluster)
  const compactor = new Compactor(store, {
    graceMs: options.undeleteGraceSeconds * 1000,
    bytesPerSecond: options.compactBytesPerSecond,
    garbageThreshold: options.compactGarbageThreshold,
    checkIntervalMs: options.compactCheckIntervalMs,
    log: options.log,
    ...(options.faultCompact !== undefined ? { faultStep: options.faultCompact } : {}),
  })
  const app = Fastify({
    bodyLimit: options.fileBytesMax,
    return503OnClosing: true,
    // With a serverFactory fastify leaves the server's own options alone, so every limit is set
    // here. Node checks the two timeouts only on a sweep every connectionsCheckingInterval.
    serverFactory: (handler) =>
      createServer(
        {
          maxHeaderSize: options.headerBytesMax,
          headersTimeout: options.headersTimeoutMs,
          requestTimeout: options.requestTimeoutMs,
          keepAliveTimeout: options.keepAliveTimeoutMs,
          connectionsCheckingInterval: Math.max(100, Math.floor(Math.min(options.headersTimeoutMs, options.requestTimeoutMs) / 2)),
        },
        (req, res) => {
          if (!serveFast(server, req, res)) handler(req, res)
        },
      ),
  })
  let closing: Promise<void> | undefined
  const server: DataServer = {
    app,
    store,
    options,
    metrics,
    cluster,
    compactor,
    url: '',
    close() {
      closing ??= (async () => {
        await server.scrubber?.close()
        await cluster.close()
        compactor.close()
        // A request in flight when closing starts keeps its keep-alive connection open after
        // its answer (fastify closes only the connections idle at the start): close those too.
        const idle = setInterval(() => app.server.closeIdleConnections(), 100)
        try {
          await app.close()
        } finally {
          clearInterval(idle)
        }
        await store.close()
      })()
      return closing
    },
  }
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
  await app.register(multipart, { limits: { fileSize: options.fileBytesMax, parts: 64, headerPairs: 64 } })

  app.setErrorHandler((err, req, reply) => {
    const { statusCode, body } = toErrorResponse(err)
    if (body.code === 'NS_ERR_CORRUPT_NEEDLE') metrics.corruptReads.inc()
    if (statusCode >= 500 && body.code !== 'NS_ERR_CORRUPT_NEEDLE') options.log(`${req.method} ${req.url}: ${body.error}`)
    return reply.code(statusCode).send(body)
  })
  app.addHook('onResponse', (req, reply, done) => {
    const op = operationOf(req)
    const inBytes = op === 'write' ? Number(req.headers['content-length'] ?? 0) : 0
    const outBytes = op === 'read' ? Number(reply.getHeader('content-length') ?? 0) : 0
    metrics.requests.observe(OP_INDEX[op], reply.statusCode, reply.elapsedTime / 1000, inBytes, outBytes)
    done()
  })

  app.get('/status', async () => statusBody(server))
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return metrics.registry.metrics()
  })
  registerAdminRoutes(server)
  registerVerifyRoutes(server)

  app.route({ method: ['GET', 'HEAD'], url: '/*', handler: (req, reply) => readFile(server, req, reply) })
  app.route({ method: ['POST', 'PUT'], url: '/*', handler: (req, reply) => writeFile(server, req, reply) })
  app.route({ method: 'DELETE', url: '/*', handler: (req, reply) => deleteFile(server, req, reply) })
  app.post('/delete', (req) => deleteMany(server, req))
  return server
}

function volumeSettings(o: DataServerOptions): ServerVolumeSettings {
  const { volumeBytesMax, fsync, fsyncIntervalMs, writeQueueMax, writeBatchBytesMax, writeBatchMax, syncReadBytesMax, now } = o
  return { volumeBytesMax, fsync, fsyncIntervalMs, writeQueueMax, writeBatchBytesMax, writeBatchMax, syncReadBytesMax, now }
}

/** Builds the server and listens on options.host:options.port. */
export async function startDataServer(input: DataServerInput): Promise<DataServer> {
  const server = await createDataServer(input)
  try {
    await server.app.listen({ host: server.options.host, port: server.options.port })
  } catch (err) {
    await server.store.close()
    throw err
  }
  const address = server.app.server.address()
  const port = typeof address === 'object' && address ? address.port : server.options.port
  server.url = `http://${server.options.host}:${port}`
  const self = `${server.options.ip ?? server.options.host}:${port}`
  server.cluster.start(self, server.options.publicUrl ?? self)
  server.compactor.start()
  startScrubber(server)
  return server
}

/** Starts the background scrubber unless it is off (--scrub-bytes-per-second 0). */
function startScrubber(server: DataServer): void {
  const { options } = server
  if (options.scrubBytesPerSecond <= 0) return
  server.scrubber = new Scrubber({
    store: server.store,
    peers: peerContext(server),
    bytesPerSecond: options.scrubBytesPerSecond,
    intervalMs: Math.round(options.scrubIntervalHours * 3_600_000),
    metrics: createScrubMetrics(server.metrics.registry),
    log: options.log,
  })
  server.scrubber.start()
}

function operationOf(req: FastifyRequest): Op {
  const url = req.routeOptions.url
  if (url === '/status') return 'status'
  if (url === '/metrics') return 'metrics'
  if (url?.startsWith('/admin/')) return 'admin'
  if (url !== '/*') return 'other'
  switch (req.method) {
    case 'GET':
      return 'read'
    case 'HEAD':
      return 'head'
    case 'DELETE':
      return 'delete'
    default:
      return 'write'
  }
}

// -----------------------------------------------------------------------------------------------
// Files.

async function readFile(server: DataServer, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const path = parseFidPath(req.url)
  const { fid } = path
  const volume = server.store.get(fid.volumeId)
  if (!volume) return redirectToHolder(server, fid.volumeId, req, reply)
  const needle = await volume.read(fid.keyHi, fid.keyLo, fid.cookie)
  const headers = fileHeaders(needle, path)
  for (let i = 0; i < headers.length; i += 2) reply.header(headers[i]!, headers[i + 1])
  const etag = headers[ETAG_AT]!
  if (notModified(req, etag, needle.lastModifiedMs ?? needle.appendAtMs)) return reply.code(304).send()
  const size = needle.data.length
  const ifRange = req.headers['if-range']
  const range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, size) : { kind: 'none' as const }
  if (range.kind === 'unsatisfiable') {
    reply.header('content-range', `bytes */${size}`)
    throw new NeedleError('NS_ERR_RANGE_NOT_SATISFIABLE', `range ${req.headers.range} is outside the file of ${size} bytes`)
  }
  if (range.kind === 'range') {
    reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`)
    return reply.send(needle.data.subarray(range.start, range.end + 1))
  }
  return reply.send(needle.data)
}

/** A read of a volume held elsewhere goes to a server that holds it, as the master says. */
async function redirectToHolder(server: DataServer, volumeId: number, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const locations = await server.cluster.lookup(volumeId)
  if (locations.length === 0) throw new NeedleError('NS_ERR_VOLUME_NOT_FOUND', `volume ${volumeId} is not on this server`)
  const at = locations[Math.floor(Math.random() * locations.length)]!
  return reply.redirect(`${originOf(at.publicUrl)}${req.url}`, 302)
}

const dates = new Map<number, string>()
const DATES_KEPT = 4096

/**
 * An HTTP date for a time in milliseconds. Files stored in the same second share the string, so
 * a small memo saves formatting one for most answers.
 */
function httpDate(ms: number): string {
  const second = Math.floor(ms / 1000)
  let text = dates.get(second)
  if (text === undefined) {
    if (dates.size >= DATES_KEPT) dates.clear()
    text = new Date(second * 1000).toUTCString()
    dates.set(second, text)
  }
  return text
}

/** Where fileHeaders() puts the ETag's value. */
const ETAG_AT = 3

/** The headers of a file's 200 answer, as a flat [name, value, …] list. */
function fileHeaders(needle: Needle, path: FidPath): string[] {
  const mime = needle.mime ?? mimeFromName(needle.name) ?? mimeFromName(path.name) ?? (path.ext ? mimeFromName(`.${path.ext}`) : undefined) ?? OCTET_STREAM
  const headers = [
    'content-type', mime,
    'etag', etagOf(needle),
    'last-modified', httpDate(needle.lastModifiedMs ?? needle.appendAtMs),
    'accept-ranges', 'bytes',
    'cache-control', CACHE_CONTROL,
    'x-content-type-options', 'nosniff',
  ]
  const disposition = contentDisposition(needle.name ?? path.name, isActiveContent(mime))
  if (disposition) headers.push('content-disposition', disposition)
  return headers
}

const plainHeaders = new WeakMap<Needle, string[]>()

/**
 * The hot path: a plain GET or HEAD of a small file, answered by node's http server directly
 * with the same headers fastify would send, without fastify's per-request machinery (which
 * costs more than the disk read itself). Anything else — conditional or range requests,
 * errors, large needles — returns false and takes the fastify route, which answers it fully.
 */
function serveFast(server: DataServer, req: IncomingMessage, res: ServerResponse): boolean {
  const method = req.method
  if (method !== 'GET' && method !== 'HEAD') return false
  const url = req.url
  if (!url || url.length < 4 || url.charCodeAt(1) < 48 || url.charCodeAt(1) > 57) return false
  const h = req.headers
  if (h.range !== undefined || h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) return false
  const startMs = performance.now()
  let needle: Needle | undefined
  let path: FidPath
  try {
    path = parseFidPath(url)
    needle = server.store.get(path.fid.volumeId)?.readSync(path.fid.keyHi, path.fid.keyLo, path.fid.cookie)
  } catch {
    return false
  }
  if (!needle) return false
  // A needle kept in the read cache comes back as the same object: its headers for the plain
  // form of the path are built once.
  const plain = path.name === undefined && path.ext === undefined
  let headers = plain ? plainHeaders.get(needle) : undefined
  if (!headers) {
    headers = fileHeaders(needle, path)
    headers.push('content-length', String(needle.data.length))
    if (plain) plainHeaders.set(needle, headers)
  }
  res.writeHead(200, headers)
  if (method === 'GET') res.end(needle.data)
  else res.end()
  const op = method === 'GET' ? OP_INDEX.read : OP_INDEX.head
  server.metrics.requests.observe(op, 200, (performance.now() - startMs) / 1000, 0, method === 'GET' ? needle.data.length : 0)
  return true
}

function etagOf(needle: Needle): string {
  return `"${needle.md5 ? needle.md5.toString('hex') : needle.checksum.toString(16).padStart(16, '0')}"`
}

/** If-None-Match wins over If-Modified-Since, as RFC 9110 §13.2.2 says. */
function notModified(req: FastifyRequest, etag: string, modifiedMs: number): boolean {
  const inm = req.headers['if-none-match']
  if (inm !== undefined) {
    if (inm.trim() === '*') return true
    return inm.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag)
  }
  const ims = req.headers['if-modified-since']
  if (ims !== undefined) {
    const since = Date.parse(ims)
    return Number.isFinite(since) && Math.floor(modifiedMs / 1000) * 1000 <= since
  }
  return false
}

function contentDisposition(name: string | undefined, attachment: boolean): string | undefined {
  if (!name && !attachment) return undefined
  const kind = attachment ? 'attachment' : 'inline'
  if (!name) return kind
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_')
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`
}

interface Upload {
  readonly data: Buffer
  readonly name: string | undefined
  readonly mime: string | undefined
}

async function readUpload(req: FastifyRequest, path: FidPath, fileBytesMax: number): Promise<Upload> {
  const query = req.query as Record<string, string | undefined>
  if (req.isMultipart()) {
    // The first part is the file, whether or not its Content-Disposition names a file.
    const { part, data } = await readFirstPart(req, fileBytesMax)
    const name = part.filename || path.name || undefined
    let mime = essence(part.mimetype)
    // A part without a Content-Type reads as text/plain; a known file extension says more.
    if (mime === 'text/plain' && name && mimeFromName(name) && !mimeFromName(name)!.startsWith('text/')) mime = mimeFromName(name)
    return { data, name, mime: mime === OCTET_STREAM ? undefined : mime }
  }
  const body = req.body
  const data = Buffer.isBuffer(body) ? body : Buffer.alloc(0)
  return { data, name: query.filename || path.name, mime: typedMime(req) }
}

/** The type a raw body names, if any: curl --data-binary labels every body as a form, and
 *  neither that nor octet-stream says what the file is. */
function typedMime(req: FastifyRequest): string | undefined {
  const mime = essence(req.headers['content-type'])
  return mime === OCTET_STREAM || mime === 'application/x-www-form-urlencoded' ? undefined : mime
}

/**
 * The first part of a multipart body. Every failure of the parser is the body's fault (or the
 * client's, which went away), so all but the size limit answer NS_ERR_BAD_REQUEST.
 */
async function readFirstPart(req: FastifyRequest, fileBytesMax: number) {
  try {
    const part = await req.file({ isPartAFile: () => true, limits: { fileSize: fileBytesMax } })
    if (!part) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the multipart body has no part')
    return { part, data: await part.toBuffer() }
  } catch (err) {
    if (isNeedleError(err) || (err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw err
    throw new NeedleError('NS_ERR_BAD_REQUEST', `malformed multipart body: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * With a secret, a replica's forwarded request must carry it, and a client's write or delete
 * a token the master signed for its fid.
 */
function authorize(server: DataServer, req: FastifyRequest, path: FidPath, replica: boolean): void {
  const { secret } = server.options
  if (secret === undefined) return
  if (replica) return checkSecret(secret, req.headers.authorization)
  const query = req.query as Record<string, string | undefined>
  verifyToken(secret, bearerOf(req.headers.authorization) ?? query.jwt, path.text, server.options.now())
}

async function writeFile(server: DataServer, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const path = parseFidPath(req.url)
  const { fid } = path
  const query = req.query as Record<string, string | undefined>
  const replica = query.type === 'replicate'
  authorize(server, req, path, replica)
  const volume = server.store.volume(fid.volumeId)
  if (query.dedupOf !== undefined && !replica) return linkFile(server, req, reply, path, volume)
  const upload = await readUpload(req, path, server.options.fileBytesMax)
  if (upload.data.length > server.options.fileBytesMax) {
    throw new NeedleError('NS_ERR_BODY_TOO_LARGE', `the file is ${upload.data.length} bytes, at most ${server.options.fileBytesMax}`)
  }
  checkNameAndMime(upload)
  const md5 = createHash('md5').update(upload.data).digest()
  const contentMd5 = req.headers['content-md5']
  if (typeof contentMd5 === 'string' && contentMd5 !== md5.toString('base64')) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'Content-MD5 does not match the body')
  }
  const lastModifiedMs = lastModifiedOf(query, replica) ?? server.options.now()
  const input = {
    cookie: fid.cookie,
    keyHi: fid.keyHi,
    keyLo: fid.keyLo,
    data: upload.data,
    lastModifiedMs,
    md5,
    ...(upload.name !== undefined ? { name: upload.name } : {}),
    ...(upload.mime !== undefined ? { mime: upload.mime } : {}),
  }
  const peers = replica ? [] : server.cluster.peersFor(fid.volumeId, volume.placement, 'write')
  if (peers.length === 0) {
    await volume.write(input)
  } else {
    // Replicas get the parsed file, so that each stores the same name, type and time.
    const op: ReplicaOp = { kind: KIND_WRITE, volumeId: fid.volumeId, ...input }
    await replicated(server, fid, volume.write(input), peers.map((peer) => server.cluster.replicate(peer, op)))
  }
  const eTag = md5.toString('hex')
  if (!replica) server.cluster.stored(volume, formatFid(fid), eTag, upload.data.length)
  reply.header('etag', `"${eTag}"`)
  return reply.code(201).send({ name: upload.name ?? '', size: upload.data.length, eTag, mime: upload.mime ?? '', deduplicated: false })
}

function checkNameAndMime(upload: { readonly name: string | undefined; readonly mime: string | undefined }): void {
  if (upload.name !== undefined && Buffer.byteLength(upload.name) > 255) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'the file name is longer than 255 bytes')
  }
  if (upload.mime !== undefined && (upload.mime.length > 255 || !/^[\x21-\x7e]+$/.test(upload.mime))) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'the content type is malformed or longer than 255 bytes')
  }
}

/**
 * `POST /<fid>?dedupOf=<ref>&md5=<hex>` with an empty body: stores fid as a file that shares
 * the bytes of a stored file of the same volume (MD5 dedup). A miss (NS_ERR_DEDUP_MISS: the
 * client uploads the whole file to the same fid instead) leaves nothing anywhere.
 */
async function linkFile(server: DataServer, req: FastifyRequest, reply: FastifyReply, path: FidPath, volume: Volume): Promise<FastifyReply> {
  const { fid } = path
  const query = req.query as Record<string, string | undefined>
  const target = parseFid(openDedupRef(server.options.secret, query.dedupOf!, formatFid(fid)))
  if (target.volumeId !== fid.volumeId) {
    throw new NeedleError('NS_ERR_DEDUP_MISS', `the stored copy is in volume ${target.volumeId}, not in volume ${fid.volumeId}`)
  }
  if (query.md5 === undefined || !/^[0-9a-fA-F]{32}$/.test(query.md5)) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'a dedup upload needs md5: the MD5 of the file, 32 hex digits')
  }
  if (req.isMultipart() || (Buffer.isBuffer(req.body) && req.body.length > 0)) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'a dedup upload has an empty body: the bytes are those of the stored copy')
  }
  const md5 = Buffer.from(query.md5, 'hex')
  const name = query.filename || path.name
  const mime = typedMime(req)
  checkNameAndMime({ name, mime })
  const input: LinkInput = {
    cookie: fid.cookie,
    keyHi: fid.keyHi,
    keyLo: fid.keyLo,
    md5,
    target: { keyHi: target.keyHi, keyLo: target.keyLo, cookie: target.cookie },
    lastModifiedMs: lastModifiedOf(query, false) ?? server.options.now(),
    ...(name !== undefined ? { name } : {}),
    ...(mime !== undefined ? { mime } : {}),
  }
  const peers = server.cluster.peersFor(fid.volumeId, volume.placement, 'write')
  // Checked here first, so that a miss is a clean 409 with nothing stored anywhere; then made
  // here and on the other copies at once.
  await volume.checkLink(input)
  const local = volume.link(input)
  if (peers.length > 0) {
    const op: ReplicaOp = { kind: KIND_LINK, volumeId: fid.volumeId, ...input }
    await replicated(server, fid, local, peers.map((peer) => server.cluster.replicate(peer, op)))
  }
  const { size } = await local
  const eTag = md5.toString('hex')
  reply.header('etag', `"${eTag}"`)
  return reply.code(201).send({ name: name ?? '', size, eTag, mime: mime ?? '', deduplicated: true })
}

/** The file's time: `ts` (Unix seconds) from a client, `lm` (milliseconds) from a replica. */
function lastModifiedOf(query: Record<string, string | undefined>, replica: boolean): number | undefined {
  if (replica && query.lm !== undefined) {
    const lm = Number(query.lm)
    if (!Number.isInteger(lm) || lm < 0 || lm > 2 ** 48) throw new NeedleError('NS_ERR_BAD_REQUEST', 'lm must be a time in milliseconds')
    return lm
  }
  const ts = query.ts !== undefined ? Number(query.ts) : undefined
  if (ts !== undefined && (!Number.isInteger(ts) || ts < 0 || ts > 2 ** 40)) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'ts must be a Unix time in seconds')
  }
  return ts !== undefined ? ts * 1000 : undefined
}

/**
 * Waits for the local operation and every forward. Success only when all stored it. When
 * nothing was stored anywhere, the request's own error (a wrong cookie, a full volume) stands;
 * when some copies may hold it, the key goes on the reconcile list and the write fails.
 */
async function replicated(server: DataServer, fid: FileId, local: Promise<unknown>, forwards: Promise<ReplicaOutcome>[]): Promise<void> {
  const [localResult, ...settled] = await Promise.allSettled([local, ...forwards])
  const outcomes = settled.map((r) => (r as PromiseFulfilledResult<ReplicaOutcome>).value)
  const localOk = localResult!.status === 'fulfilled'
  if (localOk && outcomes.every((o) => o.stored === true)) return
  if (!localOk && outcomes.every((o) => o.stored === false)) throw (localResult as PromiseRejectedResult).reason
  server.cluster.failed(fid.volumeId, fid.keyHi, fid.keyLo, fid.cookie)
  const why = outcomes.filter((o) => o.stored !== true).map((o) => `${o.peer}: ${o.error}`)
  if (!localOk) why.unshift(`this server: ${((localResult as PromiseRejectedResult).reason as Error).message}`)
  throw new NeedleError('NS_ERR_REPLICATION_FAILED', `${formatFid(fid)} did not reach every copy (${why.join('; ')}); the partial copies are being removed`)
}

async function applyReplicaOp(server: DataServer, op: ReplicaOp): Promise<ReplicaResult> {
  try {
    const volume = server.store.volume(op.volumeId)
    if (op.kind === KIND_DELETE) return { status: 202, size: (await volume.delete(op.keyHi, op.keyLo, op.cookie)).size }
    // The copy that took the undelete checked the grace period; this copy restores what it has.
    if (op.kind === KIND_UNDELETE) return { status: 200, size: (await volume.undelete(op.keyHi, op.keyLo, op.cookie, Infinity)).size }
    if (op.kind === KIND_LINK) {
      const { size } = await volume.link({
        cookie: op.cookie,
        keyHi: op.keyHi,
        keyLo: op.keyLo,
        md5: op.md5 ?? Buffer.alloc(16),
        target: op.target!,
        ...(op.name !== undefined ? { name: op.name } : {}),
        ...(op.mime !== undefined ? { mime: op.mime } : {}),
        ...(op.lastModifiedMs !== undefined ? { lastModifiedMs: op.lastModifiedMs } : {}),
      })
      return { status: 201, size }
    }
    const data = op.data ?? Buffer.alloc(0)
    if (op.md5 && !createHash('md5').update(data).digest().equals(op.md5)) {
      throw new NeedleError('NS_ERR_BAD_REQUEST', 'the data does not match its MD5: damaged on the way')
    }
    await volume.write({
      cookie: op.cookie,
      keyHi: op.keyHi,
      keyLo: op.keyLo,
      data,
      ...(op.name !== undefined ? { name: op.name } : {}),
      ...(op.mime !== undefined ? { mime: op.mime } : {}),
      ...(op.lastModifiedMs !== undefined ? { lastModifiedMs: op.lastModifiedMs } : {}),
      ...(op.md5 ? { md5: op.md5 } : {}),
    })
    return { status: 201, size: data.length }
  } catch (err) {
    const { statusCode, body } = toErrorResponse(err)
    return { status: statusCode, code: body.code, error: body.error }
  }
}

async function deleteFile(server: DataServer, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const path = parseFidPath(req.url)
  const { fid } = path
  const replica = (req.query as Record<string, string | undefined>).type === 'replicate'
  authorize(server, req, path, replica)
  return reply.code(202).send(await deleteReplicated(server, fid, replica))
}

/** Deletes fid here and, unless this is a replica's copy of a delete, on every other copy. */
async function deleteReplicated(server: DataServer, fid: FileId, replica: boolean): Promise<{ size: number }> {
  const volume = server.store.volume(fid.volumeId)
  const peers = replica ? [] : server.cluster.peersFor(fid.volumeId, volume.placement, 'delete')
  const local = volume.delete(fid.keyHi, fid.keyLo, fid.cookie)
  if (peers.length > 0) {
    const op: ReplicaOp = { kind: KIND_DELETE, volumeId: fid.volumeId, cookie: fid.cookie, keyHi: fid.keyHi, keyLo: fid.keyLo }
    await replicated(server, fid, local, peers.map((peer) => server.cluster.replicate(peer, op)))
  }
  return local
}

/**
 * `POST /delete`: many deletes in one request, `{"fids": [...]}` (or `?fid=` repeated). Each
 * fid is deleted as by DELETE /<fid>, replicated, and gets its own result, in request order.
 * With a secret, the request carries the secret, or each item is `{"fid", "jwt"}` with a token
 * for its fid.
 */
async function deleteMany(server: DataServer, req: FastifyRequest): Promise<{ results: unknown[] }> {
  const { secret, batchDeleteMax } = server.options
  const items = batchDeleteItems(req)
  if (items.length > batchDeleteMax) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', `${items.length} fids in one batch delete, at most ${batchDeleteMax}`)
  }
  let trusted = secret === undefined
  if (!trusted && bearerOf(req.headers.authorization) === secret) {
    checkSecret(secret, req.headers.authorization)
    trusted = true
  }
  const results = await Promise.all(
    items.map(async (item) => {
      const text = typeof item === 'string' ? item : item.fid
      try {
        const path = parseFidPath(`/${text}`)
        if (!trusted) verifyToken(secret!, typeof item === 'string' ? undefined : item.jwt, path.text, server.options.now())
        return { fid: text, status: 202, ...(await deleteReplicated(server, path.fid, false)) }
      } catch (err) {
        const { statusCode, body } = toErrorResponse(err)
        return { fid: text, status: statusCode, code: body.code, error: body.error }
      }
    }),
  )
  return { results }
}

type BatchDeleteItem = string | { readonly fid: string; readonly jwt?: string }

function batchDeleteItems(req: FastifyRequest): BatchDeleteItem[] {
  const fromQuery = (req.query as Record<string, string | string[] | undefined>).fid
  if (fromQuery !== undefined) return Array.isArray(fromQuery) ? fromQuery : [fromQuery]
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '')
  } catch {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'a batch delete is a JSON body {"fids": [...]} or fid query parameters')
  }
  const fids = (parsed as { fids?: unknown } | null)?.fids
  const valid = (f: unknown) => typeof f === 'string' || (typeof f === 'object' && f !== null && typeof (f as { fid?: unknown }).fid === 'string')
  if (!Array.isArray(fids) || !fids.every(valid)) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'fids must be an array of fids, or of {"fid", "jwt"} objects')
  }
  return fids as BatchDeleteItem[]
}

// -----------------------------------------------------------------------------------------------
// Status and admin.

function statusBody(server: DataServer) {
  const volumes = server.store.statuses().map((s) => ({
    id: s.id,
    replication: formatPlacement(placementFromByte(s.placement)),
    collection: s.collection,
    readOnly: s.readOnly,
    size: s.datBytes,
    fileCount: s.liveCount,
    deleteCount: s.deletedCount,
    liveBytes: s.liveBytes,
    garbageBytes: s.garbageBytes,
    garbageRatio: s.garbageRatio,
    compactRevision: s.compactRevision,
  }))
  return {
    Version: VERSION,
    url: server.url,
    publicUrl: server.options.publicUrl ?? server.url.replace(/^https?:\/\//, ''),
    dataCenter: server.options.dataCenter,
    rack: server.options.rack,
    volumesMax: server.store.volumesMax,
    volumes,
    brokenVolumes: server.store.broken(),
    // The SeaweedFS spelling, for tools that read a volume server's /status.
    Volumes: volumes.map((v) => ({
      Id: v.id,
      Size: v.size,
      ReplicaPlacement: v.replication,
      Collection: v.collection,
      FileCount: v.fileCount + v.deleteCount,
      DeleteCount: v.deleteCount,
      DeletedByteCount: v.garbageBytes,
      ReadOnly: v.readOnly,
    })),
  }
}

function registerAdminRoutes(server: DataServer): void {
  const { app, store, options } = server
  const guard = async (req: FastifyRequest) => checkSecret(options.secret, req.headers.authorization)
  const volumeParam = (req: FastifyRequest): number => {
    const q = req.query as Record<string, string | undefined>
    if (q.volume === undefined) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter volume is required')
    return parseVolumeId(q.volume)
  }
  // Creates an empty volume; the master calls this when it grows the cluster.
  app.route({
    method: ['GET', 'POST'],
    url: '/admin/assign_volume',
    preHandler: guard,
    handler: async (req, reply) => {
      const q = req.query as Record<string, string | undefined>
      const placement = parsePlacement(q.replication ?? '000')
      const collection = collectionParam(q.collection)
      const volume = await store.create(volumeParam(req), placementToByte(placement), collection)
      // The master names every copy it creates, so that writes can be replicated at once.
      if (q.locations) server.cluster.setLocations(volume.id, q.locations.split(','))
      void server.cluster.beat()
      return reply.code(201).send({ volume: volume.id, replication: formatPlacement(placement), collection })
    },
  })
  // A batch of writes and deletes from the data server that took them (see replica-batch.ts).
  app.post('/admin/replicate', { preHandler: guard, bodyLimit: REPLICATE_BATCH_BYTES_MAX + options.fileBytesMax + 64 * 1024 }, async (req) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0)
    const ops = decodeOps(body, REPLICATE_BATCH_OPS_MAX)
    // Started in order, so that two records for one key apply in the order they were sent.
    const results = await Promise.all(ops.map((op) => applyReplicaOp(server, op)))
    return { results }
  })
  // Restores a deleted file on every copy, within the grace period.
  app.post('/admin/undelete', { preHandler: guard }, async (req) => {
    const q = req.query as Record<string, string | undefined>
    if (q.fid === undefined) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter fid is required')
    const fid = parseFid(q.fid)
    const volume = store.volume(fid.volumeId)
    const peers = server.cluster.peersFor(fid.volumeId, volume.placement, 'write')
    const result = await volume.undelete(fid.keyHi, fid.keyLo, fid.cookie, options.undeleteGraceSeconds * 1000)
    if (result.undeleted && peers.length > 0) {
      const op: ReplicaOp = { kind: KIND_UNDELETE, volumeId: fid.volumeId, cookie: fid.cookie, keyHi: fid.keyHi, keyLo: fid.keyLo }
      await replicated(server, fid, Promise.resolve(), peers.map((peer) => server.cluster.replicate(peer, op)))
    }
    return { fid: formatFid(fid), ...result }
  })
  // Compacts a volume now (after any compaction running), while it keeps serving.
  app.post('/admin/volume/compact', { preHandler: guard }, async (req) => server.compactor.compact(volumeParam(req)))
  // Deletes a volume and its files: the master undoing a growth that did not reach every copy.
  app.post('/admin/volume/delete', { preHandler: guard }, async (req) => {
    const id = volumeParam(req)
    await store.remove(id)
    server.cluster.forget(id)
    void server.cluster.beat()
    return { volume: id, deleted: true }
  })
  // Re-replication: a volume's files and digest served, and a copy pulled from another server.
  registerVolumeCopyRoutes({ app, store, cluster: server.cluster, secret: options.secret, idleTimeoutMs: Math.max(30_000, options.replicateTimeoutMs), guard, log: options.log })
  app.get('/admin/volumes', { preHandler: guard }, async () => ({ volumes: store.statuses(), broken: store.broken() }))
  app.post('/admin/volume/readonly', { preHandler: guard }, async (req) => {
    const q = req.query as Record<string, string | undefined>
    const volume = store.volume(volumeParam(req))
    volume.setReadOnly(q.readOnly !== 'false')
    return { volume: volume.id, readOnly: volume.readOnly }
  })
}

