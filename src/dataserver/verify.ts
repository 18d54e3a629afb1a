/**
 * Verify: one data server compares every copy of a volume key by key (its own and those of the
 * peers the master named), reports what differs, and with `repair` fixes it by the rules of
 * replica-compare.ts. Also the admin routes that scrub and verify use:
 *
 *   GET  /admin/volume/scan?volume=N&after=<key hex>&limit=1000  one page of keys, each checked on disk
 *   GET  /admin/needle?volume=N&key=<key hex>                    the live file of a key, as a write record
 *   POST /admin/volume/repair?volume=N&key=<hex>&cookie=<hex>&from=<host:port>
 *                                                                 fetch the file from a copy and store it here
 *   POST /admin/volume/verify?volume=N&repair=true&settleMs=60000 compare every copy; answers a VerifyReport
 *
 * Every one needs the cluster secret when one is set. Copies are read a page at a time, so a
 * verify holds one page per copy in memory, whatever the size of the volume.
 */
import { NeedleError, isNeedleError } from '../common/errors.js'
import { formatFid, parseVolumeId } from '../common/fid.js'
import { answerError, answerJson, callPeer, originOf } from '../common/peer.js'
import { copyCountOfByte } from '../common/placement.js'
import { checkSecret, secretHeaders } from '../common/auth.js'
import { compareKey, keyHex, parseKeyHex, type Finding, type KeyState, type Problem } from './replica-compare.js'
import { SCAN_PAGE_KEYS_MAX, fileRecord, pullFile, scanPage, type PeerContext, type ScanPage } from './scrub.js'
import type { DataServer } from './server.js'
import type { FastifyRequest } from 'fastify'

/** How long a write or delete may still be on its way to some copies: disagreements younger
 *  than this are reported, not repaired. */
export const VERIFY_SETTLE_MS_DEFAULT = 60_000
/** Items of each list of a report at most (the counts go on). */
export const REPORT_ITEMS_MAX = 1000
/** One scan page may take this long to arrive from a peer. */
const SCAN_PAGE_TIMEOUT_MS = 120_000

export interface ReportItem {
  readonly fid: string
  /** The copy (`host:port`) with the problem. */
  readonly copy: string
  readonly problem: Problem
  readonly why: string
  /** What the repair did, or why it failed. */
  readonly repair?: string
}

export interface VerifyReport {
  readonly volume: number
  /** The copies compared (`host:port`), this server first. */
  readonly copies: string[]
  /** Copies the placement asks for. */
  readonly copiesExpected: number
  /** Keys compared. */
  readonly checked: number
  readonly repair: boolean
  /** Findings by problem (all of them, also past REPORT_ITEMS_MAX). */
  readonly counts: Record<Problem, number>
  readonly damaged: ReportItem[]
  readonly missing: ReportItem[]
  readonly mismatch: ReportItem[]
  readonly extra: ReportItem[]
  readonly deleted: ReportItem[]
  readonly lost: ReportItem[]
  /** Findings repaired, and findings left: recent ones, lost files, failed repairs, or all without repair. */
  readonly repaired: number
  readonly unrepaired: number
  readonly failed: ReportItem[]
  /** True when every copy agreed, or every finding was repaired. */
  readonly ok: boolean
}

/** `host:port` other servers reach this one at (as the master lists it). */
export function selfAddress(server: DataServer): string {
  const port = new URL(server.url).port
  return `${server.options.ip ?? server.options.host}:${port}`
}

export function peerContext(server: DataServer, timeoutMs = server.options.replicateTimeoutMs): PeerContext {
  return { cluster: server.cluster, secret: server.options.secret, timeoutMs, fileBytesMax: server.options.fileBytesMax }
}

/** Pages of one copy's keys, read one page ahead of need. */
class Cursor {
  #page: KeyState[] = []
  #at = 0
  #next: string | undefined
  #done = false
  #started = false

  constructor(private readonly fetchPage: (after: string | undefined) => Promise<ScanPage>) {}

