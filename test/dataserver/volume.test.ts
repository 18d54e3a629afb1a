import { seededRandom } from '../helpers/random.js'
import t, { type Test } from 'tap'
import { readdir, stat } from 'node:fs/promises'
import { isNeedleError } from '../../src/common/errors.js'
import { IDX_ENTRY_SIZE, TOMBSTONE_LENGTH, SUPERBLOCK_SIZE, encodeNeedle, needleLength, BODY_FIXED_SIZE } from '../../src/common/format.js'
import { Volume, datPath, idxPath, type CreateVolumeOptions, type FsyncPolicy, type WriteInput } from '../../src/dataserver/volume.js'
import { CLOCK_MS, bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

/** Opens a volume and closes it when the test ends (closing twice is harmless). */
async function create(t: Test, dir: string, over: Partial<CreateVolumeOptions> = {}): Promise<Volume> {
  const v = await Volume.create(volumeOptions(dir, over))
  t.teardown(() => v.close())
  return v
}

async function reopen(t: Test, dir: string, over: Partial<CreateVolumeOptions> = {}): Promise<Volume> {
  const v = await Volume.open(volumeOptions(dir, over))
  t.teardown(() => v.close())
  return v
}

/** A small deterministic generator of unsigned 32-bit integers, for sizes and cookies. */
function rng(seed: number): () => number {
  const next = seededRandom(seed)
  return () => Math.floor(next() * 0x1_0000_0000)
}

function makeFiles(count: number, seed: number, sizeMax: number): WriteInput[] {
  const next = rng(seed)
  const files: WriteInput[] = []
  for (let i = 0; i < count; i++) {
    const size = i === 0 ? 0 : next() % (sizeMax + 1)
    const withMeta = i % 3 === 0
    files.push({
      cookie: next(),
      keyHi: i % 5 === 0 ? next() : 0,
      keyLo: i + 1,
      data: bytesFrom(size, seed * 1000 + i),
      ...(withMeta ? { name: `file-${i}-ü.bin`, mime: 'application/octet-stream', lastModifiedMs: CLOCK_MS - i, md5: bytesFrom(16, i) } : {}),
    })
  }
  return files
}

/** Counts the files that do not read back exactly as written. */
async function countMismatches(v: Volume, files: readonly WriteInput[]): Promise<string[]> {
  const wrong: string[] = []
  for (const f of files) {
    try {
      const n = await v.read(f.keyHi, f.keyLo, f.cookie)
      const ok =
        Buffer.compare(n.data, Buffer.from(f.data)) === 0 &&
        n.name === (f.name || undefined) &&
        n.mime === (f.mime || undefined) &&
        n.lastModifiedMs === f.lastModifiedMs &&
        (f.md5 === undefined ? n.md5 === undefined : n.md5 !== undefined && Buffer.compare(n.md5, Buffer.from(f.md5)) === 0) &&
        n.appendAtMs === CLOCK_MS &&
        !n.tombstone
      if (!ok) wrong.push(`key ${f.keyHi}:${f.keyLo} differs`)
    } catch (err) {
      wrong.push(`key ${f.keyHi}:${f.keyLo}: ${String(err)}`)
    }
  }
  return wrong
}

t.test('write, read, close, reopen: every file reads back byte-identical', async (t) => {
  const dir = await tempDir(t)
  const files = makeFiles(150, 1, 20_000)
  const v = await create(t, dir)
  for (const f of files) {
    const { size } = await v.write(f)
    if (size !== f.data.length) t.fail(`write of key ${f.keyLo} answered size ${size}`)
  }
  t.same(await countMismatches(v, files), [], 'before the restart')
  const expectedBytes = SUPERBLOCK_SIZE + files.reduce((n, f) => n + encodeNeedle(f, CLOCK_MS).length, 0)
  t.equal(v.datBytes, expectedBytes, '.dat holds the superblock and exactly the needles')
  t.equal(v.liveCount, files.length)
  await v.close()
  t.equal((await stat(datPath(dir, 1))).size, expectedBytes)
  t.equal((await stat(idxPath(dir, 1))).size, files.length * IDX_ENTRY_SIZE, 'one .idx entry per needle')

  const recovered: string[] = []
  const again = await reopen(t, dir, { onRecovery: (m) => recovered.push(m) })
  t.same(recovered, [], 'a clean shutdown needs no recovery')
  t.same(await countMismatches(again, files), [], 'after the restart')
  t.equal(again.datBytes, expectedBytes)
  t.equal(again.status().liveCount, files.length)
  t.equal(again.status().deletedCount, 0)
  t.equal(again.status().garbageBytes, 0)
  t.equal(again.status().placement, 0)
})

t.test('Volume.create refuses an existing volume; open checks the volume id', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { volumeId: 9, placement: 2 })
  t.equal(v.status().placement, 2)
  t.equal(await codeOf(Volume.create(volumeOptions(dir, { volumeId: 9 }))), 'NS_ERR_VOLUME_EXISTS')
  await v.close()
  t.same((await readdir(dir)).sort(), ['9.dat', '9.idx'], 'no temporary file is left behind')
  const { rename } = await import('node:fs/promises')
  await rename(datPath(dir, 9), datPath(dir, 10))
  t.equal(await codeOf(Volume.open(volumeOptions(dir, { volumeId: 10 }))), 'NS_ERR_CORRUPT_VOLUME', 'a .dat that names another volume')
  t.equal(await codeOf(Volume.open(volumeOptions(dir, { volumeId: 11 }))), 'NS_ERR_IO', 'a volume that does not exist')
})

