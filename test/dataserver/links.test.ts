/**
 * Links (MD5 dedup) and undelete in one volume: a link shares the bytes of another file; a
 * deleted file (a plain one or a link) comes back within the grace period; all of it survives a
 * restart and a rebuild of the index from `.dat` alone.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { Volume, idxPath, type CreateVolumeOptions } from '../../src/dataserver/volume.js'
import { CLOCK_MS, bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

const md5 = (data: Uint8Array) => createHash('md5').update(data).digest()

async function openVolume(t: Test, dir: string, create: boolean, over: Partial<CreateVolumeOptions> = {}): Promise<Volume> {
  const v = create ? await Volume.create(volumeOptions(dir, over)) : await Volume.open(volumeOptions(dir, over))
  t.teardown(() => v.close())
  return v
}

const ORIGINAL = { cookie: 11, keyHi: 0, keyLo: 1, name: 'first.jpg', mime: 'image/jpeg', lastModifiedMs: CLOCK_MS - 5000 }
const DATA = bytesFrom(256 * 1024, 7)

t.test('a link shares the bytes of a file, with its own name, and costs a small needle', async (t) => {
  const dir = await tempDir(t)
  const v = await openVolume(t, dir, true)
  await v.write({ ...ORIGINAL, data: DATA, md5: md5(DATA) })
  const before = v.datBytes
  const copy = { cookie: 22, keyHi: 0, keyLo: 2, name: 'second.jpg', mime: 'image/png', md5: md5(DATA), target: ORIGINAL }
  t.same(await v.link(copy), { size: DATA.length }, 'the link answers the size of the shared file')
  t.ok(v.datBytes - before < 1024, `the link took ${v.datBytes - before} bytes, not another copy`)
  const read = await v.read(0, 2, 22)
  t.ok(read.data.equals(DATA), 'the link reads the shared bytes')
  t.equal(read.name, 'second.jpg', 'with its own name')
  t.equal(read.mime, 'image/png', 'and its own type')
  t.ok(read.md5?.equals(md5(DATA)), 'and the MD5 of the bytes')
  t.equal(await codeOf(v.read(0, 2, 23)), 'NS_ERR_NOT_FOUND', 'a wrong cookie on a link answers like a missing file')

  // A link to a link shares the first bytes; it never chains.
  await v.link({ cookie: 33, keyHi: 0, keyLo: 3, md5: md5(DATA), target: { keyHi: 0, keyLo: 2, cookie: 22 } })
  const third = await v.read(0, 3, 33)
  t.ok(third.data.equals(DATA), 'a link made from a link reads the same bytes')
  t.equal(third.name, 'first.jpg', 'a link without a name of its own shows the stored file\'s')

  t.equal(await codeOf(v.link({ cookie: 4, keyHi: 0, keyLo: 4, md5: md5(Buffer.from('other')), target: ORIGINAL })), 'NS_ERR_DEDUP_MISS', 'another MD5 is a miss')
  t.equal(await codeOf(v.link({ cookie: 4, keyHi: 0, keyLo: 4, md5: md5(DATA), target: { keyHi: 0, keyLo: 99, cookie: 1 } })), 'NS_ERR_DEDUP_MISS', 'an unknown target is a miss')
  t.equal(await codeOf(v.link({ cookie: 4, keyHi: 0, keyLo: 4, md5: md5(DATA), target: { ...ORIGINAL, cookie: 12 } })), 'NS_ERR_DEDUP_MISS', 'a target with another cookie is a miss')
  t.equal(await codeOf(v.link({ cookie: 99, keyHi: 0, keyLo: 2, md5: md5(DATA), target: ORIGINAL })), 'NS_ERR_COOKIE_MISMATCH', 'a link may not take over a key with another cookie')
  t.equal(await codeOf(v.read(0, 4, 4)), 'NS_ERR_NOT_FOUND', 'a miss stores nothing')
})

t.test('deleting one file never breaks another that shares its bytes; both survive restarts', async (t) => {
  const dir = await tempDir(t)
  const v = await openVolume(t, dir, true)
  await v.write({ ...ORIGINAL, data: DATA, md5: md5(DATA) })
  await v.link({ cookie: 22, keyHi: 0, keyLo: 2, md5: md5(DATA), target: ORIGINAL })
  t.same(await v.delete(0, 1, 11), { size: DATA.length })
  t.equal(await codeOf(v.read(0, 1, 11)), 'NS_ERR_NOT_FOUND', 'the original is gone')
  t.ok((await v.read(0, 2, 22)).data.equals(DATA), 'the link still reads its bytes')
  t.equal(await codeOf(v.link({ cookie: 5, keyHi: 0, keyLo: 5, md5: md5(DATA), target: ORIGINAL })), 'NS_ERR_DEDUP_MISS', 'a deleted file is no target')
  t.same(await v.delete(0, 2, 22), { size: DATA.length }, 'deleting the link answers the shared size')
  t.same(await v.delete(0, 2, 22), { size: DATA.length }, 'and so does deleting it again')
  t.equal(await codeOf(v.read(0, 2, 22)), 'NS_ERR_NOT_FOUND')
  t.ok(v.status().garbageBytes >= DATA.length, 'with both deleted, the bytes are garbage that compaction can reclaim')
  await v.close()

  for (const how of ['reopened', 'index rebuilt from .dat']) {
    if (how !== 'reopened') await rm(idxPath(dir, 1))
    const again = await openVolume(t, dir, false)
    t.equal(await codeOf(again.read(0, 1, 11)), 'NS_ERR_NOT_FOUND', `${how}: the original stays deleted`)
    t.equal(await codeOf(again.read(0, 2, 22)), 'NS_ERR_NOT_FOUND', `${how}: the link stays deleted`)
    t.same(await again.delete(0, 1, 11), { size: DATA.length }, `${how}: a repeated delete answers the size`)
    await again.close()
  }
})

t.test('undelete within the grace period restores a file or a link; past it, it is refused', async (t) => {
  const dir = await tempDir(t)
  let now = CLOCK_MS
  const over = { now: () => now }
  const v = await openVolume(t, dir, true, over)
  await v.write({ ...ORIGINAL, data: DATA, md5: md5(DATA) })
  await v.link({ cookie: 22, keyHi: 0, keyLo: 2, name: 'copy.jpg', md5: md5(DATA), target: ORIGINAL })
  const small = { cookie: 3, keyHi: 7, keyLo: 3, data: Buffer.from('small file'), name: 'a.txt' }
  await v.write(small)
  for (const [keyHi, keyLo, cookie] of [[0, 1, 11], [0, 2, 22], [7, 3, 3]] as const) await v.delete(keyHi, keyLo, cookie)
  const hour = 3600_000

  now += hour
  t.same(await v.undelete(0, 1, 11, 2 * hour), { size: DATA.length, undeleted: true }, 'the original comes back')
  const original = await v.read(0, 1, 11)
  t.ok(original.data.equals(DATA), 'with its bytes')
  t.equal(original.name, 'first.jpg', 'its name')
  t.equal(original.mime, 'image/jpeg', 'its type')
  t.equal(original.lastModifiedMs, ORIGINAL.lastModifiedMs, 'and its time')
  t.same(await v.undelete(0, 1, 11, 2 * hour), { size: DATA.length, undeleted: false }, 'undeleting a live file changes nothing')
  t.same(await v.undelete(0, 2, 22, 2 * hour), { size: DATA.length, undeleted: true }, 'a deleted link comes back')
  t.equal((await v.read(0, 2, 22)).name, 'copy.jpg', 'with its own name')
  t.equal(await codeOf(v.undelete(0, 9, 1, 2 * hour)), 'NS_ERR_NOT_FOUND', 'an unknown key has nothing to restore')
  t.equal(await codeOf(v.undelete(7, 3, 4, 2 * hour)), 'NS_ERR_NOT_FOUND', 'a wrong cookie answers like an unknown key')

  now += 2 * hour
  t.equal(await codeOf(v.undelete(7, 3, 3, 2 * hour)), 'NS_ERR_UNDELETE_EXPIRED', 'three hours after the delete, a two-hour grace has passed')
  t.equal(await codeOf(v.read(7, 3, 3)), 'NS_ERR_NOT_FOUND', 'and the file stays deleted')

  // A file deleted again after an undelete can be undeleted again.
  await v.delete(0, 1, 11)
  t.same(await v.undelete(0, 1, 11, 2 * hour), { size: DATA.length, undeleted: true })
  await v.close()

  for (const how of ['reopened', 'index rebuilt from .dat']) {
    if (how !== 'reopened') await rm(idxPath(dir, 1))
    const again = await openVolume(t, dir, false, over)
    t.ok((await again.read(0, 1, 11)).data.equals(DATA), `${how}: the undeleted original reads`)
    t.ok((await again.read(0, 2, 22)).data.equals(DATA), `${how}: the undeleted link reads`)
    t.equal(await codeOf(again.read(7, 3, 3)), 'NS_ERR_NOT_FOUND', `${how}: the file not undeleted stays deleted`)
    t.same(await again.undelete(7, 3, 3, 10 * hour), { size: small.data.length, undeleted: true }, `${how}: the tombstone still knows the deleted file`)
    t.ok((await again.read(7, 3, 3)).data.equals(small.data))
    await again.delete(7, 3, 3)
    await again.close()
  }
})