  /** The copy's next key not yet taken; undefined at the end. */
  async head(): Promise<KeyState | undefined> {
    while (this.#at >= this.#page.length) {
      if (this.#done) return undefined
      const page = await this.fetchPage(this.#started ? this.#next : undefined)
      this.#started = true
      this.#page = page.entries
      this.#at = 0
      this.#next = page.next
      if (page.next === undefined) this.#done = true
    }
    return this.#page[this.#at]
  }

  take(): void {
    this.#at++
  }
}

export interface VerifyOptions {
  readonly volumeId: number
  readonly repair: boolean
  readonly settleMs: number
}

/** Compares every copy of a volume this server holds; repairs when asked. */
export async function verifyVolume(server: DataServer, o: VerifyOptions): Promise<VerifyReport> {
  const volume = server.store.volume(o.volumeId)
  const self = selfAddress(server)
  const peers = server.cluster.peersOf(o.volumeId).filter((p) => p !== self)
  const copies = [self, ...peers]
  const copiesExpected = copyCountOfByte(volume.placement)
  if (copies.length < copiesExpected) {
    // Comparing fewer copies than there are would call keys extra or missing by a wrong count.
    throw new NeedleError('NS_ERR_VOLUME_UNAVAILABLE', `volume ${o.volumeId} has ${copiesExpected} copies and this server knows ${copies.length} of them; ask another copy, or wait for the master to name them`)
  }
  const secret = server.options.secret
  const cursors = copies.map((copy, i) =>
    new Cursor(async (after) => {
      if (i === 0) return scanPage(server.store.volume(o.volumeId), after, SCAN_PAGE_KEYS_MAX)
      const query = `volume=${o.volumeId}&limit=${SCAN_PAGE_KEYS_MAX}${after === undefined ? '' : `&after=${after}`}`
      const answer = await callPeer(server.cluster.agent, `${originOf(copy)}/admin/volume/scan?${query}`, {
        headers: secretHeaders(secret),
        timeoutMs: SCAN_PAGE_TIMEOUT_MS,
      })
      if (answer.statusCode !== 200) {
        const { error, code } = answerError(answer)
        throw new NeedleError(code === 'NS_ERR_VOLUME_NOT_FOUND' ? 'NS_ERR_VOLUME_NOT_FOUND' : 'NS_ERR_BAD_GATEWAY', `the copy at ${copy}: ${answer.statusCode} ${error}`)
      }
      const page = answerJson<{ entries?: KeyState[]; next?: string }>(answer, copy)
      if (!Array.isArray(page.entries)) throw new NeedleError('NS_ERR_BAD_GATEWAY', `the copy at ${copy} answered a scan without entries`)
      return { entries: page.entries, next: typeof page.next === 'string' ? page.next : undefined }
    }),
  )
  const lists: Record<Problem, ReportItem[]> = { damaged: [], missing: [], mismatch: [], extra: [], deleted: [], lost: [] }
  const counts: Record<Problem, number> = { damaged: 0, missing: 0, mismatch: 0, extra: 0, deleted: 0, lost: 0 }
  const failed: ReportItem[] = []
  let checked = 0
  let repaired = 0
  let unrepaired = 0
  const ctx = peerContext(server)
  for (;;) {
    const heads = await Promise.all(cursors.map((c) => c.head()))
    let key: string | undefined
    for (const h of heads) if (h && (key === undefined || h.key < key)) key = h.key
    if (key === undefined) break
    const states = heads.map((h) => (h && h.key === key ? h : undefined))
    states.forEach((s, i) => s && cursors[i]!.take())
    checked++
    for (const f of compareKey(states, server.options.now(), o.settleMs)) {
      const { keyHi, keyLo } = parseKeyHex(key)!
      const fid = formatFid({ volumeId: o.volumeId, keyHi, keyLo, cookie: Number.parseInt(f.cookie, 16) })
      let repair: string | undefined
      if (o.repair && f.action !== 'none') {
        try {
          repair = await applyFinding(server, ctx, copies, o.volumeId, keyHi, keyLo, f)
          repaired++
        } catch (err) {
          repair = `failed: ${(err as Error).message}`
          unrepaired++
          if (failed.length < REPORT_ITEMS_MAX) failed.push({ fid, copy: copies[f.copy]!, problem: f.problem, why: f.why, repair })
        }
      } else {
        unrepaired++
      }
      counts[f.problem]++
      const list = lists[f.problem]
      if (list.length < REPORT_ITEMS_MAX) list.push({ fid, copy: copies[f.copy]!, problem: f.problem, why: f.why, ...(repair !== undefined ? { repair } : {}) })
    }
  }
  return {
    volume: o.volumeId,
    copies,
    copiesExpected,
    checked,
    repair: o.repair,
    counts,
    ...lists,
    repaired,
    unrepaired,
    failed,
    ok: unrepaired === 0,
  }
}

/** Carries out one finding's repair; answers what was done. */
async function applyFinding(server: DataServer, ctx: PeerContext, copies: readonly string[], volumeId: number, keyHi: number, keyLo: number, f: Finding): Promise<string> {
  const target = copies[f.copy]!
  const cookie = Number.parseInt(f.cookie, 16)
  if (f.action === 'copy') {
    const from = copies[f.from!]!
    if (f.copy === 0) {
      await pullFile(ctx, server.store.volume(volumeId), from, keyHi, keyLo, cookie)
    } else {
      const query = `volume=${volumeId}&key=${keyHex(keyHi, keyLo)}&cookie=${f.cookie}&from=${encodeURIComponent(from)}`
      const answer = await callPeer(server.cluster.agent, `${originOf(target)}/admin/volume/repair?${query}`, {
        method: 'POST',
        headers: secretHeaders(server.options.secret),
        timeoutMs: 2 * ctx.timeoutMs,
      })
      if (answer.statusCode !== 200) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${target}: ${answer.statusCode} ${answerError(answer).error}`)
    }
    return `copied from ${from}`
  }
  // A tombstone on that copy only.
  if (f.copy === 0) {
    await server.store.volume(volumeId).delete(keyHi, keyLo, cookie)
  } else {
    const fid = formatFid({ volumeId, keyHi, keyLo, cookie })
    const answer = await callPeer(server.cluster.agent, `${originOf(target)}/${fid}?type=replicate`, {
      method: 'DELETE',
      headers: secretHeaders(server.options.secret),
      timeoutMs: ctx.timeoutMs,
    })
    if (answer.statusCode !== 202) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${target}: ${answer.statusCode} ${answerError(answer).error}`)
  }
  return 'deleted there'
}

// ---------------------------------------------------------------------------------------------
// Routes.

function query(req: FastifyRequest): Record<string, string | undefined> {
  return req.query as Record<string, string | undefined>
}

function volumeOf(req: FastifyRequest): number {
  const v = query(req).volume
  if (v === undefined) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter volume is required')
  return parseVolumeId(v)
}

function keyOf(req: FastifyRequest): { keyHi: number; keyLo: number } {
  const text = query(req).key
  const key = text === undefined ? undefined : parseKeyHex(text)
  if (!key) throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter key must be a key: up to 16 hex digits')
  return key
}

function nonNegativeInteger(name: string, text: string | undefined, fallback: number, max: number): number {
  if (text === undefined) return fallback
  const n = Number(text)
  if (!/^[0-9]+$/.test(text) || n > max) throw new NeedleError('NS_ERR_BAD_REQUEST', `${name} must be an integer from 0 to ${max}`)
  return n
}

export function registerVerifyRoutes(server: DataServer): void {
  const { app, store, options } = server
  const guard = async (req: FastifyRequest) => checkSecret(options.secret, req.headers.authorization)

  app.get('/admin/volume/scan', { preHandler: guard }, async (req) => {
    const volumeId = volumeOf(req)
    const limit = nonNegativeInteger('limit', query(req).limit, SCAN_PAGE_KEYS_MAX, SCAN_PAGE_KEYS_MAX)
    const page = await scanPage(store.volume(volumeId), query(req).after, Math.max(1, limit))
    return { volume: volumeId, entries: page.entries, ...(page.next !== undefined ? { next: page.next } : {}) }
  })

  app.get('/admin/needle', { preHandler: guard }, async (req, reply) => {
    const volume = store.volume(volumeOf(req))
    const { keyHi, keyLo } = keyOf(req)
    try {
      const record = await fileRecord(volume, keyHi, keyLo)
      return reply.header('content-type', 'application/octet-stream').send(record)
    } catch (err) {
      if (isNeedleError(err) && err.code === 'NS_ERR_NOT_FOUND') {
        return reply.code(404).send({ error: err.message, code: err.code, deleted: (err as { deleted?: boolean }).deleted === true })
      }
      throw err
    }
  })

  app.post('/admin/volume/repair', { preHandler: guard }, async (req) => {
    const volume = store.volume(volumeOf(req))
    const { keyHi, keyLo } = keyOf(req)
    const q = query(req)
    if (q.from === undefined || q.from === '') throw new NeedleError('NS_ERR_BAD_REQUEST', 'the query parameter from (host:port of a good copy) is required')
    if (q.cookie !== undefined && !/^[0-9a-fA-F]{1,8}$/.test(q.cookie)) throw new NeedleError('NS_ERR_BAD_REQUEST', 'cookie must be up to 8 hex digits')
    const cookie = q.cookie === undefined ? undefined : Number.parseInt(q.cookie, 16)
    const { size } = await pullFile(peerContext(server), volume, q.from, keyHi, keyLo, cookie)
    return { volume: volume.id, key: keyHex(keyHi, keyLo), size, from: q.from }
  })

  app.post('/admin/volume/verify', { preHandler: guard }, async (req) => {
    const q = query(req)
    const repair = q.repair === 'true' || q.repair === '1' || q.repair === ''
    const settleMs = nonNegativeInteger('settleMs', q.settleMs, VERIFY_SETTLE_MS_DEFAULT, 7 * 86_400_000)
    return verifyVolume(server, { volumeId: volumeOf(req), repair, settleMs })
  })
}
