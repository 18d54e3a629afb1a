/**
 * What the master knows of the cluster: data servers (by data center and rack), the volumes each
 * reports, who is alive. It is soft state, rebuilt from heartbeats after a restart.
 *
 * Invariants:
 * - A volume's locations are the servers that last reported it, alive or not. A server that
 *   misses heartbeats for deadAfterMs is marked dead: its copies are not served by lookups and
 *   its volumes take no writes, but they stay listed, so that a write never skips a copy.
 * - A volume is writable only when it has every copy its placement asks for, on live servers,
 *   none of them read-only, full or reporting a failed replicated write not yet reconciled.
 */
import { NeedleError } from '../common/errors.js'
import { copyCount, parsePlacement, type Placement } from '../common/placement.js'

/** One volume as a data server reports it in a heartbeat. */
export interface VolumeReport {
  readonly id: number
  readonly replication: string
  readonly collection: string
  readonly size: number
  readonly fileCount: number
  readonly deleteCount: number
  readonly garbageBytes: number
  readonly readOnly: boolean
  /** False while a replicated write or delete that failed is not reconciled on every copy. */
  readonly healthy: boolean
}

export interface Heartbeat {
  /** `host:port` the master and peers use. */
  readonly url: string
  /** `host:port` clients use. */
  readonly publicUrl: string
  readonly dataCenter: string
  readonly rack: string
  readonly volumesMax: number
  readonly volumes: readonly VolumeReport[]
}

export interface DataNode {
  readonly url: string
  publicUrl: string
  dataCenter: string
  rack: string
  volumesMax: number
  lastSeenMs: number
  alive: boolean
  /** Set only through Topology, which keeps its volume → holders map in step. */
  volumes: ReadonlyMap<number, VolumeReport>
}

export interface VolumeInfo {
  readonly id: number
  readonly replication: string
  readonly collection: string
  readonly copies: number
  /** Every server that reported the volume, alive or not. */
  readonly nodes: DataNode[]
}

export interface Location {
  readonly url: string
  readonly publicUrl: string
}

export interface TopologyOptions {
  readonly deadAfterMs: number
  readonly volumeBytesMax: number
  readonly now: () => number
}

/** The key of a volume layout: volumes with one replication and collection. */
function layoutKey(replication: string, collection: string): string {
  return `${replication}/${collection}`
}

export class Topology {
  readonly #opts: TopologyOptions
  readonly #nodes = new Map<string, DataNode>()
  /** The servers that report each volume, kept in step with every node's volumes, so that a
   *  lookup or a redirect costs a map read, not a walk over every server. */
  readonly #holders = new Map<number, Set<DataNode>>()
  /** Writable volume ids by layout, rebuilt lazily after any change. */
  #writable: Map<string, number[]> | undefined

  constructor(opts: TopologyOptions) {
    this.#opts = opts
  }

  /** Takes a heartbeat; answers, for each volume the server holds, the other servers holding it. */
  heartbeat(hb: Heartbeat): Record<string, string[]> {
    let node = this.#nodes.get(hb.url)
    if (!node) {
      node = { url: hb.url, publicUrl: hb.publicUrl, dataCenter: hb.dataCenter, rack: hb.rack, volumesMax: hb.volumesMax, lastSeenMs: 0, alive: true, volumes: new Map() }
      this.#nodes.set(hb.url, node)
    }
    node.publicUrl = hb.publicUrl
    node.dataCenter = hb.dataCenter
    node.rack = hb.rack
    node.volumesMax = hb.volumesMax
    node.lastSeenMs = this.#opts.now()
    node.alive = true
    this.#setVolumes(node, new Map(hb.volumes.map((v) => [v.id, v])))
    return this.peersOf(node)
  }

