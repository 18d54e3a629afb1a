/**
 * Re-replication: the master restores every volume that has fewer live copies than its
 * placement asks for, by asking a server that satisfies the placement to copy the volume from a
 * healthy live copy (`POST /admin/volume/copy` on the destination, see
 * dataserver/volume-copy.ts). Runs on a timer (a copy on a server dead for repairAfterMs) and
 * on demand (`POST /vol/fix_replication`, any dead copy).
 *
 * Invariants:
 * - One repair per volume at a time; at most repairsMax at once; a failed one is retried with
 *   exponential backoff (the timer), or at once on demand.
 * - A dead server's copy leaves the volume's location list only once a verified copy has taken
 *   its place, so a volume never has fewer listed copies than it had. While a copy is missing
 *   the volume takes no writes (topology.unwritableReason: a dead copy), so the usual tail to
 *   copy is empty.
 * - A replaced copy is "retired": when its server comes back and reports it, the copy is left
 *   out of the volume map (no lookup, no peer list, no writes through the master names it) and
 *   the server is told to delete it. The list is kept in the master's state (level), so a
 *   restarted master still refuses such a copy.
 */
import type { Agent } from 'undici'
import { secretHeaders } from '../common/auth.js'
import { NeedleError } from '../common/errors.js'
import { answerError, answerJson, callPeer, originOf } from '../common/peer.js'
import { copyCount, parsePlacement, type Placement } from '../common/placement.js'
import type { DataNode, Heartbeat, Topology, VolumeReport } from './topology.js'

/** Where the replaced copies are kept across master restarts. */
export interface RetiredStore {
  retiredCopies(): Array<{ volume: number; url: string }>
  retireCopy(volume: number, url: string): Promise<void>
  forgetRetired(volume: number, url: string): Promise<void>
}

export interface RepairOptions {
  /** A copy on a server dead this long is replaced by the timer. */
  readonly repairAfterMs: number
  /** Repairs running at once, at most. */
  readonly repairsMax: number
  /** Deadline of one volume copy. */
  readonly copyTimeoutMs: number
  /** Deadline of the other calls to data servers. */
  readonly peerTimeoutMs: number
  readonly secret: string | undefined
  readonly log: (message: string) => void
  readonly now: () => number
}

/** One planned repair: copy the volume from source to each destination, replacing dead copies. */
export interface RepairStep {
  readonly volume: number
  readonly replication: string
  readonly collection: string
  readonly source: string
  readonly destinations: readonly string[]
  /** Dead servers whose copies the new ones replace (they leave the location list). */
  readonly replaces: readonly string[]
}

export interface RepairPlan {
  readonly steps: RepairStep[]
  /** Under-replicated volumes not repaired now, and why (grace period, no healthy source, running). */
  readonly waiting: Array<{ volume: number; reason: string }>
  /** Under-replicated volumes that cannot be repaired (no live copy, no server fits). */
  readonly blocked: Array<{ volume: number; reason: string }>
}

export interface RepairResult {
  readonly volume: number
  readonly ok: boolean
  readonly source: string
  /** Destinations that now hold a verified copy. */
  readonly copied: string[]
  readonly error?: string
}

const BACKOFF_BASE_MS = 1000
const BACKOFF_MAX_MS = 60_000
/** Placement combinations tried per volume at most, so that a large cluster stays cheap. */
const COMBINATIONS_MAX = 100_000

// ---------------------------------------------------------------------------------------------
// Planning (pure: reads the topology, changes nothing).

export interface PlanInput {
  /** Dead copies younger than this are left alone (0: every dead copy is replaced). */
  readonly repairAfterMs: number
  /** False while the master may not know every copy yet (after its start): volumes with
   *  missing copies but no dead server holding them wait. */
  readonly complete: boolean
  /** Volumes not to plan (a repair is running, or backing off), with why. */
  readonly skip?: ReadonlyMap<number, string>
  /** Servers that must not receive a volume (they were told to drop it). */
  readonly excluded?: (volume: number, node: DataNode) => boolean
}

