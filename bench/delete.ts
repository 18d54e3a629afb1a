/**
 * DELETE against PUT through the 3-copy local cluster (each is replicated to the two other
 * copies and group-committed): PUT 10 KiB files for a while, then delete exactly those files,
 * one DELETE per file, and then (after storing as many again) with batch deletes of 100 fids
 * (`POST /delete`, what the SDK's deleteMany sends). Goal: deletes ≥ 3× PUT.
 *
 *   node dist/bench/delete.js [--bytes 10240] [--connections 64] [--seconds 6] [--batch 100]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { fmt, load, parseArgs, report, growFirstVolume, startLocalCluster, type LoadResult } from './lib.js'

const args = parseArgs({ bytes: 10 * 1024, connections: 64, seconds: 6, batch: 100 })
const body = randomBytes(args.bytes)
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-delete-'))
const cluster = await startLocalCluster(join(dir, 'cluster'), 3)
const agent = new Agent({ connections: 16 })
try {
  const primary = await growFirstVolume(cluster, '002')

  let key = 1
  const fidOf = (k: number) => `1,${k.toString(16)}1234abcd`
  /** PUTs files for `seconds`; answers the run and the keys it stored. */
  const put = async (seconds: number): Promise<{ run: LoadResult; first: number; last: number }> => {
    const first = key
    const run = await load({ url: primary, connections: args.connections, durationSec: seconds, method: 'PUT', body, path: () => `/${fidOf(key++)}` })
    if (run.errors + run.non2xx > 0) throw new Error(`PUT: ${run.errors} errors, ${run.non2xx} non-2xx`)
    return { run, first, last: key - 1 }
  }

  await put(1)
  const stored = await put(args.seconds)
  // One DELETE per stored file, each exactly once.
  let next = stored.first
  const count = stored.last - stored.first + 1
  const single = await load({ url: primary, connections: args.connections, durationSec: args.seconds, method: 'DELETE', path: () => `/${fidOf(next++)}`, amount: count })
  if (single.errors + single.non2xx > 0) throw new Error(`DELETE: ${single.errors} errors, ${single.non2xx} non-2xx`)

  // The same number of files again, deleted in batches by 8 workers.
  const again = await put(args.seconds)
  const fids = Array.from({ length: again.last - again.first + 1 }, (_, i) => fidOf(again.first + i))
  let at = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (at < fids.length) {
        const batch = fids.slice(at, (at += args.batch))
        const res = await request(`${primary}/delete`, { method: 'POST', dispatcher: agent, body: JSON.stringify({ fids: batch }), headers: { 'content-type': 'application/json' } })
        const answer = (await res.body.json()) as { results: { status: number; size: number }[] }
        if (res.statusCode !== 200 || answer.results.some((r) => r.status !== 202 || r.size !== args.bytes)) throw new Error(`batch delete answered ${res.statusCode}`)
      }
    }),
  )
  const batchRate = fids.length / ((performance.now() - started) / 1000)

  const putRps = stored.run.requestsPerSec
  report('DELETE vs PUT of 10 KiB files through the 3-copy cluster', [
    `PUT:                         ${fmt(putRps)} files/s (${count} files), p99 ${stored.run.p99Ms} ms`,
    `DELETE, one per request:     ${fmt(single.requestsPerSec)} files/s, p99 ${single.p99Ms} ms — ratio ${fmt(single.requestsPerSec / putRps, 2)}`,
    `POST /delete, ${args.batch} per request: ${fmt(batchRate)} files/s — ratio ${fmt(batchRate / putRps, 2)} (goal ≥ 3)`,
  ], { put: putRps, delete: single.requestsPerSec, batchDelete: batchRate, ratio: single.requestsPerSec / putRps, batchRatio: batchRate / putRps })
} finally {
  await agent.close()
  await cluster.stop()
  await rm(dir, { recursive: true, force: true })
}