t.test('Volume.create ignores a stale .idx left by an earlier volume of that id', async (t) => {
  const dir = await tempDir(t)
  const { writeFile } = await import('node:fs/promises')
  await writeFile(idxPath(dir, 1), bytesFrom(10 * IDX_ENTRY_SIZE, 3))
  const v = await create(t, dir)
  t.equal(v.liveCount, 0)
  t.equal((await stat(idxPath(dir, 1))).size, 0, '.idx starts empty')
  await v.write({ cookie: 1, keyHi: 0, keyLo: 1, data: bytesFrom(5, 1) })
  t.equal((await v.read(0, 1, 1)).data.length, 5)
})

t.test('a wrong cookie reads exactly like a missing key', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  await v.write({ cookie: 0x1234, keyHi: 0, keyLo: 7, data: bytesFrom(100, 1) })
  const errorOf = async (p: Promise<unknown>) => {
    try {
      await p
    } catch (err) {
      return err
    }
    return undefined
  }
  const wrong = await errorOf(v.read(0, 7, 0x1235))
  const missing = await errorOf(v.read(0, 8, 0x1234))
  t.ok(isNeedleError(wrong) && wrong.code === 'NS_ERR_NOT_FOUND', 'wrong cookie → NS_ERR_NOT_FOUND')
  t.ok(isNeedleError(missing) && missing.code === 'NS_ERR_NOT_FOUND', 'missing key → NS_ERR_NOT_FOUND')
  t.equal((wrong as Error).message, (missing as Error).message, 'same message, nothing tells them apart')
  t.equal((wrong as { statusCode: number }).statusCode, 404)
  t.equal((await v.read(0, 7, 0x1234)).data.length, 100, 'the right cookie still reads')
})

t.test('overwriting with the same cookie replaces the content', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  const first = { cookie: 5, keyHi: 1, keyLo: 2, data: bytesFrom(3000, 1), name: 'a.txt' }
  const second = { cookie: 5, keyHi: 1, keyLo: 2, data: bytesFrom(10, 2), mime: 'text/plain' }
  await v.write(first)
  const before = v.status()
  t.equal(before.garbageBytes, 0)
  await v.write(second)
  const after = v.status()
  t.same([...(await v.read(1, 2, 5)).data], [...second.data], 'the newest needle wins')
  t.equal((await v.read(1, 2, 5)).name, undefined, 'no field of the old needle survives')
  t.equal((await v.read(1, 2, 5)).mime, 'text/plain')
  t.equal(after.liveCount, 1)
  t.equal(after.garbageBytes, encodeNeedle(first, CLOCK_MS).length, 'the old needle became garbage')
  t.ok(after.garbageRatio > 0 && after.garbageRatio < 1)
  t.equal(after.liveBytes, encodeNeedle(second, CLOCK_MS).length)
  await v.close()
  const again = await reopen(t, dir)
  t.same([...(await again.read(1, 2, 5)).data], [...second.data], 'still the newest after a restart')
  t.same(again.status().garbageBytes, after.garbageBytes, 'garbage is the same after a restart')
})

