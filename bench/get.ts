/**
 * GET of 10 KiB files from one data server, against a bare fastify server returning a fixed
 * 10 KiB buffer (the ceiling). All run at once; rounds alternate between them and the medians
 * are compared, so that the machine's drift hits all alike. Goal: data server ≥ 0.85. The same
 * files are also served by a data server without its read cache (--read-cache-bytes 0), where
 * every GET reads the disk: the figure for a working set larger than the cache.
 *
 *   node dist/bench/get.js [--files 2000] [--bytes 10240] [--connections 64] [--seconds 3] [--rounds 9]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { LOAD_GENERATOR, ROOT, fmt, load, median, parseArgs, report, startDataServerProcess, startProcess, type LoadResult } from './lib.js'

const args = parseArgs({ files: 2000, bytes: 10 * 1024, connections: 64, seconds: 3, rounds: 9 })
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-get-'))
const baseline = await startProcess(join(ROOT, 'dist', 'bench', 'baseline-server.js'), [String(args.bytes)])
const server = await startDataServerProcess(join(dir, 'cached'))
const uncached = await startDataServerProcess(join(dir, 'uncached'), ['--read-cache-bytes', '0'])
try {
  const fids: string[] = []
  for (const s of [server, uncached]) {
    await request(`${s.url}/admin/assign_volume?volume=1`, { method: 'POST' }).then((r) => r.body.dump())
  }
  for (let i = 1; i <= args.files; i++) {
    const fid = `1,${i.toString(16)}1234abcd`
    const body = randomBytes(args.bytes)
    for (const s of [server, uncached]) {
      const res = await request(`${s.url}/${fid}`, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } })
      await res.body.dump()
      if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode}`)
    }
    fids.push(`/${fid}`)
  }
  const random = () => fids[Math.floor(Math.random() * fids.length)]!
  const base: LoadResult[] = []
  const target: LoadResult[] = []
  const noCache: LoadResult[] = []
  await load({ url: baseline.url, connections: args.connections, durationSec: 2, path: () => '/x' })
  await load({ url: server.url, connections: args.connections, durationSec: 2, path: random })
  await load({ url: uncached.url, connections: args.connections, durationSec: 2, path: random })
  for (let round = 0; round < args.rounds; round++) {
    base.push(await load({ url: baseline.url, connections: args.connections, durationSec: args.seconds, path: () => '/x' }))
    target.push(await load({ url: server.url, connections: args.connections, durationSec: args.seconds, path: random }))
    noCache.push(await load({ url: uncached.url, connections: args.connections, durationSec: args.seconds, path: random }))
  }
  const ceiling = median(base.map((r) => r.requestsPerSec))
  const got = median(target.map((r) => r.requestsPerSec))
  const ratio = got / ceiling
  const gotUncached = median(noCache.map((r) => r.requestsPerSec))
  const failures = [...target, ...noCache].reduce((n, r) => n + r.errors + r.non2xx, 0)
  report(`GET ${args.bytes / 1024} KiB: data server vs bare fastify (${LOAD_GENERATOR}, ${args.connections} connections, median of ${args.rounds} rounds)`, [
    `bare fastify, fixed buffer: ${fmt(ceiling)} req/s (rounds: ${base.map((r) => fmt(r.requestsPerSec)).join(', ')})`,
    `data server, ${args.files} files:  ${fmt(got)} req/s (rounds: ${target.map((r) => fmt(r.requestsPerSec)).join(', ')}), p99 ${fmt(median(target.map((r) => r.p99Ms)), 1)} ms, failures ${failures}`,
    `ratio: ${fmt(ratio, 2)} (goal ≥ 0.85)`,
    `without the read cache (every GET reads the disk): ${fmt(gotUncached)} req/s (rounds: ${noCache.map((r) => fmt(r.requestsPerSec)).join(', ')}), ratio ${fmt(gotUncached / ceiling, 2)}`,
  ], { generator: LOAD_GENERATOR, ceiling, target: got, ratio, uncached: gotUncached, uncachedRatio: gotUncached / ceiling, failures })
} finally {
  await server.stop()
  await uncached.stop()
  await baseline.stop()
  await rm(dir, { recursive: true, force: true })
}
