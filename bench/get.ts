/**
 * GET of 10 KiB files from one data server, against a bare fastify server returning a fixed
 * 10 KiB buffer (the ceiling), both measured here, now, with the same load generator.
 * Goal: data server ≥ 0.85 of the ceiling.
 *
 *   node dist/bench/get.js [--files 2000] [--bytes 10240] [--connections 64] [--seconds 10]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { ROOT, fmt, load, parseArgs, report, startDataServerProcess, startProcess } from './lib.js'

const args = parseArgs({ files: 2000, bytes: 10 * 1024, connections: 64, seconds: 10 })
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-get-'))
try {
  const baseline = await startProcess(join(ROOT, 'dist', 'bench', 'baseline-server.js'), [String(args.bytes)])
  const warm = () => load({ url: baseline.url, connections: args.connections, durationSec: 2, path: () => '/x' })
  await warm()
  const base1 = await load({ url: baseline.url, connections: args.connections, durationSec: args.seconds, path: () => '/x' })
  await baseline.stop()

  const server = await startDataServerProcess(dir)
  await request(`${server.url}/admin/assign_volume?volume=1`, { method: 'POST' }).then((r) => r.body.dump())
  const fids: string[] = []
  for (let i = 1; i <= args.files; i++) {
    const fid = `1,${i.toString(16)}${'1234abcd'}`
    const res = await request(`${server.url}/${fid}`, { method: 'POST', body: randomBytes(args.bytes), headers: { 'content-type': 'image/jpeg' } })
    await res.body.dump()
    if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode}`)
    fids.push(`/${fid}`)
  }
  let n = 0
  const path = () => fids[n++ % fids.length]!
  await load({ url: server.url, connections: args.connections, durationSec: 2, path })
  const target = await load({ url: server.url, connections: args.connections, durationSec: args.seconds, path })
  await server.stop()

  // The ceiling again, after: the machine's noise shows in how far the two runs differ.
  const baseline2 = await startProcess(join(ROOT, 'dist', 'bench', 'baseline-server.js'), [String(args.bytes)])
  await load({ url: baseline2.url, connections: args.connections, durationSec: 2, path: () => '/x' })
  const base2 = await load({ url: baseline2.url, connections: args.connections, durationSec: args.seconds, path: () => '/x' })
  await baseline2.stop()

  const ceiling = (base1.requestsPerSec + base2.requestsPerSec) / 2
  const ratio = target.requestsPerSec / ceiling
  report('GET 10 KiB: data server vs bare fastify', [
    `bare fastify, fixed buffer: ${fmt(base1.requestsPerSec)} and ${fmt(base2.requestsPerSec)} req/s (mean ${fmt(ceiling)})`,
    `data server, ${args.files} files:  ${fmt(target.requestsPerSec)} req/s, p50 ${target.p50Ms} ms, p99 ${target.p99Ms} ms, errors ${target.errors}, non-2xx ${target.non2xx}`,
    `ratio: ${fmt(ratio, 2)} (goal ≥ 0.85)`,
  ], { ceiling, target: target.requestsPerSec, ratio, p99Ms: target.p99Ms, errors: target.errors + target.non2xx })
} finally {
  await rm(dir, { recursive: true, force: true })
}
