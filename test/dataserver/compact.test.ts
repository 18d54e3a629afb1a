/**
 * Compaction of one volume: what stays (live files, the bytes live links share, tombstones in
 * their undelete grace with what they deleted) and what goes; while writes, deletes and reads
 * go on; and the state a stop at every step of the commit leaves.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { readdir, rm, stat } from 'node:fs/promises'
import { COMPACT_STEPS, Volume, datPath, idxPath, type CompactStep, type CreateVolumeOptions, type WriteInput } from '../../src/dataserver/volume.js'
import { CLOCK_MS, bytesFrom, codeOf, tempDir, volumeOptions } from '../helpers/volume.js'

const md5 = (data: Uint8Array) => createHash('md5').update(data).digest()
const HOUR = 3600_000

async function openVolume(t: Test, dir: string, create: boolean, over: Partial<CreateVolumeOptions> = {}): Promise<Volume> {
  const v = create ? await Volume.create(volumeOptions(dir, over)) : await Volume.open(volumeOptions(dir, over))
  t.teardown(() => v.close())
  return v
}

function file(keyLo: number, size: number, seed = keyLo): WriteInput {
  const data = bytesFrom(size, seed)
  return { cookie: 1000 + keyLo, keyHi: 0, keyLo, data, name: `f${keyLo}.bin`, mime: 'application/x-test', lastModifiedMs: CLOCK_MS - keyLo, md5: md5(data) }
}

/** What each key must read as: its bytes, or NS_ERR_NOT_FOUND. */
type Expect = Map<number, Buffer | 'gone'>

async function check(t: Test, v: Volume, expect: Expect, label: string): Promise<void> {
  const wrong: string[] = []
  for (const [keyLo, want] of expect) {
    if (want === 'gone') {
      const code = await codeOf(v.read(0, keyLo, 1000 + keyLo))
      if (code !== 'NS_ERR_NOT_FOUND') wrong.push(`${keyLo}: ${code}, expected not found`)
    } else {
      try {
        const got = await v.read(0, keyLo, 1000 + keyLo)
        if (!got.data.equals(want)) wrong.push(`${keyLo}: other bytes`)
      } catch (err) {
        wrong.push(`${keyLo}: ${(err as Error).message}`)
      }
    }
  }
  t.same(wrong, [], `${label}: every file reads as expected (${expect.size} keys)`)
}

/** A volume with live files, overwritten ones, deletes old and recent, and dedup links. */
async function populate(v: Volume, setNow: (ms: number) => void): Promise<Expect> {
  const expect: Expect = new Map()
  setNow(CLOCK_MS)
  for (let k = 1; k <= 60; k++) {
    const f = file(k, 200 + k * 97)
    await v.write(f)
    expect.set(k, Buffer.from(f.data))
  }
  // Overwrites: the old needles become garbage.
  for (let k = 1; k <= 10; k++) {
    const f = file(k, 3000, k + 500)
    await v.write(f)
    expect.set(k, Buffer.from(f.data))
  }
  // Links to files 20 and 21; then 20 (the stored copy) is deleted long ago: the link keeps its bytes.
  for (const [k, target] of [[101, 20], [102, 21]] as const) {
    const t = file(target, 200 + target * 97)
    await v.link({ cookie: 1000 + k, keyHi: 0, keyLo: k, md5: md5(t.data), target: { keyHi: 0, keyLo: target, cookie: 1000 + target } })
    expect.set(k, Buffer.from(t.data))
  }
  // Deletes two days ago (past a one-day grace) and now (inside it).
  setNow(CLOCK_MS + HOUR)
  for (let k = 20; k <= 30; k++) {
    await v.delete(0, k, 1000 + k)
    expect.set(k, 'gone')
  }
  setNow(CLOCK_MS + 49 * HOUR)
  for (let k = 31; k <= 35; k++) {
    await v.delete(0, k, 1000 + k)
    expect.set(k, 'gone')
  }
  return expect
}