export function planRepairs(topology: Topology, input: PlanInput): RepairPlan {
  const plan: RepairPlan = { steps: [], waiting: [], blocked: [] }
  /** Volumes each server is planned to receive, so that one plan spreads its copies. */
  const planned = new Map<DataNode, number>()
  const free = (n: DataNode) => n.volumesMax - n.volumes.size - (planned.get(n) ?? 0)
  for (const id of topology.volumeIds()) {
    const info = topology.volume(id)!
    const live = info.nodes.filter((n) => n.alive)
    const dead = info.nodes.filter((n) => !n.alive)
    const need = info.copies - live.length
    if (need <= 0) {
      // Enough live copies already (a copy was made and the dead one is still listed).
      if (dead.length > 0 && !input.skip?.has(id)) {
        plan.steps.push({ volume: id, replication: info.replication, collection: info.collection, source: live[0]!.url, destinations: [], replaces: dead.map((n) => n.url) })
      }
      continue
    }
    const skip = input.skip?.get(id)
    if (skip !== undefined) {
      plan.waiting.push({ volume: id, reason: skip })
      continue
    }
    if (live.length === 0) {
      plan.blocked.push({ volume: id, reason: `no live copy: ${dead.map((n) => n.url).join(', ')} are dead` })
      continue
    }
    const young = dead.filter((n) => topology.heartbeatAgeMs(n) < input.repairAfterMs)
    if (young.length > 0) {
      const leftMs = Math.max(...young.map((n) => input.repairAfterMs - topology.heartbeatAgeMs(n)))
      plan.waiting.push({ volume: id, reason: `${young.map((n) => n.url).join(', ')} dead for less than ${input.repairAfterMs} ms (${Math.ceil(leftMs / 1000)} s more)` })
      continue
    }
    if (dead.length < need && !input.complete) {
      plan.waiting.push({ volume: id, reason: `${info.nodes.length} of ${info.copies} copies reported; the master is still hearing from data servers` })
      continue
    }
    const sources = live.filter((n) => n.volumes.get(id)?.healthy !== false)
    if (sources.length === 0) {
      plan.waiting.push({ volume: id, reason: 'every live copy is reconciling a failed write' })
      continue
    }
    const source = sources.reduce((a, b) => ((b.volumes.get(id)?.size ?? 0) > (a.volumes.get(id)?.size ?? 0) ? b : a))
    const candidates = shuffle(topology.nodes().filter((n) => n.alive && !n.volumes.has(id) && free(n) > 0 && !(input.excluded?.(id, n) ?? false))).sort((a, b) => free(b) - free(a))
    const chosen = chooseDestinations(parsePlacement(info.replication), live, candidates, need)
    if (!chosen) {
      plan.blocked.push({ volume: id, reason: `no ${need === 1 ? 'live server with a free slot fits' : `${need} live servers with free slots fit`} placement ${info.replication} beside ${live.map((n) => n.url).join(', ')}` })
      continue
    }
    for (const n of chosen) planned.set(n, (planned.get(n) ?? 0) + 1)
    plan.steps.push({ volume: id, replication: info.replication, collection: info.collection, source: source.url, destinations: chosen.map((n) => n.url), replaces: dead.map((n) => n.url) })
  }
  return plan
}

/**
 * `need` servers from candidates (best first) that, with the live copies, satisfy placement p;
 * the first such combination in candidate order, or undefined.
 */
export function chooseDestinations(p: Placement, live: readonly DataNode[], candidates: readonly DataNode[], need: number): DataNode[] | undefined {
  let tried = 0
  const picked: DataNode[] = []
  const search = (from: number): boolean => {
    if (picked.length === need) return tried++ < COMBINATIONS_MAX && satisfiesPlacement(p, [...live, ...picked])
    for (let i = from; i < candidates.length && tried < COMBINATIONS_MAX; i++) {
      picked.push(candidates[i]!)
      if (search(i + 1)) return true
      picked.pop()
    }
    return false
  }
  return search(0) ? picked : undefined
}

/**
 * True when the servers hold a volume as placement `xyz` asks: one of them (the first) with z
 * more in its rack, y more each in another rack of its data center, x more each in another
 * data center.
 */
