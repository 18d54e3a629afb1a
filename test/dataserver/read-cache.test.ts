/**
 * The read cache: bounded by bytes, second chance for entries read again, and never a way
 * around a read's checks (deletes, overwrites, a copy damaged in memory).
 */
import t from 'tap'
import { NEEDLE_HEADER_SIZE, BODY_FIXED_SIZE, SUPERBLOCK_SIZE, decodeNeedle, encodeNeedle, toUnits } from '../../src/common/format.js'
import { ReadCache } from '../../src/dataserver/read-cache.js'
import { Volume } from '../../src/dataserver/volume.js'
import { bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

function entry(size: number, seed: number) {
  const raw = encodeNeedle({ cookie: 1, keyHi: 0, keyLo: seed, data: bytesFrom(size, seed) }, 0)
  return { needle: decodeNeedle(raw), raw }
}

t.test('the cache stays within its byte budget and keeps what is read again', async (t) => {
  const cache = new ReadCache(16 * 1024)
  const v = cache.volumeId()
  t.equal(cache.admits(1024), true)
  t.equal(cache.admits(2048), false, 'a needle over 1/16 of the budget is not kept')
  for (let i = 1; i <= 40; i++) {
    cache.set(v, i, entry(900, i))
    if (cache.bytes > cache.bytesMax) t.fail(`over budget after ${i} entries: ${cache.bytes}`)
    // Entry 1 is read after every insertion: it must survive every sweep.
    t.ok(cache.get(v, 1), `the entry read again is still there after ${i} insertions`)
  }
  t.ok(cache.size < 40, `older entries were evicted (${cache.size} kept)`)
  t.equal(cache.get(v, 2), undefined, 'an entry never read again is gone')
  cache.set(v, 2, entry(2048, 2))
  t.equal(cache.get(v, 2), undefined, 'a needle too large is not kept')
  t.not(cache.volumeId(), v, 'every volume instance gets its own id')
})

t.test('reads through the cache keep every check of a read', async (t) => {
  const dir = await tempDir(t)
  const cache = new ReadCache(1024 * 1024)
  const volume = await Volume.create(volumeOptions(dir, { readCache: cache, syncReadBytesMax: 64 * 1024 }))
  t.teardown(() => volume.close())
  const data = bytesFrom(5000, 7)
  await volume.write({ cookie: 9, keyHi: 0, keyLo: 1, data })
  const first = await volume.read(0, 1, 9)
  t.ok(first.data.equals(data))
  t.equal(cache.size, 1, 'the read is kept')
  const again = await volume.read(0, 1, 9)
  t.equal(again, first, 'the second read is served from memory')
  t.equal(await codeOf(volume.read(0, 1, 8)), 'NS_ERR_NOT_FOUND', 'a wrong cookie still answers 404')

  // A byte flipped in memory: the hit is refused, and the next read goes back to the disk.
  const kept = cache.get(1, toUnits(SUPERBLOCK_SIZE))
  t.ok(kept, 'the entry is keyed by the volume instance and the offset')
  kept!.raw[NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + 100]! ^= 0x40
  t.equal(await codeOf(volume.read(0, 1, 9)), 'NS_ERR_CORRUPT_NEEDLE', 'a damaged copy in memory is never served')
  const fresh = await volume.read(0, 1, 9)
  t.ok(fresh.data.equals(data), 'the next read comes from the disk, intact')

  // An overwrite and a delete are seen at once: the index is asked before the cache.
  const newer = bytesFrom(3000, 8)
  await volume.write({ cookie: 9, keyHi: 0, keyLo: 1, data: newer })
  t.ok((await volume.read(0, 1, 9)).data.equals(newer), 'an overwrite is served at once')
  await volume.delete(0, 1, 9)
  t.equal(await codeOf(volume.read(0, 1, 9)), 'NS_ERR_NOT_FOUND', 'a deleted file is never served from memory')
})
