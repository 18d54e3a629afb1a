/**
 * Compaction with needles above 4 GiB, on a sparse volume file: three deleted files of
 * 1.5 GiB each (holes on disk) push every later needle past 4 GiB; compaction drops them and
 * moves the files, links and tombstones above 4 GiB — also those written while it runs —
 * to their new places below, with their references moved too.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import xxhash from 'xxhash-wasm'
import {
  BODY_FIXED_SIZE,
  B_DATA_SIZE,
  H_BODY_SIZE,
  H_COOKIE,
  H_KEY_HI,
  H_KEY_LO,
  IDX_TOMBSTONE_SIZE,
  NEEDLE_HEADER_SIZE,
  SUPERBLOCK_SIZE,
  VOLUME_BYTES_MAX,
  decodeSuperblock,
  encodeIdxEntry,
  encodeNeedle,
  needleLength,
  toUnits,
} from '../../src/common/format.js'
import { Volume, datPath, idxPath } from '../../src/dataserver/volume.js'
import { CLOCK_MS, bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

t.setTimeout(120_000)

const HOUR = 3600_000
const BIG_DATA = 1.5 * 2 ** 30
const md5 = (data: Uint8Array) => createHash('md5').update(data).digest()

/** Appends a file of BIG_DATA zero bytes (a hole) at pos, checksummed like any needle. */
async function writeSparseNeedle(dat: Awaited<ReturnType<typeof open>>, pos: number, keyLo: number, seed: bigint, appendAtMs: number): Promise<number> {
  const hasher = await xxhash()
  const bodySize = BODY_FIXED_SIZE + BIG_DATA
  const head = Buffer.alloc(NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE)
  head.writeUInt32LE(keyLo, H_COOKIE)
  head.writeUInt32LE(keyLo, H_KEY_LO)
  head.writeUInt32LE(0, H_KEY_HI)
  head.writeUInt32LE(bodySize, H_BODY_SIZE)
  head.writeUInt32LE(BIG_DATA, NEEDLE_HEADER_SIZE + B_DATA_SIZE)
  const footer = Buffer.alloc(16)
  footer.writeUIntLE(appendAtMs, 0, 6)
  const h = hasher.create64(seed)
  h.update(head)
  const zeros = new Uint8Array(16 * 1024 * 1024)
  for (let left = BIG_DATA; left > 0; left -= zeros.length) h.update(left >= zeros.length ? zeros : zeros.subarray(0, left))
  h.update(footer.subarray(0, 8))
  footer.writeBigUInt64LE(h.digest(), 8)
  await dat.write(head, 0, head.length, pos)
  await dat.write(footer, 0, footer.length, pos + NEEDLE_HEADER_SIZE + bodySize)
  const length = needleLength(bodySize)
  const pad = length - (NEEDLE_HEADER_SIZE + bodySize + 16)
  if (pad > 0) await dat.write(Buffer.alloc(pad), 0, pad, pos + NEEDLE_HEADER_SIZE + bodySize + 16)
  return length
}

