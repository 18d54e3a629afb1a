/**
 * Start-up: Volume.open of a volume with N needles (default 10 M), loading its `.idx` into the
 * in-memory index, against reading the same `.idx` bytes alone (the baseline). The `.dat` is
 * sparse: the superblock, and the last needle written for real (open checks it), so the
 * benchmark needs little disk. Goal: ≥ 10 M entries/s.
 *
 *   node dist/bench/volume-load.js [--needles 10000000]
 */
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NEEDLE_MIN_LENGTH, BODY_FIXED_SIZE, IDX_ENTRY_SIZE, SUPERBLOCK_SIZE, encodeNeedle, encodeSuperblock, needleLength, toUnits } from '../src/common/format.js'
import { Volume, datPath, idxPath } from '../src/dataserver/volume.js'
import { fmt, parseArgs, report } from './lib.js'

const args = parseArgs({ needles: 10_000_000 })
const n = args.needles
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-load-'))
try {
  const seed = 12345n
  const length = needleLength(BODY_FIXED_SIZE)
  if (length !== NEEDLE_MIN_LENGTH) throw new Error('layout changed')
  // Keys increase by 1…8, as when several volumes share one key counter.
  let idx: Buffer | undefined = Buffer.alloc(n * IDX_ENTRY_SIZE)
  let key = 0
  for (let i = 0; i < n; i++) {
    key += 1 + (i % 8)
    idx.writeUInt32LE(key >>> 0, i * IDX_ENTRY_SIZE)
    idx.writeUInt32LE(Math.floor(key / 2 ** 32), i * IDX_ENTRY_SIZE + 4)
    idx.writeUInt32LE(toUnits(SUPERBLOCK_SIZE + i * length), i * IDX_ENTRY_SIZE + 8)
    idx.writeUInt32LE(BODY_FIXED_SIZE, i * IDX_ENTRY_SIZE + 12)
  }
  await writeFile(idxPath(dir, 1), idx)
  idx = undefined
  const dat = await open(datPath(dir, 1), 'w')
  await dat.write(encodeSuperblock({ placement: 0, compactRevision: 0, volumeId: 1, createdAtMs: Date.now(), checksumSeed: seed, collection: '' }), 0, SUPERBLOCK_SIZE, 0)
  const last = encodeNeedle({ cookie: 1, keyHi: Math.floor(key / 2 ** 32), keyLo: key >>> 0, data: new Uint8Array(0) }, Date.now(), seed)
  await dat.write(last, 0, last.length, SUPERBLOCK_SIZE + (n - 1) * length)
  await dat.close()

  const readStart = performance.now()
  await readFile(idxPath(dir, 1)).then((b) => b.length)
  const readS = (performance.now() - readStart) / 1000

  const start = performance.now()
  const volume = await Volume.open({
    dir, volumeId: 1, volumeBytesMax: SUPERBLOCK_SIZE + n * length + 1024 * 1024, fsync: 'none', fsyncIntervalMs: 100,
    writeQueueMax: 16, writeBatchBytesMax: 1 << 20, writeBatchMax: 64, syncReadBytesMax: 1 << 18, now: Date.now,
  })
  const openS = (performance.now() - start) / 1000
  if (volume.liveCount !== n) throw new Error(`loaded ${volume.liveCount} of ${n}`)
  await volume.close()
  const rate = n / openS
  report(`Volume.open: load ${fmt(n)} index entries`, [
    `open: ${fmt(openS, 2)} s, ${fmt(rate / 1e6, 1)} M entries/s (goal ≥ 10)`,
    `baseline, reading the ${fmt(n * IDX_ENTRY_SIZE / 2 ** 20)} MiB .idx alone: ${fmt(readS, 2)} s, ${fmt(n / readS / 1e6, 1)} M entries/s`,
  ], { needles: n, openSeconds: openS, entriesPerSecond: rate, readSeconds: readS  })
} finally {
  await rm(dir, { recursive: true, force: true })
}