t.test('compaction keeps every live file and drops the garbage; undelete works within the grace', async (t) => {
  const dir = await tempDir(t)
  let now = CLOCK_MS
  const over = { now: () => now }
  const v = await openVolume(t, dir, true, over)
  const expect = await populate(v, (ms) => (now = ms))
  const before = v.status()
  await check(t, v, expect, 'before')

  const result = await v.compact({ graceMs: 24 * HOUR })
  t.equal(result.beforeBytes, before.datBytes)
  t.ok(result.afterBytes < before.datBytes, `${before.datBytes} → ${result.afterBytes} bytes`)
  t.equal(result.revision, 1, 'the compaction revision counts up')
  const after = v.status()
  t.equal(after.liveCount, before.liveCount, 'as many live files')
  t.equal(after.compactRevision, 1)
  t.ok(after.garbageBytes < before.garbageBytes, `garbage ${before.garbageBytes} → ${after.garbageBytes}`)
  await check(t, v, expect, 'after')
  t.ok((await v.read(0, 101, 1101)).data.equals(file(20, 200 + 20 * 97).data), 'a link whose stored copy was deleted long ago still reads')
  t.same(await v.delete(0, 33, 1033), { size: 200 + 33 * 97 }, 'a recent delete still knows the size')
  t.same(await v.undelete(0, 33, 1033, 24 * HOUR), { size: 200 + 33 * 97, undeleted: true }, 'a recent delete can be undone after compaction')
  expect.set(33, Buffer.from(file(33, 200 + 33 * 97).data))
  t.equal(await codeOf(v.undelete(0, 25, 1025, 24 * HOUR)), 'NS_ERR_NOT_FOUND', 'an old delete cannot: compaction removed it for good')

  // New writes land after the compacted needles, and a second compaction keeps everything.
  const late = file(200, 5000)
  await v.write(late)
  expect.set(200, Buffer.from(late.data))
  await v.compact({ graceMs: 24 * HOUR })
  await check(t, v, expect, 'after a second compaction')
  await v.close()

  for (const how of ['reopened', 'index rebuilt from .dat']) {
    if (how !== 'reopened') await rm(idxPath(dir, 1))
    const again = await openVolume(t, dir, false, over)
    await check(t, again, expect, how)
    t.equal(again.status().compactRevision, 2, `${how}: revision 2`)
    await again.close()
  }
  t.same((await readdir(dir)).sort(), ['1.dat', '1.idx'], 'no compaction files are left')
})

t.test('compaction while writes, overwrites, deletes and reads go on', async (t) => {
  const dir = await tempDir(t)
  const v = await openVolume(t, dir, true, { now: Date.now, volumeBytesMax: 1024 * 1024 * 1024 })
  const expect: Expect = new Map()
  for (let k = 1; k <= 400; k++) {
    const f = file(k, 4000)
    await v.write(f)
    expect.set(k, Buffer.from(f.data))
  }
  for (let k = 1; k <= 200; k++) {
    await v.delete(0, k, 1000 + k)
    expect.set(k, 'gone')
  }
  // Slow enough (1 MiB/s over ~1.6 MB of needles) that the traffic below overlaps it.
  const compaction = v.compact({ graceMs: 0, bytesPerSecond: 1024 * 1024 })
  let stop = false
  const failures: string[] = []
  const traffic = (async () => {
    let k = 1000
    while (!stop) {
      k++
      const f = file(k, 3000)
      await v.write(f)
      expect.set(k, Buffer.from(f.data))
      const victim = 201 + (k % 200)
      if (expect.get(victim) !== 'gone') {
        if (k % 3 === 0) {
          await v.delete(0, victim, 1000 + victim)
          expect.set(victim, 'gone')
        } else {
          const o = file(victim, 2500, k)
          await v.write(o)
          expect.set(victim, Buffer.from(o.data))
        }
      }
      const probe = 201 + ((k * 7) % 200)
      const want = expect.get(probe)
      if (want !== 'gone' && want !== undefined) {
        const got = await v.read(0, probe, 1000 + probe).catch((err: Error) => err)
        // The probe may have been overwritten meanwhile; only damage or an error is a failure.
        if (got instanceof Error) failures.push(`read ${probe}: ${got.message}`)
      }
    }
  })()
  const result = await compaction
  stop = true
  await traffic
  t.same(failures, [], 'no read failed during the compaction')
  t.ok(result.ms > 200, `the compaction ran ${result.ms} ms alongside the traffic`)
  await check(t, v, expect, 'after an online compaction')
  await v.close()
  const again = await openVolume(t, dir, false, { now: Date.now, volumeBytesMax: 1024 * 1024 * 1024 })
  await check(t, again, expect, 'reopened')
})

t.test('a stop at every step of the commit: the old volume or the new, never a mix', async (t) => {
  for (const step of COMPACT_STEPS) {
    const dir = await tempDir(t)
    let now = CLOCK_MS
    const over = { now: () => now }
    const v = await Volume.create(volumeOptions(dir, over))
    const expect = await populate(v, (ms) => (now = ms))
    const sizeBefore = (await stat(datPath(dir, 1))).size
    // The fault stops the compaction where a crash would: the files stay as they are then.
    const crash = new Error(`stopped at ${step}`)
    const outcome = await v.compact({ graceMs: 24 * HOUR, fault: (at: CompactStep) => { if (at === step) throw crash } }).then(() => 'finished', (err: Error) => err.message)
    t.match(outcome, /stopped at/, `${step}: the compaction stopped`)
    await v.close().catch(() => {})
    const again = await Volume.open(volumeOptions(dir, over))
    await check(t, again, expect, `${step}: reopened`)
    const committed = COMPACT_STEPS.indexOf(step) >= COMPACT_STEPS.indexOf('marked')
    t.equal(again.status().compactRevision, committed ? 1 : 0, `${step}: ${committed ? 'rolled forward' : 'rolled back'}`)
    if (committed) t.ok(again.status().datBytes < sizeBefore, `${step}: the new, smaller files are in place`)
    t.same((await readdir(dir)).sort(), ['1.dat', '1.idx'], `${step}: no compaction files are left`)
    await again.close()
  }
})
