/**
 * The master's HTTP API (fastify), shaped like SeaweedFS's master so that its clients work
 * unchanged: assign, lookup, redirects, submit, status, growth; plus the heartbeat route the
 * data servers call.
 */
import { createHash, randomInt } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { checkSecret, secretHeaders } from '../common/auth.js'
import { NeedleError, isNeedleError } from '../common/errors.js'
import { formatFid, parseFid, parseFidPath, parseVolumeId } from '../common/fid.js'
import { sealDedupRef } from '../common/dedup-ref.js'
import { collectionParam } from '../common/format.js'
import { OCTET_STREAM, essence, mimeFromName } from '../common/mime.js'
import { toErrorResponse } from '../common/http-errors.js'
import { answerError, answerJson, callPeer, createPeerAgent, originOf } from '../common/peer.js'
import { formatPlacement, parsePlacement } from '../common/placement.js'
import { signToken } from '../common/token.js'
import { renderDashboard } from './dashboard.js'
import { topologyStatus, volumeStatuses } from './status.js'
import { MASTER_OPS, createMasterMetrics, type MasterMetrics, type MasterOp } from './metrics.js'
import { resolveMasterOptions, type MasterInput, type MasterOptions } from './options.js'
import { MasterState, type DedupEntry } from './state.js'
import { Topology, type Heartbeat, type Location, type VolumeReport } from './topology.js'
import { Repairer } from './repair.js'

export const MASTER_VERSION = 'needlestore 0.1.0'

export interface Master {
  readonly app: FastifyInstance
  readonly options: MasterOptions
  readonly topology: Topology
  readonly metrics: MasterMetrics
  /** `http://host:port` once listening. */
  url: string
  close(): Promise<void>
}

export interface AssignResult {
  readonly fid: string
  readonly url: string
  readonly publicUrl: string
  readonly count: number
  readonly auth?: string
  /** With md5 and size: a stored file with those bytes, in the volume of fid (MD5 dedup). */
  readonly dedupOf?: string
}

/** How long /vol/vacuum?wait=true waits for a compaction. */
const COMPACT_WAIT_MS = 3_600_000

const OP_INDEX = Object.fromEntries(MASTER_OPS.map((op, i) => [op, i])) as Record<MasterOp, number>

