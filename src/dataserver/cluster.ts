/**
 * A data server's side of the cluster: heartbeats to the master, the replicas of each volume,
 * forwarding writes and deletes to them, and reconciling a replicated write that failed.
 *
 * Invariants:
 * - A write or delete from a client is acknowledged only when every copy of the volume took it.
 *   A volume whose copies are not all known (the master has not said, or lists fewer than the
 *   placement asks for) takes no client writes.
 * - A replicated write or delete that failed somewhere leaves its key on the reconcile list:
 *   the key is deleted on every copy (idempotent tombstones) until all have confirmed, so the
 *   copies converge on one live set without the failed write. Until then the volume is reported
 *   unhealthy in heartbeats and the master assigns no new writes to it.
 */
import type { Agent } from 'undici'
import { secretHeaders } from '../common/auth.js'
import { NeedleError, isNeedleError } from '../common/errors.js'
import { formatFid } from '../common/fid.js'
import { answerError, answerJson, callPeer, createPeerAgent, originOf } from '../common/peer.js'
import { copyCountOfByte, formatPlacement, placementFromByte } from '../common/placement.js'
import { KIND_DELETE, encodeOp, type ReplicaOp } from './replica-batch.js'
import type { Store } from './store.js'

export interface ClusterLinkOptions {
  readonly master: string | undefined
  readonly secret: string | undefined
  readonly dataCenter: string
  readonly rack: string
  readonly heartbeatIntervalMs: number
  readonly replicateTimeoutMs: number
  readonly reconcileQueueMax: number
  readonly log: (message: string) => void
  readonly onReplicationFailure?: () => void
}

/** What a replica answered to a forwarded request. */
export interface ReplicaOutcome {
  readonly peer: string
  /** True when the peer took it; false when it surely did not (refused, or never sent);
   *  undefined when unknown. */
  readonly stored: boolean | undefined
  /** True when the peer itself answered for this record (took it or refused it). */
  readonly answered: boolean
  readonly error?: string
}

interface PendingKey {
  readonly keyHi: number
  readonly keyLo: number
  readonly cookie: number
}

export interface Location {
  readonly url: string
  readonly publicUrl: string
}

/** A replication batch carries at most this many bytes (or one record, if that is larger). */
export const REPLICATE_BATCH_BYTES_MAX = 8 * 1024 * 1024
export const REPLICATE_BATCH_OPS_MAX = 1024
/** Bytes and records queued for one peer at most; past it a write fails at once. */
const REPLICATE_QUEUE_BYTES_MAX = 256 * 1024 * 1024
const REPLICATE_QUEUE_OPS_MAX = 16 * 1024

interface QueuedOp {
  readonly chunks: Buffer[]
  readonly bytes: number
  readonly deadlineMs: number
  readonly resolve: (outcome: ReplicaOutcome) => void
}

/** What is waiting to go to one peer; one batch is in flight at a time, so order is kept. */
interface PeerStream {
  readonly queue: QueuedOp[]
  bytes: number
  sending: boolean
}

/** One result per record of a batch, in order. */
export interface ReplicaResult {
  readonly status: number
  readonly size?: number
  readonly code?: string
  readonly error?: string
}

const LOOKUPS_IN_FLIGHT_MAX = 1024
const RECONCILE_BATCH = 256

/** A file stored through this server, for the master's MD5 dedup index. */
interface DedupReport {
  readonly collection: string
  readonly replication: string
  readonly md5: string
  readonly fid: string
  readonly size: number
}
/** Files smaller than this are not worth sharing: a link needle costs about as much. */
export const DEDUP_BYTES_MIN = 1024
const DEDUP_BATCH = 1000
const DEDUP_QUEUE_MAX = 20_000
const DEDUP_DELAY_MS = 200

