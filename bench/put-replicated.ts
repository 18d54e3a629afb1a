/**
 * PUT of 10 KiB files through the 3-replica local cluster (the data server the master names
 * stores each file and forwards it to the two other copies before answering) against PUT to one
 * data server that keeps one copy, all processes on this machine. Rounds alternate between the
 * two and the medians are compared. Goal: ≥ 0.5.
 *
 *   node dist/bench/put-replicated.js [--bytes 10240] [--connections 64] [--seconds 5] [--rounds 3]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { fmt, load, median, parseArgs, report, startDataServerProcess, growFirstVolume, startLocalCluster, type LoadResult } from './lib.js'

const args = parseArgs({ bytes: 10 * 1024, connections: 64, seconds: 5, rounds: 3 })
const body = randomBytes(args.bytes)
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-put3-'))
const single = await startDataServerProcess(join(dir, 'single'))
const cluster = await startLocalCluster(join(dir, 'cluster'), 3)
try {
  await request(`${single.url}/admin/assign_volume?volume=1&replication=000`, { method: 'POST' }).then((r) => r.body.dump())
  const primary = await growFirstVolume(cluster, '002')

  let key = 1
  const path = () => `/1,${(key++).toString(16)}1234abcd`
  const run = (url: string, seconds: number) => load({ url, connections: args.connections, durationSec: seconds, method: 'PUT', body, path })
  await run(single.url, 1)
  await run(primary, 1)
  const one: LoadResult[] = []
  const three: LoadResult[] = []
  for (let r = 0; r < args.rounds; r++) {
    one.push(await run(single.url, args.seconds))
    three.push(await run(primary, args.seconds))
  }
  const oneRps = median(one.map((r) => r.requestsPerSec))
  const threeRps = median(three.map((r) => r.requestsPerSec))
  const errors = (rs: LoadResult[]) => rs.reduce((n, r) => n + r.errors + r.non2xx, 0)
  report('PUT 10 KiB: 3 copies through the cluster vs 1 copy on one data server', [
    `one data server, 1 copy:  ${fmt(oneRps)} req/s (median of ${args.rounds}), p99 ${one.at(-1)!.p99Ms} ms, errors ${errors(one)}`,
    `cluster, 3 copies:        ${fmt(threeRps)} req/s (median of ${args.rounds}), p99 ${three.at(-1)!.p99Ms} ms, errors ${errors(three)}`,
    `ratio: ${fmt(threeRps / oneRps, 2)} (goal ≥ 0.5)`,
  ], { single: oneRps, replicated: threeRps, ratio: threeRps / oneRps })
} finally {
  await cluster.stop()
  await single.stop()
  await rm(dir, { recursive: true, force: true })
}
