/**
 * Compaction, measured two ways in one run:
 * 1. Throughput: compacting a volume of 10 KiB files, a third of them deleted (no rate limit),
 *    against `cp` of the same `.dat` followed by an fsync of the copy. Goal: ≥ 0.6.
 * 2. GET p99 of 10 KiB files on a data server while it compacts the volume they are in (at the
 *    default --compact-bytes-per-second), against the same load without compaction. Goal ≤ 2×.
 *
 *   node dist/bench/compact.js [--files 20000] [--connections 64] [--seconds 5]
 */
import { spawnSync } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { mkdtemp, open, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { Volume, datPath } from '../src/dataserver/volume.js'
import { fmt, load, parseArgs, report, startDataServerProcess } from './lib.js'

const args = parseArgs({ files: 20_000, connections: 64, seconds: 5 })
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-compact-'))
const body = randomBytes(10 * 1024)
const md5 = createHash('md5').update(body).digest()
try {
  // 1. Throughput, in process.
  const volumeDir = join(dir, 'volume')
  spawnSync('mkdir', ['-p', volumeDir])
  const volume = await Volume.create({
    dir: volumeDir,
    volumeId: 1,
    placement: 0,
    volumeBytesMax: 8 * 1024 ** 3,
    fsync: 'none',
    fsyncIntervalMs: 1000,
    writeQueueMax: 100_000,
    writeBatchBytesMax: 16 * 1024 * 1024,
    writeBatchMax: 1024,
    syncReadBytesMax: 256 * 1024,
    now: Date.now,
  })
  for (let k = 1; k <= args.files; k += 256) {
    const writes = []
    for (let i = k; i < Math.min(k + 256, args.files + 1); i++) writes.push(volume.write({ cookie: 7, keyHi: 0, keyLo: i, data: body, md5 }))
    await Promise.all(writes)
  }
  for (let k = 1; k <= args.files; k += 3) await volume.delete(0, k, 7)
  const datBytes = (await stat(datPath(volumeDir, 1))).size

  let started = performance.now()
  spawnSync('cp', [datPath(volumeDir, 1), join(dir, 'copy.dat')])
  const copy = await open(join(dir, 'copy.dat'), 'r+')
  await copy.sync()
  await copy.close()
  const cpMs = performance.now() - started
  await rm(join(dir, 'copy.dat'))

  started = performance.now()
  const result = await volume.compact({ graceMs: 0 })
  const compactMs = performance.now() - started
  await volume.close()
  const mbps = (ms: number) => datBytes / (1024 * 1024) / (ms / 1000)

  // 2. GET p99 during a compaction, through a data server process.
  const server = await startDataServerProcess(join(dir, 'server'), ['--compact-garbage-threshold', '0', '--undelete-grace-seconds', '0'])
  const agent = new Agent({ connections: 16 })
  let getQuiet: Awaited<ReturnType<typeof load>>
  let getDuring: Awaited<ReturnType<typeof load>>
  let compaction: { ms?: number; beforeBytes?: number }
  try {
    await request(`${server.url}/admin/assign_volume?volume=1`, { method: 'POST' }).then((r) => r.body.dump())
    const fid = (k: number) => `1,${k.toString(16)}00001234`
    let next = 1
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next <= args.files) {
          const k = next++
          const res = await request(`${server.url}/${fid(k)}`, { method: 'POST', body, dispatcher: agent })
          await res.body.dump()
        }
      }),
    )
    const doomed = Array.from({ length: args.files }, (_, i) => i + 1).filter((k) => k % 3 === 0).map(fid)
    for (let i = 0; i < doomed.length; i += 1000) {
      await request(`${server.url}/delete`, { method: 'POST', body: JSON.stringify({ fids: doomed.slice(i, i + 1000) }), dispatcher: agent }).then((r) => r.body.dump())
    }
    let k = 0
    const path = () => {
      do k = (k % args.files) + 1
      while (k % 3 === 0)
      return `/${fid(k)}`
    }
    await load({ url: server.url, connections: args.connections, durationSec: 1, path })
    getQuiet = await load({ url: server.url, connections: args.connections, durationSec: args.seconds, path })
    const compacting = request(`${server.url}/admin/volume/compact?volume=1`, { method: 'POST', dispatcher: agent, headersTimeout: 600_000 }).then((r) => r.body.json() as Promise<{ ms?: number; beforeBytes?: number }>)
    getDuring = await load({ url: server.url, connections: args.connections, durationSec: args.seconds, path })
    compaction = await compacting
  } finally {
    await agent.close()
    await server.stop()
  }

  report('Compaction', [
    `volume of ${fmt(args.files)} files of 10 KiB, a third deleted: ${fmt(datBytes / 1024 / 1024)} MiB → ${fmt(result.afterBytes / 1024 / 1024)} MiB`,
    `compaction: ${fmt(mbps(compactMs))} MiB/s of volume (${fmt(compactMs)} ms); cp + fsync of the .dat: ${fmt(mbps(cpMs))} MiB/s (${fmt(cpMs)} ms)`,
    `throughput ratio: ${fmt(cpMs / compactMs, 2)} (goal ≥ 0.6)`,
    `GET 10 KiB p99 without compaction: ${getQuiet.p99Ms} ms (${fmt(getQuiet.requestsPerSec)} req/s)`,
    `GET 10 KiB p99 during a compaction at the default rate (${fmt(compaction.ms ?? 0)} ms): ${getDuring.p99Ms} ms (${fmt(getDuring.requestsPerSec)} req/s)`,
    `p99 ratio: ${fmt(getDuring.p99Ms / Math.max(getQuiet.p99Ms, 0.001), 2)} (goal ≤ 2)`,
  ], { compactMiBps: mbps(compactMs), cpMiBps: mbps(cpMs), ratio: cpMs / compactMs, p99Quiet: getQuiet.p99Ms, p99During: getDuring.p99Ms, compactionMs: compaction.ms })
} finally {
  await rm(dir, { recursive: true, force: true })
}