/** Builds the master without listening. */
export async function createMaster(input: MasterInput): Promise<Master> {
  const options = resolveMasterOptions(input)
  const state = await MasterState.open(options.dir, options.keyLease)
  const topology = new Topology({ deadAfterMs: options.deadAfterMs, volumeBytesMax: options.volumeBytesMax, now: options.now })
  const metrics = createMasterMetrics(topology)
  const agent = createPeerAgent({ connections: 32 })
  const app = Fastify({ bodyLimit: options.fileBytesMax, return503OnClosing: true })
  const startedMs = options.now()
  /** Known servers that have not sent a heartbeat since this master started. */
  const awaited = new Set(state.knownServers().map((s) => s.url))
  const growing = new Map<string, Promise<void>>()

  const sweeper = setInterval(() => {
    for (const node of topology.sweep()) options.log(`data server ${node.url} missed its heartbeats for ${options.deadAfterMs} ms: marked dead`)
  }, Math.max(50, Math.min(1000, Math.floor(options.deadAfterMs / 4))))
  sweeper.unref()

  // Re-replication of volumes whose copies sit on dead servers, once the volume map is whole.
  const repairer = new Repairer(
    topology,
    agent,
    { repairAfterMs: options.repairAfterMs, repairsMax: options.repairsMax, copyTimeoutMs: options.repairCopyTimeoutMs, peerTimeoutMs: options.peerTimeoutMs, secret: options.secret, log: options.log, now: options.now },
    () => notReadyForMs() === 0,
    state,
  )
  repairer.start()

  let closing: Promise<void> | undefined
  const master: Master = {
    app,
    options,
    topology,
    metrics,
    url: '',
    close() {
      closing ??= (async () => {
        clearInterval(sweeper)
        repairer.close()
        await app.close()
        await agent.close()
        await state.close()
      })()
      return closing
    },
  }

  /** Milliseconds until the volume map is complete, or 0 once it is. */
  const notReadyForMs = (): number => {
    if (awaited.size === 0) return 0
    return Math.max(0, startedMs + options.deadAfterMs - options.now())
  }
  const ensureReady = (): void => {
    const ms = notReadyForMs()
    if (ms > 0) {
      throw new NeedleError('NS_ERR_NOT_READY', `the master restarted and is waiting for ${awaited.size} data servers to report their volumes (at most ${Math.ceil(ms / 1000)} s more)`)
    }
  }

  const defaultReplication = (): string => options.defaultReplication ?? (topology.nodes().length >= 3 ? '002' : '000')

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
  app.setErrorHandler((err, req, reply) => {
    const { statusCode, body } = toErrorResponse(err)
    if (statusCode === 503) reply.header('retry-after', String(Math.max(1, Math.ceil(notReadyForMs() / 1000))))
    if (statusCode >= 500) options.log(`${req.method} ${req.url}: ${body.error}`)
    return reply.code(statusCode).send(body)
  })
  app.addHook('onResponse', (req, reply, done) => {
    metrics.requests.observe(OP_INDEX[operationOf(req)], reply.statusCode, reply.elapsedTime / 1000, 0, 0)
    done()
  })

  // --------------------------------------------------------------------------------------------
  // Assign and growth.

  /** Creates count volumes of a layout on servers that satisfy its placement: all copies or none. */
  const grow = async (replication: string, collection: string, count: number): Promise<number> => {
    ensureReady()
    const layout = `${replication}/${collection}`
    const running = growing.get(layout)
    if (running) {
      await running
      return 0
    }
    let created = 0
    const run = (async () => {
      const ids = await state.takeVolumeIds(count)
      let lastError: unknown
      for (const id of ids) {
        try {
          await createVolume(id, replication, collection)
          created++
        } catch (err) {
          lastError = err
          metrics.growthFailures.inc()
          options.log(`growing volume ${id} (${replication}${collection ? `, ${collection}` : ''}) failed: ${(err as Error).message}`)
        }
      }
      if (created === 0 && lastError) throw lastError
    })()
    growing.set(layout, run)
    try {
      await run
    } finally {
      growing.delete(layout)
    }
    return created
  }

  const createVolume = async (id: number, replication: string, collection: string): Promise<void> => {
    const nodes = topology.pickServers(replication)
    const locations = nodes.map((n) => n.url).join(',')
    const query = `volume=${id}&replication=${replication}&collection=${encodeURIComponent(collection)}&locations=${encodeURIComponent(locations)}`
    const results = await Promise.allSettled(
      nodes.map(async (node) => {
        const answer = await callPeer(agent, `${originOf(node.url)}/admin/assign_volume?${query}`, {
          method: 'POST',
          headers: secretHeaders(options.secret),
          timeoutMs: options.peerTimeoutMs,
        })
        if (answer.statusCode !== 201) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${node.url} refused volume ${id}: ${answerError(answer).error}`)
      }),
    )
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) {
      // All copies or none: remove the copies that were made. One that cannot be removed now
      // is an empty volume the master never assigns (it lacks copies).
      await Promise.allSettled(
        nodes.map((node, i) =>
          results[i]!.status === 'fulfilled'
            ? callPeer(agent, `${originOf(node.url)}/admin/volume/delete?volume=${id}`, { method: 'POST', headers: secretHeaders(options.secret), timeoutMs: options.peerTimeoutMs })
            : undefined,
        ),
      )
      throw failed.reason
    }
    topology.addVolume(id, replication, collection, nodes)
    metrics.volumesGrown.inc()
  }

  const layoutOf = (q: Record<string, string | undefined>): { replication: string; collection: string } => {
    const replication = q.replication || defaultReplication()
    parsePlacement(replication)
    return { replication, collection: collectionParam(q.collection) }
  }

  const assign = async (q: Record<string, string | undefined>): Promise<AssignResult> => {
    ensureReady()
    const count = q.count === undefined || q.count === '' ? 1 : Number(q.count)
    if (!Number.isInteger(count) || count < 1 || count > options.assignCountMax) {
      throw new NeedleError('NS_ERR_BAD_REQUEST', `count must be an integer from 1 to ${options.assignCountMax}`)
    }
    if (q.ttl) throw new NeedleError('NS_ERR_BAD_REQUEST', 'ttl is not supported: files live until they are deleted')
    const { replication, collection } = layoutOf(q)
    const stored = count === 1 ? await storedCopy(q, replication, collection) : undefined
    let volumeId = stored?.volumeId
    if (volumeId === undefined) {
      let ids = topology.writable(replication, collection)
      if (ids.length === 0) {
        await grow(replication, collection, options.volumeGrowthCount)
        ids = topology.writable(replication, collection)
      }
      if (ids.length === 0) {
        throw new NeedleError('NS_ERR_NO_WRITABLE_VOLUME', `no writable volume with replication ${replication}${collection ? ` in collection ${collection}` : ''}`)
      }
      volumeId = ids[randomInt(ids.length)]!
    }
    const key = await state.takeKeys(count)
    metrics.keysAssigned.inc(count)
    const fid = formatFid({ volumeId, keyHi: Math.floor(key / 0x1_0000_0000), keyLo: key % 0x1_0000_0000, cookie: randomInt(0x1_0000_0000) })
    const locations = topology.locations(volumeId)
    const at = locations[randomInt(locations.length)]!
    return {
      fid,
      url: at.url,
      publicUrl: at.publicUrl,
      count,
      ...(options.secret !== undefined ? { auth: signToken(options.secret, fid, options.tokenTtlSeconds, options.now()) } : {}),
      ...(stored ? { dedupOf: sealDedupRef(options.secret, stored.fid, fid) } : {}),
    }
  }

  /**
   * For an assign with `md5` and `size`: the stored file the dedup index names for those bytes,
   * when its volume takes writes. Only a hint: the data server checks the file before linking.
   */
  const storedCopy = async (q: Record<string, string | undefined>, replication: string, collection: string) => {
    if (!options.dedup || q.md5 === undefined) return undefined
    if (!/^[0-9a-fA-F]{32}$/.test(q.md5)) throw new NeedleError('NS_ERR_BAD_REQUEST', 'md5 must be 32 hex digits')
    const size = Number(q.size)
    if (q.size === undefined || !Number.isSafeInteger(size) || size < 0) throw new NeedleError('NS_ERR_BAD_REQUEST', 'an assign with md5 needs size, the file\'s bytes')
    if (size < options.dedupBytesMin) return undefined
    const entry = await state.dedupGet(collection, replication, q.md5.toLowerCase())
    if (!entry || entry.size !== size) return undefined
    const volumeId = parseFid(entry.fid).volumeId
    const info = topology.volume(volumeId)
    if (!info || topology.unwritableReason(info) !== undefined) return undefined
    metrics.dedupHits.inc()
    return { fid: entry.fid, volumeId }
  }

  app.route({
    method: ['GET', 'POST'],
    url: '/dir/assign',
    handler: async (req) => assign(req.query as Record<string, string | undefined>),
  })

  /** Operator routes that change the cluster need the secret when one is set. */
  const operator = async (req: FastifyRequest) => checkSecret(options.secret, req.headers.authorization)

  app.route({
    method: ['GET', 'POST'],
    url: '/vol/grow',
    preHandler: operator,
    handler: async (req) => {
      const q = req.query as Record<string, string | undefined>
      const count = q.count === undefined ? options.volumeGrowthCount : Number(q.count)
      if (!Number.isInteger(count) || count < 1 || count > 100) throw new NeedleError('NS_ERR_BAD_REQUEST', 'count must be an integer from 1 to 100')
      const { replication, collection } = layoutOf(q)
      return { count: await grow(replication, collection, count) }
    },
  })

  // --------------------------------------------------------------------------------------------
  // Lookup and redirects.

  /** Live locations of a volume; 404 when none (503 while the map is still incomplete). */
  const locate = (volumeId: number): Location[] => {
    const locations = topology.locations(volumeId)
    if (locations.length === 0) {
      ensureReady()
      throw new NeedleError('NS_ERR_VOLUME_NOT_FOUND', `volume id ${volumeId} not found`)
    }
    return locations
  }

  app.get('/dir/lookup', async (req, reply) => {
    const q = req.query as Record<string, string | undefined>
    const text = q.volumeId ?? q.fileId
    if (!text) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter volumeId is required')
    const isFid = text.includes(',')
    const volumeId = isFid ? parseFid(text).volumeId : parseVolumeId(text)
    // As SeaweedFS does, the answer names the volume even when a fid was asked for.
    try {
      const locations = locate(volumeId)
      return {
        volumeOrFileId: String(volumeId),
        volumeId: String(volumeId),
        locations,
        ...(isFid && options.secret !== undefined ? { auth: signToken(options.secret, text, options.tokenTtlSeconds, options.now()) } : {}),
      }
    } catch (err) {
      if (!isNeedleError(err) || err.code !== 'NS_ERR_VOLUME_NOT_FOUND') throw err
      return reply.code(404).send({ volumeOrFileId: String(volumeId), error: err.message, code: err.code })
    }
  })

  app.route({
    method: ['GET', 'HEAD'],
    url: '/*',
    handler: async (req, reply) => {
      const { fid } = parseFidPath(req.url)
      const locations = locate(fid.volumeId)
      const at = locations[randomInt(locations.length)]!
      return reply.redirect(`${originOf(at.publicUrl)}${req.url}`, 302)
    },
  })
  app.route({
    method: ['POST', 'PUT'],
    url: '/*',
    handler: async (req, reply) => {
      const { fid } = parseFidPath(req.url)
      return reply.redirect(`${originOf(locate(fid.volumeId)[0]!.publicUrl)}${req.url}`, 307)
    },
  })
  app.delete('/*', async (req, reply) => {
    const { fid } = parseFidPath(req.url)
    const at = locate(fid.volumeId)[0]!
    const auth = req.headers.authorization
    const answer = await callPeer(agent, `${originOf(at.url)}${req.url}`, {
      method: 'DELETE',
      headers: auth ? { authorization: auth } : {},
      timeoutMs: options.peerTimeoutMs,
    })
    return reply.code(answer.statusCode).header('content-type', 'application/json; charset=utf-8').send(answer.body)
  })

  // --------------------------------------------------------------------------------------------
  // Submit: assign and upload in one call. The body goes to the data server as it came.

  // Assign and store in one call, with MD5 dedup: the file (a raw body, or the first file of a
  // multipart body) goes to the data server as a raw body with its name and type.
  app.post('/submit', async (req, reply) => {
    const q = req.query as Record<string, string | undefined>
    const file = await submittedFile(req)
    const md5 = createHash('md5').update(file.data).digest('hex')
    const assigned = await assign({ replication: q.replication, collection: q.collection, md5, size: String(file.data.length) })
    const headers: Record<string, string> = { 'content-type': file.mime ?? 'application/octet-stream' }
    if (assigned.auth) headers.authorization = `Bearer ${assigned.auth}`
    const name = file.name ? `filename=${encodeURIComponent(file.name)}` : ''
    const store = (query: string, body: Buffer) =>
      callPeer(agent, `${originOf(assigned.url)}/${assigned.fid}${query ? `?${query}` : ''}`, { method: 'POST', headers, body, timeoutMs: options.peerTimeoutMs })
    let answer = assigned.dedupOf ? await store([`dedupOf=${encodeURIComponent(assigned.dedupOf)}`, `md5=${md5}`, name].filter(Boolean).join('&'), Buffer.alloc(0)) : undefined
    if (answer && answer.statusCode === 409 && answerError(answer).code === 'NS_ERR_DEDUP_MISS') {
      metrics.dedupMisses.inc()
      answer = undefined
    }
    answer ??= await store(name, file.data)
    if (answer.statusCode !== 201) {
      return reply.code(answer.statusCode).header('content-type', 'application/json; charset=utf-8').send(answer.body)
    }
    const stored = answerJson<{ name?: string; size?: number; eTag?: string; deduplicated?: boolean }>(answer, assigned.url)
    return reply.code(201).send({
      fid: assigned.fid,
      fileName: stored.name ?? '',
      fileUrl: `${assigned.publicUrl}/${assigned.fid}`,
      size: stored.size,
      eTag: stored.eTag,
      deduplicated: stored.deduplicated === true,
    })
  })

  // Data servers report the files clients stored, for the dedup index.
  app.post('/cluster/dedup', { preHandler: operator }, async (req) => {
    const entries = parseDedupReports(req.body).filter((e) => e.size >= options.dedupBytesMin)
    if (options.dedup) await state.dedupPut(entries)
    return { stored: options.dedup ? entries.length : 0 }
  })

  // --------------------------------------------------------------------------------------------
  // Heartbeats.

  app.post('/cluster/heartbeat', { preHandler: operator }, async (req) => {
    const hb = repairer.filterHeartbeat(parseHeartbeat(req.body))
    const isNew = topology.node(hb.url) === undefined
    const wasDead = topology.node(hb.url)?.alive === false
    const peers = topology.heartbeat(hb)
    for (const v of hb.volumes) state.observeVolumeId(v.id)
    if (awaited.delete(hb.url) || isNew || wasDead) {
      options.log(`data server ${hb.url} (${hb.dataCenter}/${hb.rack}) ${wasDead ? 'is back' : 'joined'} with ${hb.volumes.length} volumes`)
    }
    await state.rememberServer({ url: hb.url, dataCenter: hb.dataCenter, rack: hb.rack })
    return { peers, volumeBytesMax: options.volumeBytesMax }
  })

  // --------------------------------------------------------------------------------------------
  // Status.

  app.get('/cluster/status', async () => ({ IsLeader: true, Leader: master.url.replace(/^https?:\/\//, ''), Peers: [] }))
  app.get('/dir/status', async () => ({ Version: MASTER_VERSION, Topology: topologyStatus(topology) }))
  app.get('/vol/status', async () => ({ Version: MASTER_VERSION, Volumes: volumeStatuses(topology) }))
  app.route({
    method: ['GET', 'POST'],
    url: '/vol/vacuum',
    preHandler: operator,
    handler: async (req) => {
      const q = req.query as Record<string, string | undefined>
      const threshold = q.garbageThreshold === undefined ? 0.3 : Number(q.garbageThreshold)
      if (!Number.isFinite(threshold) || threshold < 0 || threshold > 1) {
        throw new NeedleError('NS_ERR_BAD_REQUEST', 'garbageThreshold must be a number from 0 to 1')
      }
      const only = q.volume === undefined ? undefined : parseVolumeId(q.volume)
      const candidates = volumeStatuses(topology)
        .filter((v) => (only === undefined ? v.GarbageRatio > threshold : v.Id === only))
        .map((v) => v.Id)
      // Every live copy compacts its own files (each data server one volume at a time).
      const runs = candidates.flatMap((id) =>
        topology.locations(id).map(async (l) => {
          try {
            const answer = await callPeer(agent, `${originOf(l.url)}/admin/volume/compact?volume=${id}`, {
              method: 'POST',
              headers: secretHeaders(options.secret),
              timeoutMs: COMPACT_WAIT_MS,
            })
            return { volume: id, url: l.url, status: answer.statusCode, ...(answer.statusCode === 200 ? answerJson<object>(answer, l.url) : answerError(answer)) }
          } catch (err) {
            return { volume: id, url: l.url, status: 503, error: (err as Error).message }
          }
        }),
      )
      const body = { Version: MASTER_VERSION, Topology: topologyStatus(topology), garbageThreshold: threshold, overThreshold: candidates }
      if (q.wait !== 'true') {
        void Promise.all(runs).then((results) => {
          for (const r of results) if (r.status !== 200) options.log(`compaction of volume ${r.volume} on ${r.url} failed: ${JSON.stringify(r)}`)
        })
        return { ...body, compacting: candidates }
      }
      return { ...body, compacted: await Promise.all(runs) }
    },
  })
  // Re-replication on demand: every volume with a copy on a dead server, now (dryRun: the plan).
  app.post('/vol/fix_replication', { preHandler: operator }, async (req) => {
    const q = req.query as Record<string, string | undefined>
    ensureReady()
    if (q.dryRun === 'true' || q.dryRun === '1') return { dryRun: true, ...repairer.plan(true), results: [] }
    const { plan, results } = await repairer.runNow()
    return { dryRun: false, ...plan, results }
  })
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return metrics.registry.metrics()
  })
  app.get('/', async (_req, reply) => {
    reply.header('content-type', 'text/html; charset=utf-8')
    return renderDashboard(MASTER_VERSION, topology, notReadyForMs() > 0)
  })
  return master
}

/** Builds the master and listens on options.host:options.port. */
export async function startMaster(input: MasterInput): Promise<Master> {
  const master = await createMaster(input)
  try {
    await master.app.listen({ host: master.options.host, port: master.options.port })
  } catch (err) {
    await master.close()
    throw err
  }
  const address = master.app.server.address()
  const port = typeof address === 'object' && address ? address.port : master.options.port
  master.url = `http://${master.options.host}:${port}`
  return master
}

function operationOf(req: FastifyRequest): MasterOp {
  switch (req.routeOptions.url) {
    case '/dir/assign':
      return 'assign'
    case '/dir/lookup':
      return 'lookup'
    case '/submit':
      return 'submit'
    case '/cluster/heartbeat':
      return 'heartbeat'
    case '/vol/grow':
      return 'grow'
    case '/metrics':
      return 'metrics'
    case '/dir/status':
    case '/cluster/status':
    case '/vol/status':
    case '/':
      return 'status'
    case '/*':
      return req.method === 'DELETE' ? 'delete' : 'redirect'
    default:
      return 'other'
  }
}

// ---------------------------------------------------------------------------------------------
// /submit's file.

interface SubmittedFile {
  readonly data: Buffer
  readonly name: string | undefined
  readonly mime: string | undefined
}

/** The file of a /submit: the first file of a multipart body, or the raw body (`?filename=`). */
async function submittedFile(req: FastifyRequest): Promise<SubmittedFile> {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0)
  const contentType = req.headers['content-type'] ?? ''
  const q = req.query as Record<string, string | undefined>
  if (!/^multipart\/form-data/i.test(contentType)) {
    const mime = essence(contentType)
    return { data: body, name: q.filename || undefined, mime: mime === OCTET_STREAM || mime === 'application/x-www-form-urlencoded' ? undefined : mime }
  }
  let form: FormData
  try {
    form = await new Response(body, { headers: { 'content-type': contentType } }).formData()
  } catch (err) {
    throw new NeedleError('NS_ERR_BAD_REQUEST', `malformed multipart body: ${(err as Error).message}`)
  }
  const part = [...form.values()].find((v): v is File => typeof v !== 'string')
  if (!part) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the multipart body has no file')
  const name = part.name || q.filename || undefined
  let mime = essence(part.type) || undefined
  // A part without a type, or text/plain, says less than a known file extension.
  if ((mime === undefined || mime === 'text/plain') && name && mimeFromName(name)) mime = mimeFromName(name)
  return { data: Buffer.from(await part.arrayBuffer()), name, mime: mime === OCTET_STREAM ? undefined : mime }
}

/** The reports of /cluster/dedup, every field checked (a bad entry would send writers astray). */
function parseDedupReports(body: unknown): DedupEntry[] {
  let parsed: { entries?: unknown }
  try {
    parsed = JSON.parse(Buffer.isBuffer(body) ? body.toString('utf8') : '') as { entries?: unknown }
  } catch {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'a dedup report is a JSON object {"entries": [...]}')
  }
  if (!Array.isArray(parsed?.entries) || parsed.entries.length > 10_000) throw new NeedleError('NS_ERR_BAD_REQUEST', 'entries must be an array of at most 10000 reports')
  return (parsed.entries as Record<string, unknown>[]).map((e) => {
    const size = e?.size
    if (typeof e?.md5 !== 'string' || !/^[0-9a-f]{32}$/.test(e.md5) || typeof e.fid !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || typeof e.replication !== 'string') {
      throw new NeedleError('NS_ERR_BAD_REQUEST', 'a dedup report has md5 (32 lowercase hex digits), fid, size and replication')
    }
    return {
      collection: collectionParam(e.collection ?? ''),
      replication: formatPlacement(parsePlacement(e.replication)),
      md5: e.md5,
      fid: formatFid(parseFid(e.fid)),
      size,
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Heartbeat parsing: every field checked, since a bad report would poison the volume map.

const HEARTBEAT_VOLUMES_MAX = 100_000

function parseHeartbeat(body: unknown): Heartbeat {
  let hb: Record<string, unknown>
  try {
    hb = JSON.parse(Buffer.isBuffer(body) ? body.toString('utf8') : '') as Record<string, unknown>
  } catch {
    throw new NeedleError('NS_ERR_BAD_REQUEST', 'a heartbeat is a JSON object')
  }
  const str = (v: unknown, name: string): string => {
    if (typeof v !== 'string' || v.length === 0 || v.length > 256) throw new NeedleError('NS_ERR_BAD_REQUEST', `heartbeat field ${name} must be a non-empty string`)
    return v
  }
  const num = (v: unknown, name: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new NeedleError('NS_ERR_BAD_REQUEST', `heartbeat field ${name} must be a non-negative integer`)
    return v
  }
  if (!Array.isArray(hb.volumes) || hb.volumes.length > HEARTBEAT_VOLUMES_MAX) throw new NeedleError('NS_ERR_BAD_REQUEST', 'heartbeat field volumes must be an array')
  const volumes = (hb.volumes as Record<string, unknown>[]).map((v): VolumeReport => {
    const replication = formatPlacement(parsePlacement(str(v.replication, 'replication')))
    const collection = collectionParam(v.collection)
    return {
      id: parseVolumeId(String(num(v.id, 'id'))),
      replication,
      collection,
      size: num(v.size, 'size'),
      fileCount: num(v.fileCount, 'fileCount'),
      deleteCount: num(v.deleteCount, 'deleteCount'),
      garbageBytes: num(v.garbageBytes, 'garbageBytes'),
      readOnly: v.readOnly === true,
      healthy: v.healthy !== false,
    }
  })
  return {
    url: str(hb.url, 'url'),
    publicUrl: str(hb.publicUrl ?? hb.url, 'publicUrl'),
    dataCenter: str(hb.dataCenter, 'dataCenter'),
    rack: str(hb.rack, 'rack'),
    volumesMax: num(hb.volumesMax, 'volumesMax'),
    volumes,
  }
}
