/**
 * The volume's side of scrub and verify: walking the index a page at a time, inspecting each
 * key's needle on the disk (damage in the data, in the header's cookie, in the bytes a link
 * shares), and restoring a good copy over a damaged needle. Also scanPage's pages and fileRecord.
 */
import t from 'tap'
import { open, readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { Volume, datPath, idxPath } from '../../src/dataserver/volume.js'
import { decodeOps } from '../../src/dataserver/replica-batch.js'
import { fileRecord, scanPage } from '../../src/dataserver/scrub.js'
import { NeedleIndex, SEGMENT_ENTRIES, STAGING_ENTRIES_MAX } from '../../src/dataserver/needle-index.js'
import { bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

const md5 = (b: Buffer) => createHash('md5').update(b).digest()

/** Byte offset in `.dat` of key's last needle, from `.idx`. */
async function offsetOf(dir: string, keyLo: number): Promise<number> {
  const idx = await readFile(idxPath(dir, 1))
  let offset = -1
  for (let at = 0; at + 16 <= idx.length; at += 16) if (idx.readUInt32LE(at) === keyLo && idx.readUInt32LE(at + 4) === 0) offset = idx.readUInt32LE(at + 8) * 8
  return offset
}

async function flip(dir: string, at: number): Promise<void> {
  const fh = await open(datPath(dir, 1), 'r+')
  const b = Buffer.alloc(1)
  await fh.read(b, 0, 1, at)
  b[0] = b[0]! ^ 0xff
  await fh.write(b, 0, 1, at)
  await fh.close()
}

t.test('keysAfter pages through the index in key order, live and deleted', async (t) => {
  const dir = await tempDir(t)
  const v = await Volume.create(volumeOptions(dir))
  t.teardown(() => v.close())
  for (const k of [5, 1, 9, 3, 7]) await v.write({ cookie: 42, keyHi: 0, keyLo: k, data: bytesFrom(100, k) })
  await v.delete(0, 3, 42)
  t.same(v.keysAfter(undefined, 2).map((k) => k.keyLo), [1, 3])
  t.same(v.keysAfter({ keyHi: 0, keyLo: 3 }, 2).map((k) => [k.keyLo, k.deleted]), [[5, false], [7, false]])
  t.same(v.keysAfter({ keyHi: 0, keyLo: 7 }, 10).map((k) => k.keyLo), [9])
  t.same(v.keysAfter({ keyHi: 0, keyLo: 9 }, 10), [])
  t.same(v.keysAfter(undefined, 10).filter((k) => k.deleted).map((k) => k.keyLo), [3])
})

t.test('the index walk from a key skips whole segments below it and misses nothing above it', async (t) => {
  const index = new NeedleIndex()
  const all: string[] = []
  // Enough keys for several frozen segments, with gaps that need 32-bit deltas, then low keys
  // that land in the overflow table, and some deletes.
  const keys: Array<[number, number]> = []
  let lo = 1000
  for (let i = 0; i < 6 * SEGMENT_ENTRIES; i++) {
    if (i === 3 * SEGMENT_ENTRIES) lo = 1000
    lo += i % 7 === 0 ? 70_000 : 3
    keys.push([i < 3 * SEGMENT_ENTRIES ? 0 : 1, lo])
  }
  for (const [i, [hi, lo]] of keys.entries()) index.set(hi, lo, 1 + i, 100)
  for (let i = 0; i < 50; i++) index.set(0, 1 + i * 2, 1 + i, 100)
  for (let i = 0; i < 200; i += 3) index.markDeleted(keys[i]![0], keys[i]![1])
  index.forEach((hi, lo, _o, _s, deleted) => all.push(`${hi}:${lo}:${deleted}`))
  const above = (after: { keyHi: number; keyLo: number }) => (e: string) => {
    const [hi, lo] = e.split(':').map(Number) as [number, number]
    return hi > after.keyHi || (hi === after.keyHi && lo > after.keyLo)
  }
  for (const after of [{ keyHi: 0, keyLo: 0 }, { keyHi: 0, keyLo: 50 }, { keyHi: 0, keyLo: keys[5000]![1] }, { keyHi: 1, keyLo: 0 }, { keyHi: 1, keyLo: keys[20_000]![1] }, { keyHi: 2, keyLo: 0 }]) {
    const walked: string[] = []
    let visited = 0
    index.forEach((hi, lo, _o, _s, deleted) => {
      visited++
      walked.push(`${hi}:${lo}:${deleted}`)
    }, after)
    t.same(walked.filter(above(after)), all.filter(above(after)), `after ${after.keyHi}:${after.keyLo}: every key above it, in order`)
    // At most one segment and the staging tail below `after` are walked, besides the overflow table.
    const bound = all.filter(above(after)).length + SEGMENT_ENTRIES + STAGING_ENTRIES_MAX + 50
    t.ok(visited <= bound, `after ${after.keyHi}:${after.keyLo}: ${visited} of ${all.length} entries visited (at most ${bound})`)
  }
})

t.test('inspect finds damage in the data, in the cookie and behind a link; restore repairs it', async (t) => {
  const dir = await tempDir(t)
  let v = await Volume.create(volumeOptions(dir))
  const files = [1, 2, 3, 4].map((k) => bytesFrom(3000, k))
  for (const [i, data] of files.entries()) await v.write({ cookie: 100 + i, keyHi: 0, keyLo: i + 1, data, name: `f${i}`, md5: md5(data), lastModifiedMs: 1000 + i })
  // Key 5 shares key 1's bytes; key 4 is deleted; key 6 is written last, so no damage is at the tail.
  await v.link({ cookie: 105, keyHi: 0, keyLo: 5, md5: md5(files[0]!), target: { keyHi: 0, keyLo: 1, cookie: 100 } })
  await v.delete(0, 4, 103)
  await v.write({ cookie: 106, keyHi: 0, keyLo: 6, data: Buffer.from('tail') })
  const whole = await v.inspect(0, 2)
  t.match(whole, { state: 'live', cookie: 101, size: 3000 })
  t.ok(whole!.md5!.equals(md5(files[1]!)), 'the MD5 of a live file')
  t.match(await v.inspect(0, 5), { state: 'live', cookie: 105, size: 3000 }, 'a link reads as the bytes it shares')
  t.match(await v.inspect(0, 4), { state: 'deleted', cookie: 103, size: 3000 })
  t.equal(await v.inspect(0, 99), undefined, 'an unknown key')
  await v.close()

  // Key 1's data (shared by the link 5) and key 2's cookie are damaged on the disk.
  await flip(dir, (await offsetOf(dir, 1)) + 48 + 2 + 1500)
  await flip(dir, (await offsetOf(dir, 2)) + 1)
  v = await Volume.open(volumeOptions(dir))
  t.teardown(() => v.close())
  t.match(await v.inspect(0, 1), { state: 'damaged', cookie: 100, error: /checksum/ })
  t.match(await v.inspect(0, 5), { state: 'damaged', cookie: 105 }, 'a link whose bytes are damaged is damaged')
  const garbled = await v.inspect(0, 2)
  t.equal(garbled!.state, 'damaged')
  t.not(garbled!.cookie, 101, 'a damaged header\'s cookie is what it says, unchecked')
  t.equal(await codeOf(v.read(0, 1, 100)), 'NS_ERR_CORRUPT_NEEDLE', 'reads refuse the damaged copy')
  t.equal(await codeOf(v.write({ cookie: 101, keyHi: 0, keyLo: 2, data: files[1]! })), 'NS_ERR_COOKIE_MISMATCH', 'a plain write trusts the garbled cookie')

  await v.restore({ cookie: 101, keyHi: 0, keyLo: 2, data: files[1]!, name: 'f1', md5: md5(files[1]!), lastModifiedMs: 1001 })
  await v.restore({ cookie: 100, keyHi: 0, keyLo: 1, data: files[0]!, md5: md5(files[0]!) })
  t.ok((await v.read(0, 2, 101)).data.equals(files[1]!), 'restore replaces a needle whose cookie is garbled')
  t.ok((await v.read(0, 1, 100)).data.equals(files[0]!), 'and one whose data is damaged')
  t.match(await v.inspect(0, 5), { state: 'damaged' }, 'a link still shares the damaged bytes until it is restored itself')
  t.equal(await codeOf(v.restore({ cookie: 7, keyHi: 0, keyLo: 2, data: Buffer.from('x') })), 'NS_ERR_COOKIE_MISMATCH', 'a whole file keeps its cookie')

  const page = await scanPage(v, undefined, 3)
  t.same(page.entries.map((e) => [e.key, e.state]), [['0000000000000001', 'live'], ['0000000000000002', 'live'], ['0000000000000003', 'live']])
  t.equal(page.next, '0000000000000003')
  const rest = await scanPage(v, page.next, 3)
  t.same(rest.entries.map((e) => [e.key, e.state]), [['0000000000000004', 'deleted'], ['0000000000000005', 'damaged'], ['0000000000000006', 'live']])
  t.equal(rest.next, '0000000000000006', 'a full page names the key to go on after')
  t.same(await scanPage(v, rest.next, 3), { entries: [], next: undefined }, 'the page past the last key is empty and the last')
  const small = await scanPage(v, undefined, 10, 1)
  t.equal(small.entries.length, 1, 'a page stops at its byte budget')

  const [op] = decodeOps(await fileRecord(v, 0, 2), 1)
  t.match(op, { cookie: 101, keyLo: 2, name: 'f1', lastModifiedMs: 1001 })
  t.ok(op!.data!.equals(files[1]!), 'fileRecord carries the bytes')
  t.equal(await codeOf(fileRecord(v, 0, 5)), 'NS_ERR_CORRUPT_NEEDLE')
  t.equal(await codeOf(fileRecord(v, 0, 4)), 'NS_ERR_NOT_FOUND')
})

t.test('restore repairs a damaged needle in a full volume, but not in one an operator stopped', async (t) => {
  const dir = await tempDir(t)
  const opts = volumeOptions(dir, { volumeBytesMax: 64 * 1024 })
  let v = await Volume.create(opts)
  const files: Buffer[] = []
  for (let k = 1; ; k++) {
    const data = bytesFrom(8000, k)
    if ((await codeOf(v.write({ cookie: 9, keyHi: 0, keyLo: k, data }))) !== 'resolved') break
    files.push(data)
  }
  t.ok(v.full && files.length >= 3, `the volume is full after ${files.length} files`)
  await v.close()
  await flip(dir, (await offsetOf(dir, 1)) + 48 + 4000)
  v = await Volume.open(opts)
  t.teardown(() => v.close())
  t.match(await v.inspect(0, 1), { state: 'damaged' })
  t.equal(await codeOf(v.write({ cookie: 9, keyHi: 0, keyLo: 1, data: files[0]! })), 'NS_ERR_VOLUME_READ_ONLY', 'a plain write finds no room')
  await v.restore({ cookie: 9, keyHi: 0, keyLo: 1, data: files[0]! })
  t.ok((await v.read(0, 1, 9)).data.equals(files[0]!), 'a repair does')
  t.ok(v.full, 'and the volume stays full for writes')
  v.setReadOnly(true)
  t.equal(await codeOf(v.restore({ cookie: 9, keyHi: 0, keyLo: 2, data: files[1]! })), 'NS_ERR_VOLUME_READ_ONLY', 'an operator\'s stop refuses repairs too')
})