export function satisfiesPlacement(p: Placement, nodes: readonly Pick<DataNode, 'dataCenter' | 'rack' | 'url'>[]): boolean {
  if (nodes.length !== copyCount(p) || new Set(nodes.map((n) => n.url)).size !== nodes.length) return false
  return nodes.some((first) => {
    const sameRack = nodes.filter((n) => n.dataCenter === first.dataCenter && n.rack === first.rack)
    const otherRacks = nodes.filter((n) => n.dataCenter === first.dataCenter && n.rack !== first.rack)
    const otherDcs = nodes.filter((n) => n.dataCenter !== first.dataCenter)
    return (
      sameRack.length === p.sameRack + 1 &&
      otherRacks.length === p.otherRacks &&
      new Set(otherRacks.map((n) => n.rack)).size === p.otherRacks &&
      otherDcs.length === p.otherDataCenters &&
      new Set(otherDcs.map((n) => n.dataCenter)).size === p.otherDataCenters
    )
  })
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}

// ---------------------------------------------------------------------------------------------
// Running repairs.

export class Repairer {
  readonly #topology: Topology
  readonly #agent: Agent
  readonly #opts: RepairOptions
  readonly #complete: () => boolean
  readonly #running = new Map<number, Promise<RepairResult>>()
  readonly #backoff = new Map<number, { failures: number; untilMs: number; error: string }>()
  /** Copies replaced by others: volume → servers that must drop it. */
  readonly #retired = new Map<number, Set<string>>()
  /** Volumes with fewer reported copies than they need and no dead server among them, since when:
   *  a growth being undone looks the same for a moment, so the timer waits repairAfterMs. */
  readonly #shortSince = new Map<number, number>()
  /** Deletes of retired copies in flight, by `volume@url`. */
  readonly #dropping = new Set<string>()
  #timer: NodeJS.Timeout | undefined
  #closed = false

  readonly #store: RetiredStore | undefined

  constructor(topology: Topology, agent: Agent, opts: RepairOptions, complete: () => boolean, store?: RetiredStore) {
    this.#topology = topology
    this.#agent = agent
    this.#opts = opts
    this.#complete = complete
    this.#store = store
    for (const { volume, url } of store?.retiredCopies() ?? []) this.#addRetired(volume, url)
  }

