/**
 * The data server's Prometheus metrics, kept in a registry of its own so that several servers
 * can live in one process (tests) without clashing.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import { RequestStats } from '../common/request-stats.js'
import type { ClusterLink } from './cluster.js'
import type { ReadCache } from './read-cache.js'
import type { Store } from './store.js'

/** Operations by index, for RequestStats.observe(). */
export const OPS = ['read', 'head', 'write', 'delete', 'status', 'metrics', 'admin', 'other'] as const
export type Op = (typeof OPS)[number]
export const OP_INDEX = Object.freeze(Object.fromEntries(OPS.map((op, i) => [op, i]))) as Readonly<Record<Op, number>>

export interface DataServerMetrics {
  readonly registry: Registry
  readonly requests: RequestStats
  readonly corruptReads: Counter
  readonly replicationFailures: Counter
}

export function createMetrics(store: Store, readCache: ReadCache | undefined, cluster: ClusterLink): DataServerMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'needlestore_' })
  const requests = new RequestStats(OPS)
  requests.register(registry, 'needlestore_')
  const corruptReads = new Counter({
    name: 'needlestore_corrupt_reads_total',
    help: 'Reads that found a needle failing its checksum (never served).',
    registers: [registry],
  })
  new Gauge({
    name: 'needlestore_volumes',
    help: 'Volumes on this server, by state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const volumes = store.list()
      const readOnly = volumes.filter((v) => v.readOnly).length
      this.set({ state: 'writable' }, volumes.length - readOnly)
      this.set({ state: 'read_only' }, readOnly)
      this.set({ state: 'broken' }, store.broken().length)
    },
  })
  new Gauge({
    name: 'needlestore_needles',
    help: 'Needles in the in-memory indexes, by state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      let live = 0
      let deleted = 0
      for (const s of store.statuses()) {
        live += s.liveCount
        deleted += s.deletedCount
      }
      this.set({ state: 'live' }, live)
      this.set({ state: 'deleted' }, deleted)
    },
  })
  new Gauge({
    name: 'needlestore_volume_bytes',
    help: 'Size of each volume file.',
    labelNames: ['volume'],
    registers: [registry],
    collect() {
      this.reset()
      for (const s of store.statuses()) this.set({ volume: String(s.id) }, s.datBytes)
    },
  })
  new Gauge({
    name: 'needlestore_volume_garbage_ratio',
    help: 'Share of each volume taken by deleted or replaced needles.',
    labelNames: ['volume'],
    registers: [registry],
    collect() {
      this.reset()
      for (const s of store.statuses()) this.set({ volume: String(s.id) }, s.garbageRatio)
    },
  })
  new Gauge({
    name: 'needlestore_read_cache',
    help: 'The read cache: bytes and needles kept, hits and misses since start.',
    labelNames: ['what'],
    registers: [registry],
    collect() {
      this.set({ what: 'bytes' }, readCache?.bytes ?? 0)
      this.set({ what: 'needles' }, readCache?.size ?? 0)
      this.set({ what: 'hits' }, readCache?.hits ?? 0)
      this.set({ what: 'misses' }, readCache?.misses ?? 0)
    },
  })
  const replicationFailures = new Counter({
    name: 'needlestore_replication_failures_total',
    help: 'Replicated writes and deletes that did not reach every copy (never acknowledged).',
    registers: [registry],
  })
  new Gauge({
    name: 'needlestore_reconcile_pending_keys',
    help: 'Keys of failed replicated writes still being removed from every copy.',
    registers: [registry],
    collect() {
      this.set(cluster.pendingCount)
    },
  })
  new Gauge({
    name: 'needlestore_heartbeat_age_seconds',
    help: 'Time since the master last answered a heartbeat (-1: never, or no master).',
    registers: [registry],
    collect() {
      const age = cluster.heartbeatAgeMs
      this.set(Number.isFinite(age) ? age / 1000 : -1)
    },
  })
  return { registry, requests, corruptReads, replicationFailures }
}