export class ClusterLink {
  readonly #opts: ClusterLinkOptions
  readonly #store: Store
  readonly #agent: Agent
  /** Other copies of each volume, as the master last said. */
  readonly #peers = new Map<number, readonly string[]>()
  readonly #pending = new Map<number, Map<string, PendingKey>>()
  #pendingCount = 0
  /** Lookups at the master in flight, by volume. */
  readonly #lookups = new Map<number, Promise<Location[]>>()
  readonly #streams = new Map<string, PeerStream>()
  #dedupQueue: DedupReport[] = []
  #dedupTimer: NodeJS.Timeout | undefined
  #dedupSending: Promise<void> | undefined
  #dedupDropped = 0
  #timer: NodeJS.Timeout | undefined
  #beating: Promise<void> | undefined
  #beatAgain = false
  #reconciling = false
  #masterReachable: boolean | undefined
  #lastBeatMs = 0
  #closed = false
  /** `host:port` the master and peers reach this server at; known once it listens. */
  #self = ''
  #publicUrl = ''

  constructor(opts: ClusterLinkOptions, store: Store) {
    this.#opts = opts
    this.#store = store
    this.#agent = createPeerAgent({ connections: 128 })
  }

  /** Milliseconds since the last heartbeat the master answered (Infinity: none yet). */
  get heartbeatAgeMs(): number {
    return this.#lastBeatMs === 0 ? Infinity : Date.now() - this.#lastBeatMs
  }

  get pendingCount(): number {
    return this.#pendingCount
  }

  /** Starts heartbeats (when a master is set) and the reconcile loop, once listening at self. */
  start(self: string, publicUrl: string): void {
    this.#self = self
    this.#publicUrl = publicUrl
    const tick = () => {
      if (this.#closed) return
      void this.beat()
      void this.#reconcile()
      this.#timer = setTimeout(tick, this.#opts.heartbeatIntervalMs)
      this.#timer.unref()
    }
    tick()
  }

  // ------------------------------------------------------------------------------------------
  // Replicas.

  /** Records the copies of a volume (all locations; this server is left out). */
  setLocations(volumeId: number, locations: readonly string[]): void {
    this.#peers.set(volumeId, locations.filter((l) => l !== this.#self))
  }

  /**
   * Takes the master's list of a volume's other copies. The master may know fewer copies than
   * there are (it restarted, or a volume was just created and not every copy has reported):
   * such a list never replaces one that names every copy the placement asks for. Both are safe
   * (a write goes to every listed copy or is refused), but the shorter one refuses writes.
   */
  #updatePeers(volumeId: number, peers: string[]): void {
    const volume = this.#store.get(volumeId)
    if (!volume) return
    const needed = copyCountOfByte(volume.placement) - 1
    const current = this.#peers.get(volumeId)
    if (peers.length >= needed || current === undefined || current.length < Math.min(needed, peers.length + 1)) {
      this.#peers.set(volumeId, peers)
    }
  }

  forget(volumeId: number): void {
    this.#peers.delete(volumeId)
    this.#pendingCount -= this.#pending.get(volumeId)?.size ?? 0
    this.#pending.delete(volumeId)
  }

  /**
   * The other copies a client write or delete must reach. Throws NS_ERR_VOLUME_UNAVAILABLE when
   * the placement asks for more copies than are known, or, for a write, while the volume is
   * being reconciled (a write racing the reconciling delete of its key could be undone).
   */
  peersFor(volumeId: number, placement: number, op: 'write' | 'delete'): readonly string[] {
    if (op === 'write' && !this.isHealthy(volumeId)) {
      throw new NeedleError('NS_ERR_VOLUME_UNAVAILABLE', `volume ${volumeId} takes no writes until a failed replicated write is reconciled on every copy`)
    }
    const copies = copyCountOfByte(placement)
    if (copies === 1) return []
    const peers = this.#peers.get(volumeId) ?? []
    if (peers.length + 1 < copies) {
      throw new NeedleError(
        'NS_ERR_VOLUME_UNAVAILABLE',
        `volume ${volumeId} needs ${copies} copies (${formatPlacement(placementFromByte(placement))}) and ${peers.length + 1} are known${this.#opts.master ? '' : ': this server has no master'}`,
      )
    }
    return peers
  }