t.test('overwriting with another cookie is refused and changes nothing', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  const f = { cookie: 5, keyHi: 0, keyLo: 2, data: bytesFrom(300, 1) }
  await v.write(f)
  const bytes = v.datBytes
  t.equal(await codeOf(v.write({ ...f, cookie: 6, data: bytesFrom(10, 2) })), 'NS_ERR_COOKIE_MISMATCH')
  t.equal(v.datBytes, bytes, 'nothing appended')
  t.same([...(await v.read(0, 2, 5)).data], [...f.data], 'the old content stays')
  t.equal(await codeOf(v.read(0, 2, 6)), 'NS_ERR_NOT_FOUND')
  await v.close()
  const again = await reopen(t, dir)
  t.same([...(await again.read(0, 2, 5)).data], [...f.data], 'and after a restart')
  t.equal(await codeOf(again.write({ ...f, cookie: 6 })), 'NS_ERR_COOKIE_MISMATCH', 'also after a restart')
})

t.test('concurrent writes of one new key with different cookies: only one cookie wins', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  const a = { cookie: 0xaaaa, keyHi: 0, keyLo: 42, data: bytesFrom(50, 1) }
  const b = { cookie: 0xbbbb, keyHi: 0, keyLo: 42, data: bytesFrom(60, 2) }
  const results = await Promise.allSettled([v.write(a), v.write(b)])
  const ok = results.filter((r) => r.status === 'fulfilled').length
  const refused = results.filter((r) => r.status === 'rejected' && isNeedleError(r.reason) && r.reason.code === 'NS_ERR_COOKIE_MISMATCH').length
  t.equal(ok, 1, 'exactly one write is acknowledged')
  t.equal(refused, 1, 'the other is refused with NS_ERR_COOKIE_MISMATCH')
  // Whatever was acknowledged must stay readable: an acknowledged write never turns into a 404.
  const readable = await Promise.all([a, b].map(async (f, i) => (results[i]!.status === 'fulfilled' ? codeOf(v.read(0, 42, f.cookie)) : 'not acknowledged')))
  t.notOk(readable.includes('NS_ERR_NOT_FOUND'), `every acknowledged write stays readable: ${readable.join(', ')}`)
})

t.test('deletes are idempotent and survive a restart', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  const f = { cookie: 9, keyHi: 0xffff_ffff, keyLo: 0xffff_fffe, data: bytesFrom(1234, 1) }
  const other = { cookie: 10, keyHi: 0, keyLo: 1, data: bytesFrom(10, 2) }
  await v.write(f)
  await v.write(other)
  t.same(await v.delete(0, 12345, 1), { size: 0 }, 'an unknown key answers size 0')
  const beforeWrongCookie = v.datBytes
  t.same(await v.delete(f.keyHi, f.keyLo, 8), { size: 0 }, 'a wrong cookie answers like an unknown key')
  t.equal(v.datBytes, beforeWrongCookie, 'and appends nothing')
  t.equal((await v.read(f.keyHi, f.keyLo, 9)).data.length, 1234, 'a delete with a wrong cookie deletes nothing')

  t.same(await v.delete(f.keyHi, f.keyLo, 9), { size: 1234 }, 'the first delete answers the size')
  t.equal(v.datBytes, beforeWrongCookie + TOMBSTONE_LENGTH, 'one tombstone appended')
  t.equal(await codeOf(v.read(f.keyHi, f.keyLo, 9)), 'NS_ERR_NOT_FOUND', 'a deleted key is not found')
  t.same(await v.delete(f.keyHi, f.keyLo, 9), { size: 1234 }, 'a second delete answers the original size')
  t.equal(v.datBytes, beforeWrongCookie + TOMBSTONE_LENGTH, 'and appends nothing')
  const s = v.status()
  t.equal(s.liveCount, 1)
  t.equal(s.deletedCount, 1)
  t.equal(s.liveBytes, encodeNeedle(other, CLOCK_MS).length)
  t.equal(s.garbageBytes, encodeNeedle(f, CLOCK_MS).length + TOMBSTONE_LENGTH, 'the deleted needle and its tombstone are garbage')

  await v.close()
  const again = await reopen(t, dir)
  t.equal(await codeOf(again.read(f.keyHi, f.keyLo, 9)), 'NS_ERR_NOT_FOUND', 'still deleted after a restart')
  t.same(await again.delete(f.keyHi, f.keyLo, 9), { size: 1234 }, 'a repeated delete after a restart answers the size')
  t.equal(again.status().deletedCount, 1)
  t.equal(again.status().liveCount, 1)
  t.equal((await again.read(0, 1, 10)).data.length, 10, 'the other file is untouched')

  // Writing a deleted key again with its cookie brings it back with the new content.
  await again.write({ ...f, data: bytesFrom(7, 3) })
  t.same([...(await again.read(f.keyHi, f.keyLo, 9)).data], [...bytesFrom(7, 3)])
  t.equal(again.status().deletedCount, 0)
  t.equal(again.status().liveCount, 2)
})