t.test('compaction moves needles from above 4 GiB, references included', async (t) => {
  const dir = await tempDir(t)
  let now = CLOCK_MS
  const options = volumeOptions(dir, { volumeBytesMax: VOLUME_BYTES_MAX, now: () => now })
  await (await Volume.create(options)).close()
  const { checksumSeed: seed } = decodeSuperblock(await readFile(datPath(dir, 1)))
  // Two huge files deleted two days ago, written straight into the files.
  const dat = await open(datPath(dir, 1), 'r+')
  const idx = await open(idxPath(dir, 1), 'r+')
  let pos = SUPERBLOCK_SIZE
  const entries: Buffer[] = []
  const bigOffsets: number[] = []
  for (const keyLo of [1, 2, 3]) {
    bigOffsets.push(pos)
    entries.push(encodeIdxEntry({ keyHi: 0, keyLo, offset: toUnits(pos), size: BODY_FIXED_SIZE + BIG_DATA }))
    pos += await writeSparseNeedle(dat, pos, keyLo, seed, CLOCK_MS - 49 * HOUR)
  }
  for (const [i, keyLo] of [1, 2, 3].entries()) {
    const ref = { offset: toUnits(bigOffsets[i]!), bodySize: BODY_FIXED_SIZE + BIG_DATA, dataSize: BIG_DATA, keyHi: 0, keyLo, cookie: keyLo }
    const tomb = encodeNeedle({ cookie: keyLo, keyHi: 0, keyLo, data: new Uint8Array(0), tombstone: true, ref }, CLOCK_MS - 48 * HOUR, seed)
    await dat.write(tomb, 0, tomb.length, pos)
    entries.push(encodeIdxEntry({ keyHi: 0, keyLo, offset: toUnits(pos), size: IDX_TOMBSTONE_SIZE }))
    pos += tomb.length
  }
  const idxBuf = Buffer.concat(entries)
  await idx.write(idxBuf, 0, idxBuf.length, 0)
  await dat.close()
  await idx.close()
  t.ok(pos > 2 ** 32, `the next needle lands at ${pos}, past 4 GiB`)

  const v = await Volume.open(options)
  t.teardown(() => v.close())
  const expect = new Map<number, Buffer | 'gone'>()
  for (let k = 10; k < 60; k++) {
    const data = bytesFrom(1000 + k * 31, k)
    await v.write({ cookie: k, keyHi: 0, keyLo: k, data, md5: md5(data) })
    expect.set(k, data)
  }
  t.ok(v.datBytes > 2 ** 32, 'every file is above 4 GiB')
  for (let k = 10; k < 20; k++) {
    await v.delete(0, k, k)
    expect.set(k, 'gone')
  }
  // A link to a file above 4 GiB, whose stored copy is then deleted.
  await v.link({ cookie: 100, keyHi: 0, keyLo: 100, md5: md5(expect.get(30) as Buffer), target: { keyHi: 0, keyLo: 30, cookie: 30 } })
  expect.set(100, expect.get(30) as Buffer)
  await v.delete(0, 30, 30)
  expect.set(30, 'gone')
  now = CLOCK_MS + HOUR

  // Writes while it compacts land above 4 GiB and are copied after the rest.
  const compaction = v.compact({ graceMs: 24 * HOUR, bytesPerSecond: 2 * 1024 * 1024 })
  for (let k = 200; k < 230; k++) {
    const data = bytesFrom(2000, k)
    await v.write({ cookie: k, keyHi: 0, keyLo: k, data })
    expect.set(k, data)
  }
  await v.delete(0, 40, 40)
  expect.set(40, 'gone')
  const result = await compaction
  t.ok(result.afterBytes < 2 ** 20, `${result.beforeBytes} → ${result.afterBytes} bytes: the deleted huge files are gone`)
  t.ok(v.datBytes < 2 ** 32, 'every needle is now below 4 GiB')

  const check = async (vol: Volume, label: string) => {
    const wrong: string[] = []
    for (const [k, want] of expect) {
      if (want === 'gone') {
        if ((await codeOf(vol.read(0, k, k === 100 ? 100 : k))) !== 'NS_ERR_NOT_FOUND') wrong.push(`${k} should be gone`)
      } else {
        const got = await vol.read(0, k, k === 100 ? 100 : k).catch((err: Error) => err)
        if (got instanceof Error || !got.data.equals(want)) wrong.push(`${k}: ${got instanceof Error ? got.message : 'other bytes'}`)
      }
    }
    t.same(wrong, [], `${label}: ${expect.size} keys as expected`)
  }
  await check(v, 'after compaction')
  t.same(await v.undelete(0, 15, 15, 24 * HOUR), { size: 1000 + 15 * 31, undeleted: true }, 'a delete from above 4 GiB can still be undone')
  expect.set(15, bytesFrom(1000 + 15 * 31, 15))
  t.equal(await codeOf(v.undelete(0, 1, 1, 24 * HOUR)), 'NS_ERR_NOT_FOUND', 'the huge files are gone for good')
  await v.close()
  await check(await Volume.open(options), 'reopened')
})
