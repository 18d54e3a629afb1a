/** The master's Prometheus metrics, in a registry of its own. */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import { RequestStats } from '../common/request-stats.js'
import type { Topology } from './topology.js'

export const MASTER_OPS = ['assign', 'lookup', 'redirect', 'submit', 'delete', 'heartbeat', 'grow', 'status', 'metrics', 'other'] as const
export type MasterOp = (typeof MASTER_OPS)[number]

export interface MasterMetrics {
  readonly registry: Registry
  readonly requests: RequestStats
  readonly keysAssigned: Counter
  readonly volumesGrown: Counter
  readonly growthFailures: Counter
  readonly dedupHits: Counter
  readonly dedupMisses: Counter
}

export function createMasterMetrics(topology: Topology): MasterMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'needlestore_master_' })
  const requests = new RequestStats(MASTER_OPS)
  requests.register(registry, 'needlestore_master_')
  const keysAssigned = new Counter({ name: 'needlestore_master_keys_assigned_total', help: 'File keys handed out by /dir/assign and /submit.', registers: [registry] })
  const volumesGrown = new Counter({ name: 'needlestore_master_volumes_grown_total', help: 'Volumes created by growth.', registers: [registry] })
  const growthFailures = new Counter({ name: 'needlestore_master_growth_failures_total', help: 'Volume creations that failed (and were rolled back).', registers: [registry] })
  const dedupHits = new Counter({ name: 'needlestore_master_dedup_hits_total', help: 'Assigns that named a stored copy of the bytes (MD5 dedup).', registers: [registry] })
  const dedupMisses = new Counter({ name: 'needlestore_master_dedup_misses_total', help: 'Dedup uploads through /submit whose stored copy was gone, so the bytes were stored in full.', registers: [registry] })
  new Gauge({
    name: 'needlestore_master_data_servers',
    help: 'Data servers known to the master, by state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const nodes = topology.nodes()
      const alive = nodes.filter((n) => n.alive).length
      this.set({ state: 'alive' }, alive)
      this.set({ state: 'dead' }, nodes.length - alive)
    },
  })
  new Gauge({
    name: 'needlestore_master_volumes',
    help: 'Volumes known to the master, by state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      let writable = 0
      let unwritable = 0
      for (const id of topology.volumeIds()) {
        if (topology.unwritableReason(topology.volume(id)!) === undefined) writable++
        else unwritable++
      }
      this.set({ state: 'writable' }, writable)
      this.set({ state: 'unwritable' }, unwritable)
    },
  })
  new Gauge({
    name: 'needlestore_master_heartbeat_age_seconds',
    help: 'Time since each data server last sent a heartbeat.',
    labelNames: ['server'],
    registers: [registry],
    collect() {
      this.reset()
      for (const n of topology.nodes()) this.set({ server: n.url }, topology.heartbeatAgeMs(n) / 1000)
    },
  })
  return { registry, requests, keysAssigned, volumesGrown, growthFailures, dedupHits, dedupMisses }
}