t.test('status() counts live and deleted files and garbage', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  const empty = v.status()
  t.same(
    { id: empty.id, datBytes: empty.datBytes, liveCount: empty.liveCount, deletedCount: empty.deletedCount, garbageRatio: empty.garbageRatio, readOnly: empty.readOnly },
    { id: 1, datBytes: SUPERBLOCK_SIZE, liveCount: 0, deletedCount: 0, garbageRatio: 0, readOnly: false },
  )
  const files = makeFiles(40, 2, 2000)
  for (const f of files) await v.write(f)
  for (const f of files.slice(0, 10)) await v.delete(f.keyHi, f.keyLo, f.cookie)
  const s = v.status()
  t.equal(s.liveCount, 30)
  t.equal(s.deletedCount, 10)
  const live = files.slice(10).reduce((n, f) => n + encodeNeedle(f, CLOCK_MS).length, 0)
  t.equal(s.liveBytes, live)
  t.equal(s.garbageBytes, s.datBytes - SUPERBLOCK_SIZE - live)
  t.equal(s.garbageRatio, s.garbageBytes / (s.datBytes - SUPERBLOCK_SIZE))
  await v.close()
  const again = await reopen(t, dir)
  t.same(again.status(), s, 'the same status after a restart')
})

t.test('a full volume turns read-only, refuses writes and still serves reads', async (t) => {
  const dir = await tempDir(t)
  const size = 1000
  const perNeedle = needleLength(BODY_FIXED_SIZE + size)
  const volumeBytesMax = SUPERBLOCK_SIZE + 3 * perNeedle + perNeedle / 2
  const v = await create(t, dir, { volumeBytesMax })
  const files = [1, 2, 3].map((k) => ({ cookie: k, keyHi: 0, keyLo: k, data: bytesFrom(size, k) }))
  for (const f of files) await v.write(f)
  t.equal(v.readOnly, false, 'room left for half a needle')
  t.equal(await codeOf(v.write({ cookie: 4, keyHi: 0, keyLo: 4, data: bytesFrom(size, 4) })), 'NS_ERR_VOLUME_READ_ONLY', 'the write that does not fit')
  t.equal(v.readOnly, true)
  t.equal(v.status().readOnly, true)
  t.equal(await codeOf(v.write({ cookie: 5, keyHi: 0, keyLo: 5, data: new Uint8Array(0) })), 'NS_ERR_VOLUME_READ_ONLY', 'even a small one')
  t.equal(await codeOf(v.read(0, 4, 4)), 'NS_ERR_NOT_FOUND', 'the refused write left nothing')
  t.same(await countMismatches(v, files), [], 'reads still work')
  t.equal(v.datBytes, SUPERBLOCK_SIZE + 3 * perNeedle)
  v.setReadOnly(false)
  t.equal(v.readOnly, false, 'an operator may allow writes again while there is room')
  await v.close()
  const again = await reopen(t, dir, { volumeBytesMax: SUPERBLOCK_SIZE + 3 * perNeedle })
  t.equal(again.readOnly, true, 'a volume at its limit opens read-only')
  again.setReadOnly(false)
  t.equal(again.readOnly, true, 'and stays so: it has no room')
  t.equal(await codeOf(again.write({ cookie: 6, keyHi: 0, keyLo: 6, data: new Uint8Array(1) })), 'NS_ERR_VOLUME_READ_ONLY')
  t.same(await countMismatches(again, files), [])
})