  /**
   * Sends a write or delete to one replica, in the next batch to it. A 2xx result is stored; a
   * 4xx a definite refusal; anything else (5xx, no answer in time) is unknown: the replica may
   * or may not have it. A record still queued at its deadline is never sent (refused).
   */
  replicate(peer: string, op: ReplicaOp): Promise<ReplicaOutcome> {
    let stream = this.#streams.get(peer)
    if (!stream) this.#streams.set(peer, (stream = { queue: [], bytes: 0, sending: false }))
    const chunks = encodeOp(op)
    const bytes = chunks.reduce((n, c) => n + c.length, 0)
    if (stream.bytes + bytes > REPLICATE_QUEUE_BYTES_MAX || stream.queue.length >= REPLICATE_QUEUE_OPS_MAX) {
      return Promise.resolve({ peer, stored: false, answered: false, error: `the replication queue to ${peer} is full` })
    }
    return new Promise<ReplicaOutcome>((resolve) => {
      stream.queue.push({ chunks, bytes, deadlineMs: Date.now() + this.#opts.replicateTimeoutMs, resolve })
      stream.bytes += bytes
      if (!stream.sending) void this.#pump(peer, stream)
    })
  }

  async #pump(peer: string, stream: PeerStream): Promise<void> {
    stream.sending = true
    try {
      // Let the writes that arrive in the same turn of the event loop join the first batch.
      await new Promise<void>((resolve) => setImmediate(resolve))
      while (stream.queue.length > 0) {
        const now = Date.now()
        const batch: QueuedOp[] = []
        let bytes = 0
        while (stream.queue.length > 0 && batch.length < REPLICATE_BATCH_OPS_MAX) {
          const next = stream.queue[0]!
          if (batch.length > 0 && bytes + next.bytes > REPLICATE_BATCH_BYTES_MAX) break
          stream.queue.shift()
          stream.bytes -= next.bytes
          if (next.deadlineMs <= now) {
            next.resolve({ peer, stored: false, answered: false, error: `not sent: ${peer} did not take the batches before it in time` })
            continue
          }
          batch.push(next)
          bytes += next.bytes
        }
        if (batch.length > 0) await this.#sendBatch(peer, batch, Math.max(1, Math.min(...batch.map((q) => q.deadlineMs)) - now))
      }
    } finally {
      stream.sending = false
    }
  }

  async #sendBatch(peer: string, batch: QueuedOp[], timeoutMs: number): Promise<void> {
    let results: ReplicaResult[]
    try {
      const answer = await callPeer(this.#agent, `${originOf(peer)}/admin/replicate`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', ...secretHeaders(this.#opts.secret) },
        body: Buffer.concat(batch.flatMap((q) => q.chunks)),
        timeoutMs,
      })
      if (answer.statusCode !== 200) {
        const { error } = answerError(answer)
        const refused = answer.statusCode < 500
        for (const q of batch) q.resolve({ peer, stored: refused ? false : undefined, answered: refused, error: `${answer.statusCode} ${error}` })
        return
      }
      results = answerJson<{ results: ReplicaResult[] }>(answer, peer).results
      if (!Array.isArray(results) || results.length !== batch.length) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${peer} answered ${results?.length} results for ${batch.length} records`)
    } catch (err) {
      for (const q of batch) q.resolve({ peer, stored: undefined, answered: false, error: (err as Error).message })
      return
    }
    batch.forEach((q, i) => {
      const r = results[i]!
      if (r.status >= 200 && r.status < 300) q.resolve({ peer, stored: true, answered: true })
      else q.resolve({ peer, stored: r.status < 500 ? false : undefined, answered: r.status < 500, error: `${r.status} ${r.error ?? ''}` })
    })
  }

  /**
   * A replicated write or delete of a key did not reach every copy: puts the key on the
   * reconcile list (the volume turns unhealthy) and tells the master at once.
   */
  failed(volumeId: number, keyHi: number, keyLo: number, cookie: number): void {
    this.#opts.onReplicationFailure?.()
    let keys = this.#pending.get(volumeId)
    if (!keys) this.#pending.set(volumeId, (keys = new Map()))
    const id = formatFid({ volumeId, keyHi, keyLo, cookie })
    if (!keys.has(id)) {
      if (this.#pendingCount >= this.#opts.reconcileQueueMax) {
        this.#opts.log(`reconcile list is full (${this.#opts.reconcileQueueMax} keys): ${id} is left for a repair`)
      } else {
        keys.set(id, { keyHi, keyLo, cookie })
        this.#pendingCount++
      }
    }
    void this.beat()
    setImmediate(() => void this.#reconcile())
  }

  isHealthy(volumeId: number): boolean {
    return (this.#pending.get(volumeId)?.size ?? 0) === 0
  }

  /** Deletes every pending key on every copy; keys all copies confirmed leave the list. */
  async #reconcile(): Promise<void> {
    if (this.#reconciling || this.#pendingCount === 0) return
    this.#reconciling = true
    try {
      for (const [volumeId, keys] of this.#pending) {
        const volume = this.#store.get(volumeId)
        if (!volume) {
          this.#pendingCount -= keys.size
          this.#pending.delete(volumeId)
          continue
        }
        const peers = this.#peers.get(volumeId) ?? []
        const batch = [...keys].slice(0, RECONCILE_BATCH)
        await Promise.all(
          batch.map(async ([id, k]) => {
            const local = await volume.delete(k.keyHi, k.keyLo, k.cookie).then(
              () => true,
              (err) => isNeedleError(err) && err.statusCode < 500,
            )
            const op: ReplicaOp = { kind: KIND_DELETE, volumeId, ...k }
            const remote = await Promise.all(peers.map((p) => this.replicate(p, op)))
            // A copy that refused the delete (no such volume there) has nothing to remove; one
            // that never answered has not confirmed.
            if (local && remote.every((r) => r.answered)) {
              keys.delete(id)
              this.#pendingCount--
            }
          }),
        )
        if (keys.size === 0) {
          this.#pending.delete(volumeId)
          this.#opts.log(`volume ${volumeId}: failed replicated writes reconciled on every copy`)
          void this.beat()
        }
      }
    } finally {
      this.#reconciling = false
    }
  }

  // ------------------------------------------------------------------------------------------
  // MD5 dedup: the files clients store here, reported to the master in batches. A report lost
  // (the master down, the queue full) only loses a chance to share bytes later.

  stored(volume: { readonly collection: string; readonly placement: number }, fid: string, md5: string, size: number): void {
    if (!this.#opts.master || this.#closed || size < DEDUP_BYTES_MIN) return
    if (this.#dedupQueue.length >= DEDUP_QUEUE_MAX) {
      if (this.#dedupDropped++ === 0) this.#opts.log(`dedup reports to the master are ${DEDUP_QUEUE_MAX} behind; dropping some`)
      return
    }
    const replication = formatPlacement(placementFromByte(volume.placement))
    this.#dedupQueue.push({ collection: volume.collection, replication, md5, fid, size })
    if (this.#dedupQueue.length >= DEDUP_BATCH) void this.#sendDedup()
    else if (!this.#dedupTimer) {
      this.#dedupTimer = setTimeout(() => {
        this.#dedupTimer = undefined
        void this.#sendDedup()
      }, DEDUP_DELAY_MS)
      this.#dedupTimer.unref()
    }
  }

  /** Sends the queued reports; resolves once the queue is empty (or the master failed). */
  #sendDedup(): Promise<void> {
    this.#dedupSending ??= (async () => {
      while (this.#dedupQueue.length > 0) {
        const entries = this.#dedupQueue.splice(0, DEDUP_BATCH)
        try {
          const answer = await callPeer(this.#agent, `${this.#opts.master}/cluster/dedup`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...secretHeaders(this.#opts.secret) },
            body: JSON.stringify({ entries }),
            timeoutMs: this.#opts.replicateTimeoutMs,
          })
          if (answer.statusCode !== 200) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${answer.statusCode} ${answerError(answer).error}`)
          this.#dedupDropped = 0
        } catch (err) {
          if (this.#dedupDropped++ === 0) this.#opts.log(`dedup report to the master failed: ${(err as Error).message}`)
        }
      }
    })().finally(() => {
      this.#dedupSending = undefined
    })
    return this.#dedupSending
  }

  /** Sends what is queued now (tests and shutdown). */
  flushDedup(): Promise<void> {
    clearTimeout(this.#dedupTimer)
    this.#dedupTimer = undefined
    return this.#sendDedup()
  }

  // ------------------------------------------------------------------------------------------
  // Heartbeats.

  /** Sends a heartbeat now (or right after the one in flight). */
  beat(): Promise<void> {
    if (!this.#opts.master || this.#closed) return Promise.resolve()
    if (this.#beating) {
      this.#beatAgain = true
      return this.#beating
    }
    this.#beating = (async () => {
      do {
        this.#beatAgain = false
        await this.#sendBeat()
      } while (this.#beatAgain && !this.#closed)
    })().finally(() => {
      this.#beating = undefined
    })
    return this.#beating
  }

  async #sendBeat(): Promise<void> {
    const statuses = this.#store.statuses()
    const body = {
      url: this.#self,
      publicUrl: this.#publicUrl,
      dataCenter: this.#opts.dataCenter,
      rack: this.#opts.rack,
      volumesMax: this.#store.volumesMax,
      volumes: statuses.map((s) => ({
        id: s.id,
        replication: formatPlacement(placementFromByte(s.placement)),
        collection: s.collection,
        size: s.datBytes,
        fileCount: s.liveCount,
        deleteCount: s.deletedCount,
        garbageBytes: s.garbageBytes,
        readOnly: s.readOnly,
        healthy: this.isHealthy(s.id),
      })),
    }
    try {
      const answer = await callPeer(this.#agent, `${this.#opts.master}/cluster/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...secretHeaders(this.#opts.secret) },
        body: JSON.stringify(body),
        timeoutMs: Math.max(1000, Math.min(10_000, 2 * this.#opts.heartbeatIntervalMs)),
      })
      if (answer.statusCode !== 200) throw new NeedleError('NS_ERR_BAD_GATEWAY', `the master answered ${answer.statusCode}: ${answerError(answer).error}`)
      const { peers } = answerJson<{ peers?: Record<string, string[]> }>(answer, 'the master')
      for (const [id, urls] of Object.entries(peers ?? {})) {
        if (Array.isArray(urls)) this.#updatePeers(Number(id), urls.filter((u) => typeof u === 'string' && u !== this.#self))
      }
      this.#lastBeatMs = Date.now()
      if (this.#masterReachable !== true) this.#opts.log(`registered with the master at ${this.#opts.master} as ${this.#self}`)
      this.#masterReachable = true
    } catch (err) {
      if (this.#masterReachable !== false) this.#opts.log(`heartbeat to the master at ${this.#opts.master} failed: ${(err as Error).message}`)
      this.#masterReachable = false
    }
  }

  // ------------------------------------------------------------------------------------------
  // Lookups, for redirecting reads of volumes this server does not hold.

  /**
   * Live copies of a volume held elsewhere, as the master says now. Nothing is cached, so a
   * redirect never names a server the master has marked dead; concurrent lookups of one volume
   * share one call.
   */
  lookup(volumeId: number): Promise<Location[]> {
    if (!this.#opts.master) return Promise.resolve([])
    let running = this.#lookups.get(volumeId)
    if (!running) {
      if (this.#lookups.size >= LOOKUPS_IN_FLIGHT_MAX) {
        return Promise.reject(new NeedleError('NS_ERR_OVERLOADED', 'too many lookups at the master in flight'))
      }
      running = this.#askMaster(volumeId).finally(() => this.#lookups.delete(volumeId))
      this.#lookups.set(volumeId, running)
    }
    return running
  }

  async #askMaster(volumeId: number): Promise<Location[]> {
    const answer = await callPeer(this.#agent, `${this.#opts.master}/dir/lookup?volumeId=${volumeId}`, { timeoutMs: this.#opts.replicateTimeoutMs })
    if (answer.statusCode !== 200) return []
    return (answerJson<{ locations?: Location[] }>(answer, 'the master').locations ?? []).filter((l) => l.url !== this.#self)
  }

  /** The other copies of a volume as the master last said (empty when none are known). */
  peersOf(volumeId: number): readonly string[] {
    return this.#peers.get(volumeId) ?? []
  }

  /** The connection pool for calls to other servers, for the callers that share it (repairs). */
  get agent(): Agent {
    return this.#agent
  }

  async close(): Promise<void> {
    await this.flushDedup().catch(() => {})
    this.#closed = true
    clearTimeout(this.#timer)
    await this.#beating
    await this.#agent.close()
  }
}
