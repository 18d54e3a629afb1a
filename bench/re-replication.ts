/**
 * Re-replication: one data server copies a volume of ~200 MiB from another
 * (`POST /admin/volume/copy`: stream `.dat` and `.idx`, digest, SHA-256 check, fsync, rename,
 * open and count check), against the baseline of a raw loopback copy of the same bytes: a bare
 * node http server streaming both files to a client that writes them to disk and fsyncs them.
 * Each is run `--runs` times (median).
 *
 *   node dist/bench/re-replication.js [--mib 200] [--runs 3]
 */
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { Volume, datPath, idxPath } from '../src/dataserver/volume.js'
import { fmt, median, parseArgs, report, startDataServerProcess } from './lib.js'

const args = parseArgs({ mib: 200, runs: 3 })
const FILE_BYTES = 1024 * 1024
const VID = 1
const root = await mkdtemp(join(tmpdir(), 'needlestore-bench-rerepl-'))
try {
  // The source volume, written in this process before its server starts.
  const dirA = join(root, 'a')
  await mkdir(dirA, { recursive: true })
  const volume = await Volume.create({
    dir: dirA, volumeId: VID, placement: 0, collection: '', volumeBytesMax: (args.mib + 16) * 1024 * 1024, fsync: 'none', fsyncIntervalMs: 1000,
    writeQueueMax: 1024, writeBatchBytesMax: 8 << 20, writeBatchMax: 64, syncReadBytesMax: 1 << 16, now: Date.now,
  })
  const data = Buffer.alloc(FILE_BYTES)
  for (let i = 0; i < args.mib; i++) {
    data.fill(i & 0xff)
    data.writeUInt32LE(i, 0)
    await volume.write({ cookie: 7, keyHi: 0, keyLo: i + 1, data })
  }
  await volume.close()
  const bytes = (await stat(datPath(dirA, VID))).size + (await stat(idxPath(dirA, VID))).size

  const a = await startDataServerProcess(dirA)
  const b = await startDataServerProcess(join(root, 'b'))
  const copyS: number[] = []
  const rawS: number[] = []
  try {
    for (let run = 0; run < args.runs; run++) {
      // The copy through the data servers.
      const start = performance.now()
      const res = await request(`${b.url}/admin/volume/copy?volume=${VID}&from=${a.url.replace('http://', '')}`, { method: 'POST', headersTimeout: 600_000, bodyTimeout: 600_000 })
      const text = await res.body.text()
      if (res.statusCode !== 201) throw new Error(`copy answered ${res.statusCode}: ${text}`)
      copyS.push((performance.now() - start) / 1000)
      const del = await request(`${b.url}/admin/volume/delete?volume=${VID}`, { method: 'POST' })
      await del.body.dump()

      // The raw loopback copy of the same two files.
      rawS.push(await rawCopy([datPath(dirA, VID), idxPath(dirA, VID)], join(root, `raw-${run}`)))
    }
  } finally {
    await Promise.all([a.stop(), b.stop()])
  }
  const copy = median(copyS)
  const raw = median(rawS)
  const mibs = (s: number) => bytes / 2 ** 20 / s
  report(`Re-replication: copy of a ${fmt(bytes / 2 ** 20)} MiB volume between two data servers`, [
    `volume copy (stream, SHA-256 check, fsync, open): ${fmt(copy, 2)} s, ${fmt(mibs(copy))} MiB/s (median of ${args.runs})`,
    `baseline, raw loopback copy of the same bytes (http stream to disk, fsync): ${fmt(raw, 2)} s, ${fmt(mibs(raw))} MiB/s`,
    `ratio: ${fmt(mibs(copy) / mibs(raw), 2)} of the raw copy's throughput`,
  ], { bytes, copySeconds: copy, rawSeconds: raw, copyMiBps: mibs(copy), rawMiBps: mibs(raw), ratio: mibs(copy) / mibs(raw) })
} finally {
  await rm(root, { recursive: true, force: true })
}

/** Serves each file over a bare node http server and writes it to dir with a client: seconds. */
async function rawCopy(paths: string[], dir: string): Promise<number> {
  const server = createServer((req, res) => {
    const path = paths[Number(new URL(req.url ?? '/', 'http://x').searchParams.get('i'))]!
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    createReadStream(path, { highWaterMark: 1024 * 1024 }).pipe(res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  await mkdir(dir, { recursive: true })
  try {
    const start = performance.now()
    for (let i = 0; i < paths.length; i++) {
      const res = await request(`http://127.0.0.1:${port}/?i=${i}`)
      const fh = await open(join(dir, String(i)), 'w')
      let pos = 0
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        await fh.write(chunk, 0, chunk.length, pos)
        pos += chunk.length
      }
      await fh.datasync()
      await fh.close()
    }
    return (performance.now() - start) / 1000
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await rm(dir, { recursive: true, force: true })
  }
}