t.test('a volume full by size still takes deletes, so its space can be reclaimed', async (t) => {
  const dir = await tempDir(t)
  const perNeedle = needleLength(BODY_FIXED_SIZE + 500)
  const v = await create(t, dir, { volumeBytesMax: SUPERBLOCK_SIZE + 2 * perNeedle })
  await v.write({ cookie: 1, keyHi: 0, keyLo: 1, data: bytesFrom(500, 1) })
  await v.write({ cookie: 2, keyHi: 0, keyLo: 2, data: bytesFrom(500, 2) })
  t.equal(v.readOnly, true, 'full')
  t.same(await v.delete(0, 1, 1).catch((err: unknown) => (isNeedleError(err) ? err.code : String(err))), { size: 500 }, 'a delete in a full volume succeeds')
  t.equal(await codeOf(v.read(0, 1, 1)), 'NS_ERR_NOT_FOUND', 'and the file is gone')
  t.ok(v.status().garbageBytes > 0, 'its bytes are garbage for compaction')
})

t.test('a write that exactly fills the volume lands and turns it read-only', async (t) => {
  const dir = await tempDir(t)
  const perNeedle = needleLength(BODY_FIXED_SIZE + 100)
  const v = await create(t, dir, { volumeBytesMax: SUPERBLOCK_SIZE + 2 * perNeedle })
  await v.write({ cookie: 1, keyHi: 0, keyLo: 1, data: bytesFrom(100, 1) })
  t.equal(v.readOnly, false)
  await v.write({ cookie: 2, keyHi: 0, keyLo: 2, data: bytesFrom(100, 2) })
  t.equal(v.readOnly, true)
  t.equal((await v.read(0, 2, 2)).data.length, 100)
})

t.test('500 concurrent writes all land (group commit) and survive a restart', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { writeBatchBytesMax: 64 * 1024 })
  const files = makeFiles(500, 3, 4000)
  const sizes = await Promise.all(files.map((f) => v.write(f)))
  t.same(sizes.map((s) => s.size), files.map((f) => f.data.length))
  t.equal(v.liveCount, 500)
  t.same(await countMismatches(v, files), [])
  const expectedBytes = SUPERBLOCK_SIZE + files.reduce((n, f) => n + encodeNeedle(f, CLOCK_MS).length, 0)
  t.equal(v.datBytes, expectedBytes, 'no needle written twice, none lost')
  await v.close()
  t.equal((await stat(idxPath(dir, 1))).size, 500 * IDX_ENTRY_SIZE)
  const recovered: string[] = []
  const again = await reopen(t, dir, { onRecovery: (m) => recovered.push(m) })
  t.same(recovered, [], '.idx agrees with .dat')
  t.same(await countMismatches(again, files), [])
})

t.test('one fsync per write (writeBatchMax 1) and every read through the pool', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { writeBatchMax: 1, syncReadBytesMax: 0 })
  const files = makeFiles(60, 9, 3000)
  await Promise.all(files.map((f) => v.write(f)))
  t.same(await countMismatches(v, files), [])
  await v.close()
  const again = await reopen(t, dir, { syncReadBytesMax: 1 << 20 })
  t.same(await countMismatches(again, files), [], 'and every read synchronous after a restart')
})

t.test('reads run concurrently with writes and see only whole needles', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { writeBatchBytesMax: 64 * 1024 })
  const old = makeFiles(100, 4, 5000)
  for (const f of old) await v.write(f)
  const fresh = makeFiles(200, 5, 5000).map((f) => ({ ...f, keyLo: f.keyLo + 10_000 }))
  const ops: Promise<string>[] = []
  for (let i = 0; i < fresh.length; i++) {
    ops.push(v.write(fresh[i]!).then(() => 'ok'))
    const o = old[i % old.length]!
    ops.push(
      v.read(o.keyHi, o.keyLo, o.cookie).then((n) => (Buffer.compare(n.data, Buffer.from(o.data)) === 0 ? 'ok' : `read ${o.keyLo} wrong`)),
    )
    // A read of a key being written sees either nothing or the whole file.
    const f = fresh[Math.max(0, i - 3)]!
    ops.push(
      v.read(f.keyHi, f.keyLo, f.cookie).then(
        (n) => (Buffer.compare(n.data, Buffer.from(f.data)) === 0 ? 'ok' : `read ${f.keyLo} wrong`),
        (err) => (isNeedleError(err) && err.code === 'NS_ERR_NOT_FOUND' ? 'ok' : String(err)),
      ),
    )
  }
  const results = await Promise.all(ops)
  t.same(results.filter((r) => r !== 'ok'), [])
  t.same(await countMismatches(v, [...old, ...fresh]), [])
})