  /** Replaces what node holds, and the holders of every volume it gained or lost. */
  #setVolumes(node: DataNode, volumes: Map<number, VolumeReport>): void {
    for (const id of node.volumes.keys()) {
      if (volumes.has(id)) continue
      const holders = this.#holders.get(id)
      holders?.delete(node)
      if (holders?.size === 0) this.#holders.delete(id)
    }
    for (const id of volumes.keys()) {
      let holders = this.#holders.get(id)
      if (!holders) this.#holders.set(id, (holders = new Set()))
      holders.add(node)
    }
    node.volumes = volumes
    this.#writable = undefined
  }

  /** For each volume of node, the other servers that hold it. */
  peersOf(node: DataNode): Record<string, string[]> {
    const peers: Record<string, string[]> = {}
    for (const id of node.volumes.keys()) {
      peers[id] = this.volume(id)!.nodes.filter((n) => n !== node).map((n) => n.url)
    }
    return peers
  }

  /** Marks servers silent for deadAfterMs dead; returns those newly marked. */
  sweep(): DataNode[] {
    const now = this.#opts.now()
    const died: DataNode[] = []
    for (const node of this.#nodes.values()) {
      if (node.alive && now - node.lastSeenMs > this.#opts.deadAfterMs) {
        node.alive = false
        died.push(node)
      }
    }
    if (died.length > 0) this.#writable = undefined
    return died
  }

  /** Records a volume the master just created on nodes, before their next heartbeat. */
  addVolume(id: number, replication: string, collection: string, nodes: readonly DataNode[]): void {
    const report: VolumeReport = { id, replication, collection, size: 0, fileCount: 0, deleteCount: 0, garbageBytes: 0, readOnly: false, healthy: true }
    for (const node of nodes) this.#setVolumes(node, new Map(node.volumes).set(id, report))
  }

  /**
   * Records a copy of a volume made on node from a copy elsewhere (re-replication), before
   * node's next heartbeat; the report is the source's.
   */
  addCopy(node: DataNode, report: VolumeReport): void {
    this.#setVolumes(node, new Map(node.volumes).set(report.id, report))
  }

  /** Forgets node's copy of a volume (a dead server's copy that another has replaced). */
  dropCopy(id: number, node: DataNode): void {
    if (!node.volumes.has(id)) return
    const volumes = new Map(node.volumes)
    volumes.delete(id)
    this.#setVolumes(node, volumes)
  }

  /** Time since node's last heartbeat, on the topology's clock. */
  heartbeatAgeMs(node: DataNode): number {
    return this.#opts.now() - node.lastSeenMs
  }

  nodes(): DataNode[] {
    return [...this.#nodes.values()]
  }

  node(url: string): DataNode | undefined {
    return this.#nodes.get(url)
  }

  volume(id: number): VolumeInfo | undefined {
    const holders = this.#holders.get(id)
    if (!holders) return undefined
    const nodes = [...holders]
    const first = nodes[0]!.volumes.get(id)!
    return { id, replication: first.replication, collection: first.collection, copies: copyCount(parsePlacement(first.replication)), nodes }
  }

  volumeIds(): number[] {
    return [...this.#holders.keys()].sort((a, b) => a - b)
  }

  /** Live servers holding the volume, for reads. */
  locations(id: number): Location[] {
    const out: Location[] = []
    for (const node of this.#holders.get(id) ?? []) {
      if (node.alive) out.push({ url: node.url, publicUrl: node.publicUrl })
    }
    return out
  }

  /** Why the volume takes no writes, or undefined when it does. */
  unwritableReason(info: VolumeInfo): string | undefined {
    if (info.nodes.length < info.copies) return `it has ${info.nodes.length} of ${info.copies} copies`
    for (const node of info.nodes) {
      const v = node.volumes.get(info.id)!
      if (!node.alive) return `its copy on ${node.url} is on a dead server`
      if (v.readOnly) return `its copy on ${node.url} is read-only`
      if (v.size >= this.#opts.volumeBytesMax) return `it is full`
      if (!v.healthy) return `a replicated write to it failed and is not reconciled yet`
    }
    return undefined
  }

  /** Writable volume ids of a layout. */
  writable(replication: string, collection: string): readonly number[] {
    if (!this.#writable) {
      const map = new Map<string, number[]>()
      for (const id of this.volumeIds()) {
        const info = this.volume(id)!
        if (this.unwritableReason(info) !== undefined) continue
        const key = layoutKey(info.replication, info.collection)
        let list = map.get(key)
        if (!list) map.set(key, (list = []))
        list.push(id)
      }
      this.#writable = map
    }
    return this.#writable.get(layoutKey(replication, collection)) ?? []
  }

  /**
   * Servers for a new volume with placement p: the first, z more in its rack, one in each of y
   * other racks of its data center, one in each of x other data centers. Only live servers with
   * a free volume slot count; the emptiest win, ties broken at random so that load spreads.
   */
  pickServers(replication: string): DataNode[] {
    const p = parsePlacement(replication)
    const free = (n: DataNode) => n.volumesMax - n.volumes.size
    const candidates = shuffle(this.nodes().filter((n) => n.alive && free(n) > 0)).sort((a, b) => free(b) - free(a))
    const byDc = new Map<string, Map<string, DataNode[]>>()
    for (const n of candidates) {
      let racks = byDc.get(n.dataCenter)
      if (!racks) byDc.set(n.dataCenter, (racks = new Map()))
      let rack = racks.get(n.rack)
      if (!rack) racks.set(n.rack, (rack = []))
      rack.push(n)
    }
    for (const [dc, racks] of byDc) {
      for (const [rack, nodes] of racks) {
        if (nodes.length < p.sameRack + 1) continue
        const picked = nodes.slice(0, p.sameRack + 1)
        const otherRacks = [...racks].filter(([r]) => r !== rack).map(([, ns]) => ns[0]!)
        if (otherRacks.length < p.otherRacks) continue
        const otherDcs = [...byDc].filter(([d]) => d !== dc).map(([, rs]) => best([...rs.values()].map((ns) => ns[0]!)))
        if (otherDcs.length < p.otherDataCenters) continue
        return [...picked, ...otherRacks.slice(0, p.otherRacks), ...otherDcs.slice(0, p.otherDataCenters)]
      }
    }
    throw new NeedleError('NS_ERR_NO_WRITABLE_VOLUME', `no free servers for replication ${replication}: ${describeNeed(p)}; ${this.#describeCluster()}`)
  }

  #describeCluster(): string {
    const alive = this.nodes().filter((n) => n.alive)
    const withRoom = alive.filter((n) => n.volumesMax > n.volumes.size)
    return `${alive.length} live data servers, ${withRoom.length} with a free volume slot`
  }
}

function describeNeed(p: Placement): string {
  const parts = [`${p.sameRack + 1} servers in one rack`]
  if (p.otherRacks > 0) parts.push(`${p.otherRacks} more racks in its data center`)
  if (p.otherDataCenters > 0) parts.push(`${p.otherDataCenters} more data centers`)
  return `it needs ${parts.join(', ')}`
}

function best(nodes: DataNode[]): DataNode {
  return nodes.reduce((a, b) => (b.volumesMax - b.volumes.size > a.volumesMax - a.volumes.size ? b : a))
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}
