/**
 * The data server's Prometheus metrics, kept in a registry of its own so that several servers
 * can live in one process (tests) without clashing.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Store } from './store.js'

export interface DataServerMetrics {
  readonly registry: Registry
  /** Records one finished request. */
  observe(op: string, status: number, seconds: number, bytesIn: number, bytesOut: number): void
  readonly corruptReads: Counter
}

export function createMetrics(store: Store): DataServerMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'needlestore_' })
  const requests = new Counter({
    name: 'needlestore_http_requests_total',
    help: 'HTTP requests by operation and status.',
    labelNames: ['op', 'status'],
    registers: [registry],
  })
  const latency = new Histogram({
    name: 'needlestore_http_request_duration_seconds',
    help: 'HTTP request latency by operation and status.',
    labelNames: ['op', 'status'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  })
  const bytesIn = new Counter({ name: 'needlestore_bytes_in_total', help: 'File bytes received.', registers: [registry] })
  const bytesOut = new Counter({ name: 'needlestore_bytes_out_total', help: 'File bytes sent.', registers: [registry] })
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
  return {
    registry,
    corruptReads,
    observe(op, status, seconds, inBytes, outBytes) {
      const labels = { op, status: String(status) }
      requests.inc(labels)
      latency.observe(labels, seconds)
      if (inBytes > 0) bytesIn.inc(inBytes)
      if (outBytes > 0) bytesOut.inc(outBytes)
    },
  }
}