for (const fsync of ['interval', 'none'] as FsyncPolicy[]) {
  t.test(`fsync '${fsync}' round trips`, async (t) => {
    const dir = await tempDir(t)
    const v = await create(t, dir, { fsync, fsyncIntervalMs: 5 })
    const files = makeFiles(120, 6, 3000)
    await Promise.all(files.slice(0, 60).map((f) => v.write(f)))
    for (const f of files.slice(60)) await v.write(f)
    await v.delete(files[1]!.keyHi, files[1]!.keyLo, files[1]!.cookie)
    t.same(await countMismatches(v, files.filter((_, i) => i !== 1)), [])
    await v.close()
    const again = await reopen(t, dir, { fsync })
    t.same(await countMismatches(again, files.filter((_, i) => i !== 1)), [])
    t.equal(await codeOf(again.read(files[1]!.keyHi, files[1]!.keyLo, files[1]!.cookie)), 'NS_ERR_NOT_FOUND')
  })
}

t.test('writes past writeQueueMax are refused with NS_ERR_OVERLOADED', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { writeQueueMax: 8 })
  const files = makeFiles(50, 7, 100)
  const results = await Promise.allSettled(files.map((f) => v.write(f)))
  const accepted = files.filter((_, i) => results[i]!.status === 'fulfilled')
  const overloaded = results.filter((r) => r.status === 'rejected' && isNeedleError(r.reason) && r.reason.code === 'NS_ERR_OVERLOADED')
  t.ok(accepted.length >= 8, `at least the queue's worth lands (${accepted.length})`)
  t.ok(overloaded.length > 0, `some writes are refused (${overloaded.length})`)
  t.equal(accepted.length + overloaded.length, files.length, 'every write either lands or is refused as overloaded')
  t.same(await countMismatches(v, accepted), [], 'the accepted writes are readable')
  const refused = files.filter((_, i) => results[i]!.status === 'rejected')
  const leaked = (await Promise.all(refused.map((f) => codeOf(v.read(f.keyHi, f.keyLo, f.cookie))))).filter((c) => c !== 'NS_ERR_NOT_FOUND')
  t.same(leaked, [], 'a refused write leaves nothing')
  // Once the queue drains, writes are accepted again.
  await v.write({ cookie: 1, keyHi: 0, keyLo: 999, data: bytesFrom(5, 1) })
  t.equal((await v.read(0, 999, 1)).data.length, 5)
})

t.test('operations after close fail with NS_ERR_VOLUME_CLOSED', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir)
  await v.write({ cookie: 1, keyHi: 0, keyLo: 1, data: bytesFrom(5, 1) })
  await v.close()
  await v.close()
  t.pass('close is idempotent')
  t.equal(await codeOf(v.read(0, 1, 1)), 'NS_ERR_VOLUME_CLOSED')
  t.equal(await codeOf(v.write({ cookie: 1, keyHi: 0, keyLo: 2, data: bytesFrom(5, 2) })), 'NS_ERR_VOLUME_CLOSED')
  t.equal(await codeOf(v.delete(0, 1, 1)), 'NS_ERR_VOLUME_CLOSED')
})

t.test('writes racing a close either land or fail with NS_ERR_VOLUME_CLOSED', async (t) => {
  const dir = await tempDir(t)
  const v = await create(t, dir, { writeBatchBytesMax: 64 * 1024 })
  const files = makeFiles(100, 8, 3000)
  const pending = files.map((f) => v.write(f))
  const closing = v.close()
  const results = await Promise.allSettled(pending)
  await closing
  const odd = results.filter((r) => r.status === 'rejected' && !(isNeedleError(r.reason) && r.reason.code === 'NS_ERR_VOLUME_CLOSED'))
  t.same(odd.map((r) => String((r as PromiseRejectedResult).reason)), [], 'no other failure')
  const acknowledged = files.filter((_, i) => results[i]!.status === 'fulfilled')
  const again = await reopen(t, dir)
  t.same(await countMismatches(again, acknowledged), [], 'every acknowledged write survives')
  t.equal(again.liveCount, acknowledged.length, 'and nothing else')
})
