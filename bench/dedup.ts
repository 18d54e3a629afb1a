/**
 * Upload of a 256 KiB image the cluster already holds (MD5 dedup: assign with the MD5, then an
 * upload without the bytes, a link on every copy) against a full upload of a new 256 KiB image,
 * both through the SDK (which hashes every upload) to the 3-copy local cluster, in the same run.
 * Rounds alternate between the two and the medians are compared. Goal: ≥ 3× faster.
 *
 *   node dist/bench/dedup.js [--bytes 262144] [--workers 64] [--seconds 5] [--rounds 3]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NeedleClient } from '../src/client/index.js'
import { fmt, median, parseArgs, report, startLocalCluster } from './lib.js'

const args = parseArgs({ bytes: 256 * 1024, workers: 64, seconds: 5, rounds: 3 })
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-dedup-'))
const cluster = await startLocalCluster(join(dir, 'cluster'), 3)
const client = new NeedleClient({ master: cluster.master.url, connections: 32 })
try {
  const image = randomBytes(args.bytes)
  let unique = 0
  /** Uploads for `seconds` with `workers` at once; answers uploads per second. */
  const run = async (seconds: number, dedup: boolean): Promise<number> => {
    let done = 0
    const end = performance.now() + seconds * 1000
    const started = performance.now()
    await Promise.all(
      Array.from({ length: args.workers }, async () => {
        while (performance.now() < end) {
          let data = image
          if (!dedup) {
            data = Buffer.from(image)
            data.writeDoubleLE(++unique, 0)
          }
          const result = await client.upload(data, { contentType: 'image/jpeg', fileName: 'product.jpg' })
          if (result.deduplicated !== dedup) throw new Error(`an upload was ${result.deduplicated ? '' : 'not '}deduplicated`)
          done++
        }
      }),
    )
    return done / ((performance.now() - started) / 1000)
  }

  // The stored copy, and the wait until the master's dedup index knows it.
  await client.upload(image, { contentType: 'image/jpeg' })
  const deadline = Date.now() + 20_000
  while (!(await client.upload(image)).deduplicated) {
    if (Date.now() > deadline) throw new Error('the dedup index never learned the stored copy')
    await new Promise((r) => setTimeout(r, 50))
  }
  await run(1, false)
  await run(1, true)
  const full: number[] = []
  const dedup: number[] = []
  for (let r = 0; r < args.rounds; r++) {
    full.push(await run(args.seconds, false))
    dedup.push(await run(args.seconds, true))
  }
  const fullRate = median(full)
  const dedupRate = median(dedup)
  report(`Upload of a ${fmt(args.bytes / 1024)} KiB image the cluster holds (dedup) vs a new one, 3 copies, SDK`, [
    `full upload:  ${fmt(fullRate)} uploads/s (median of ${args.rounds})`,
    `dedup upload: ${fmt(dedupRate)} uploads/s (median of ${args.rounds})`,
    `ratio: ${fmt(dedupRate / fullRate, 2)} (goal ≥ 3)`,
  ], { full: fullRate, dedup: dedupRate, ratio: dedupRate / fullRate })
} finally {
  await client.close()
  await cluster.stop()
  await rm(dir, { recursive: true, force: true })
}
