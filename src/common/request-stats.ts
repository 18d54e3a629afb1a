/**
 * Request counts, latency histograms and byte counters by operation and status, cheap enough
 * for the hottest path: observe() adds to plain numbers (no label hashing, no allocation for a
 * status seen before), and the Prometheus text is built only when /metrics is scraped. The
 * objects it registers speak prom-client's metric interface, so they share a Registry with
 * prom-client's own metrics.
 */
import type { Registry } from 'prom-client'

export const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const

interface Series {
  readonly op: string
  readonly status: string
  count: number
  sumS: number
  /** Observations per bucket (not cumulative), plus one past the last bound. */
  readonly buckets: Float64Array
}

interface MetricValue {
  value: number
  labels: Record<string, string | number>
  metricName?: string
}

export class RequestStats {
  readonly #series = new Map<number, Series>()
  readonly #ops: readonly string[]
  #bytesIn = 0
  #bytesOut = 0

  /** ops: the operation names; observe() takes an index into this list. */
  constructor(ops: readonly string[]) {
    this.#ops = ops
  }

  observe(op: number, status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    const id = op * 1000 + status
    let series = this.#series.get(id)
    if (!series) {
      series = { op: this.#ops[op] ?? 'unknown', status: String(status), count: 0, sumS: 0, buckets: new Float64Array(LATENCY_BUCKETS_S.length + 1) }
      this.#series.set(id, series)
    }
    series.count++
    series.sumS += seconds
    let b = 0
    while (b < LATENCY_BUCKETS_S.length && seconds > LATENCY_BUCKETS_S[b]!) b++
    series.buckets[b]!++
    this.#bytesIn += bytesIn
    this.#bytesOut += bytesOut
  }

  /** Registers needlestore_http_requests_total, …_duration_seconds and the byte counters. */
  register(registry: Registry, prefix: string): void {
    const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => MetricValue[]) => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
      reset: () => {},
    })
    const series = () => [...this.#series.values()]
    const add = [
      metric(`${prefix}http_requests_total`, 'HTTP requests by operation and status.', 'counter', () =>
        series().map((s) => ({ value: s.count, labels: { op: s.op, status: s.status } })),
      ),
      metric(`${prefix}http_request_duration_seconds`, 'HTTP request latency by operation and status.', 'histogram', () =>
        series().flatMap((s) => {
          const labels = { op: s.op, status: s.status }
          let cumulative = 0
          const out: MetricValue[] = LATENCY_BUCKETS_S.map((le, i) => {
            cumulative += s.buckets[i]!
            return { value: cumulative, labels: { ...labels, le }, metricName: `${prefix}http_request_duration_seconds_bucket` }
          })
          out.push({ value: s.count, labels: { ...labels, le: '+Inf' }, metricName: `${prefix}http_request_duration_seconds_bucket` })
          out.push({ value: s.sumS, labels, metricName: `${prefix}http_request_duration_seconds_sum` })
          out.push({ value: s.count, labels, metricName: `${prefix}http_request_duration_seconds_count` })
          return out
        }),
      ),
      metric(`${prefix}bytes_in_total`, 'File bytes received.', 'counter', () => [{ value: this.#bytesIn, labels: {} }]),
      metric(`${prefix}bytes_out_total`, 'File bytes sent.', 'counter', () => [{ value: this.#bytesOut, labels: {} }]),
    ]
    for (const m of add) registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0])
  }
}