  #addRetired(id: number, url: string): void {
    let urls = this.#retired.get(id)
    if (!urls) this.#retired.set(id, (urls = new Set()))
    urls.add(url)
  }

  /** Starts the timer that repairs volumes with a copy dead for repairAfterMs. */
  start(): void {
    const everyMs = Math.max(50, Math.min(5000, Math.floor(this.#opts.repairAfterMs / 4)))
    this.#timer = setInterval(() => this.#tick(), everyMs)
    this.#timer.unref()
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#timer)
  }

  get running(): number {
    return this.#running.size
  }

  /** The plan now: `manual` (the operator asked) ignores the grace period and backoff. */
  plan(manual: boolean): RepairPlan {
    const skip = new Map<number, string>()
    for (const id of this.#running.keys()) skip.set(id, 'a repair is running')
    if (!manual) {
      const now = this.#opts.now()
      for (const [id, b] of this.#backoff) {
        if (b.untilMs > now) skip.set(id, `retrying in ${Math.ceil((b.untilMs - now) / 1000)} s after: ${b.error}`)
      }
      const short = new Set<number>()
      for (const id of this.#topology.volumeIds()) {
        const info = this.#topology.volume(id)!
        if (info.nodes.length >= info.copies || info.nodes.some((n) => !n.alive)) continue
        short.add(id)
        const since = this.#shortSince.get(id) ?? now
        this.#shortSince.set(id, since)
        if (now - since < this.#opts.repairAfterMs && !skip.has(id)) skip.set(id, `${info.nodes.length} of ${info.copies} copies reported for less than ${this.#opts.repairAfterMs} ms`)
      }
      for (const id of this.#shortSince.keys()) if (!short.has(id)) this.#shortSince.delete(id)
    }
    return planRepairs(this.#topology, {
      repairAfterMs: manual ? 0 : this.#opts.repairAfterMs,
      complete: this.#complete(),
      skip,
      excluded: (id, node) => this.#retired.get(id)?.has(node.url) ?? false,
    })
  }

  #tick(): void {
    if (this.#closed || !this.#complete()) return
    const plan = this.plan(false)
    for (const step of plan.steps) {
      if (this.#running.size >= this.#opts.repairsMax) break
      void this.#start(step)
    }
  }

  /**
   * Runs the plan now (at most repairsMax at once, besides any running) and waits for every
   * step, and for the repairs already running.
   */
  async runNow(): Promise<{ plan: RepairPlan; results: RepairResult[] }> {
    const plan = this.plan(true)
    const waits = [...this.#running.values()]
    const queue = [...plan.steps]
    const results: RepairResult[] = []
    const worker = async () => {
      for (let step = queue.shift(); step; step = queue.shift()) results.push(await this.#start(step))
    }
    await Promise.all(Array.from({ length: Math.max(1, this.#opts.repairsMax) }, worker))
    results.push(...(await Promise.all(waits)))
    return { plan, results: results.sort((a, b) => a.volume - b.volume) }
  }

  #start(step: RepairStep): Promise<RepairResult> {
    const running = this.#running.get(step.volume)
    if (running) return running
    const p = this.#repair(step)
      .then(
        (copied): RepairResult => {
          this.#backoff.delete(step.volume)
          return { volume: step.volume, ok: true, source: step.source, copied }
        },
        (err: unknown): RepairResult => {
          const error = (err as Error).message
          const failures = (this.#backoff.get(step.volume)?.failures ?? 0) + 1
          const delayMs = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (failures - 1)) * (0.5 + Math.random() / 2)
          this.#backoff.set(step.volume, { failures, untilMs: this.#opts.now() + delayMs, error })
          this.#opts.log(`volume ${step.volume}: repair failed (attempt ${failures}, next in ${Math.round(delayMs)} ms): ${error}`)
          return { volume: step.volume, ok: false, source: step.source, copied: [], error }
        },
      )
      .finally(() => this.#running.delete(step.volume))
    this.#running.set(step.volume, p)
    return p
  }

  /** Copies, then tells the other copies, then updates the volume map; answers where it copied. */
  async #repair(step: RepairStep): Promise<string[]> {
    const t = this.#topology
    const id = step.volume
    const copied: string[] = []
    const replaces = [...step.replaces]
    for (const dest of step.destinations) {
      const info = t.volume(id)
      const source = t.node(step.source)
      const report = source?.volumes.get(id)
      if (!info || !source?.alive || !report) throw new NeedleError('NS_ERR_VOLUME_UNAVAILABLE', `the source ${step.source} no longer holds volume ${id}`)
      const destNode = t.node(dest)
      if (!destNode?.alive) throw new NeedleError('NS_ERR_PEER_UNREACHABLE', `the destination ${dest} is dead`)
      const locations = [...info.nodes.filter((n) => n.alive).map((n) => n.url), dest]
      const query = new URLSearchParams({ volume: String(id), from: step.source, replication: step.replication, collection: step.collection, locations: locations.join(',') })
      this.#opts.log(`volume ${id}: copying from ${step.source} to ${dest}${replaces.length > 0 ? ` to replace ${replaces[0]}` : ''}`)
      const startedMs = this.#opts.now()
      const answer = await callPeer(this.#agent, `${originOf(dest)}/admin/volume/copy?${query}`, { method: 'POST', headers: secretHeaders(this.#opts.secret), timeoutMs: this.#opts.copyTimeoutMs })
      if (answer.statusCode !== 201) throw new NeedleError('NS_ERR_BAD_GATEWAY', `${dest} answered ${answer.statusCode} to the copy of volume ${id}: ${answerError(answer).error}`)
      const done = answerJson<{ datBytes?: number; liveCount?: number }>(answer, dest)
      // A replaced server heard from during the copy made the volume whole again: it may have
      // taken writes the copy does not have. The copy is dropped; the next plan decides again.
      const back = replaces.find((url) => (t.node(url)?.lastSeenMs ?? 0) >= startedMs)
      if (back !== undefined) {
        await callPeer(this.#agent, `${originOf(dest)}/admin/volume/delete?volume=${id}`, { method: 'POST', headers: secretHeaders(this.#opts.secret), timeoutMs: this.#opts.peerTimeoutMs }).catch(() => undefined)
        throw new NeedleError('NS_ERR_VOLUME_UNAVAILABLE', `${back} came back while volume ${id} was copied to ${dest}; the copy was dropped`)
      }
      // The other copies learn the new list now, not at their next heartbeat, so that a write
      // the master assigns once the volume is whole reaches the new copy.
      await Promise.all(
        locations
          .filter((u) => u !== dest)
          .map((u) =>
            callPeer(this.#agent, `${originOf(u)}/admin/volume/peers?volume=${id}&locations=${encodeURIComponent(locations.join(','))}`, {
              method: 'POST',
              headers: secretHeaders(this.#opts.secret),
              timeoutMs: this.#opts.peerTimeoutMs,
            }).catch(() => undefined),
          ),
      )
      t.addCopy(destNode, { ...report, size: done.datBytes ?? report.size, fileCount: done.liveCount ?? report.fileCount } satisfies VolumeReport)
      const replaced = replaces.shift()
      if (replaced !== undefined) await this.#retire(id, replaced)
      copied.push(dest)
      this.#opts.log(`volume ${id}: verified copy on ${dest}${replaced ? ` replaces ${replaced}` : ''}`)
    }
    // Dead copies beyond the ones replaced above, once the volume has every copy alive.
    const info = t.volume(id)
    if (info && info.nodes.filter((n) => n.alive).length >= info.copies) for (const url of replaces) await this.#retire(id, url)
    return copied
  }

  /** Takes url's copy out of the volume map, for good (recorded durably when a store is given). */
  async #retire(id: number, url: string): Promise<void> {
    const node = this.#topology.node(url)
    if (node) this.#topology.dropCopy(id, node)
    this.#addRetired(id, url)
    await this.#store?.retireCopy(id, url).catch((err: unknown) => this.#opts.log(`volume ${id}: the replaced copy on ${url} is not recorded durably: ${(err as Error).message}`))
  }

  /**
   * A heartbeat without the copies this master retired (they stay out of the volume map); each
   * such copy the server still reports is deleted there. A retired copy the server no longer
   * reports is forgotten.
   */
  filterHeartbeat(hb: Heartbeat): Heartbeat {
    let dropped: number[] | undefined
    for (const [id, urls] of this.#retired) {
      if (!urls.has(hb.url)) continue
      if (hb.volumes.some((v) => v.id === id)) (dropped ??= []).push(id)
      else {
        urls.delete(hb.url)
        if (urls.size === 0) this.#retired.delete(id)
        void this.#store?.forgetRetired(id, hb.url)
      }
    }
    if (!dropped) return hb
    for (const id of dropped) this.#drop(id, hb.url)
    const out = new Set(dropped)
    return { ...hb, volumes: hb.volumes.filter((v) => !out.has(v.id)) }
  }

  #drop(id: number, url: string): void {
    const key = `${id}@${url}`
    if (this.#dropping.has(key) || this.#closed) return
    this.#dropping.add(key)
    this.#opts.log(`volume ${id}: ${url} is back with a copy that was replaced; deleting it there`)
    void callPeer(this.#agent, `${originOf(url)}/admin/volume/delete?volume=${id}`, { method: 'POST', headers: secretHeaders(this.#opts.secret), timeoutMs: this.#opts.peerTimeoutMs })
      .then(
        (a) => {
          if (a.statusCode !== 200) this.#opts.log(`volume ${id}: ${url} did not delete its replaced copy: ${a.statusCode} ${answerError(a).error}`)
        },
        (err: unknown) => this.#opts.log(`volume ${id}: ${url} did not delete its replaced copy: ${(err as Error).message}`),
      )
      .finally(() => this.#dropping.delete(key))
  }
}
