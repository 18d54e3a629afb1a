/**
 * The crash-recovery contract of a volume, on real files: a crash can leave a torn tail in
 * `.dat` or `.idx`, a missing or short `.idx`, or (bit rot) a damaged needle anywhere. Each test
 * builds the files a crash or a fault would leave, opens the volume and checks what a client
 * would see.
 */
import t from 'tap'
import { readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { isNeedleError } from '../../src/common/errors.js'
import {
  BODY_FIXED_SIZE,
  H_BODY_SIZE,
  H_COOKIE,
  H_KEY_LO,
  IDX_ENTRY_SIZE,
  IDX_TOMBSTONE_SIZE,
  NEEDLE_HEADER_SIZE,
  SB_CHECKSUM,
  SB_PLACEMENT,
  SUPERBLOCK_SIZE,
  encodeIdxEntry,
  encodeNeedle,
  toUnits,
  decodeSuperblock,
} from '../../src/common/format.js'
import { Store } from '../../src/dataserver/store.js'
import { Volume, datPath, idxPath, type CreateVolumeOptions, type WriteInput } from '../../src/dataserver/volume.js'
import { CLOCK_MS, bytesFrom, codeOf, tempDir, volumeDefaults, volumeOptions } from '../helpers/volume.js'

const VID = 1

/** What a volume must hold: live files with their content, and deleted keys. */
interface Expect {
  live: WriteInput[]
  deleted: WriteInput[]
}

/** Everything that differs from `expect` (an empty list when the volume holds exactly it). */
async function differences(v: Volume, expect: Expect): Promise<string[]> {
  const wrong: string[] = []
  for (const f of expect.live) {
    try {
      const n = await v.read(f.keyHi, f.keyLo, f.cookie)
      if (Buffer.compare(n.data, Buffer.from(f.data)) !== 0 || n.name !== (f.name || undefined)) wrong.push(`key ${f.keyLo}: other content`)
    } catch (err) {
      wrong.push(`key ${f.keyLo}: ${isNeedleError(err) ? err.code : String(err)}`)
    }
  }
  for (const f of expect.deleted) {
    const code = await codeOf(v.read(f.keyHi, f.keyLo, f.cookie))
    if (code !== 'NS_ERR_NOT_FOUND') wrong.push(`deleted key ${f.keyLo}: ${code}`)
  }
  if (v.liveCount !== expect.live.length) wrong.push(`liveCount ${v.liveCount}, expected ${expect.live.length}`)
  return wrong
}

function file(keyLo: number, size: number, extra: Partial<WriteInput> = {}): WriteInput {
  return { cookie: 0x1000 + keyLo, keyHi: keyLo % 4 === 0 ? 0xabcd : 0, keyLo, data: bytesFrom(size, keyLo), ...extra }
}

interface Base {
  dat: Buffer
  idx: Buffer
  expect: Expect
  /** Byte offset of each needle in `.dat`, in order. */
  offsets: number[]
  /** The volume's checksum seed, from its superblock: needles made by hand need it to be valid. */
  seed: bigint
}

/**
 * A volume of whole needles: files of many sizes, an overwrite (newest wins) and deletes
 * (tombstones), written through the engine and closed cleanly. Returns the bytes of its files.
 */
async function buildBase(dir: string, count = 14): Promise<Base> {
  const v = await Volume.create(volumeOptions(dir, { volumeId: VID }))
  const offsets: number[] = []
  const record = async (op: () => Promise<unknown>) => {
    const before = v.datBytes
    await op()
    if (v.datBytes > before) offsets.push(before)
  }
  const all: WriteInput[] = []
  for (let i = 1; i <= count; i++) {
    const f = file(i, [0, 1, 7, 8, 100, 1000, 3000, 5000][i % 8]!, i % 3 === 0 ? { name: `f${i}.bin`, mime: 'image/png' } : {})
    all.push(f)
    await record(() => v.write(f))
  }
  // Key 2 is overwritten (same cookie): the newer content must win on every path.
  const newer = file(2, 333, { cookie: all[1]!.cookie, data: bytesFrom(333, 999) })
  await record(() => v.write(newer))
  all[1] = newer
  const deleted = count >= 10 ? [all[2]!, all[6]!, all[9]!] : [all[2]!, all[3]!]
  for (const f of deleted) await record(() => v.delete(f.keyHi, f.keyLo, f.cookie))
  // A file written after the deletes, so tombstones sit in the middle of `.dat`.
  const last = file(100, 2000)
  await record(() => v.write(last))
  all.push(last)
  await v.close()
  return {
    dat: await readFile(datPath(dir, VID)),
    idx: await readFile(idxPath(dir, VID)),
    expect: { live: all.filter((f) => !deleted.includes(f)), deleted },
    offsets,
    seed: decodeSuperblock(await readFile(datPath(dir, VID))).checksumSeed,
  }
}

/** Writes the given `.dat` and `.idx` (or removes `.idx`) in place of the volume's files. */
async function install(dir: string, dat: Buffer, idx: Buffer | undefined): Promise<void> {
  await writeFile(datPath(dir, VID), dat)
  if (idx) await writeFile(idxPath(dir, VID), idx)
  else await rm(idxPath(dir, VID), { force: true })
}

async function open(dir: string, messages: string[] = [], over: Partial<CreateVolumeOptions> = {}): Promise<Volume> {
  return Volume.open(volumeOptions(dir, { volumeId: VID, onRecovery: (m) => messages.push(m), ...over }))
}

/** The torn-tail loops open hundreds of volumes; fsync adds only time there, not coverage. */
const FAST = { fsync: 'none' } as const

t.test('torn tail: every prefix of an appended needle is cut back', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  const entries = base.idx.length / IDX_ENTRY_SIZE
  const torn = file(500, 24, { name: 'torn.bin', mime: 'text/plain' })
  const tornBuf = encodeNeedle(torn, CLOCK_MS, base.seed)
  const tornEntry = encodeIdxEntry({ keyHi: torn.keyHi, keyLo: torn.keyLo, offset: toUnits(base.dat.length), size: tornBuf.readUInt32LE(H_BODY_SIZE) })
  const after = file(501, 77)
  const afterLength = encodeNeedle(after, CLOCK_MS).length
  const problems: string[] = []
  let silent = 0
  for (const idxVariant of ['no entry', 'whole entry', 'partial entry'] as const) {
    for (let length = 1; length <= tornBuf.length; length++) {
      // A partial `.idx` entry is independent of where `.dat` was torn: every partial size is
      // covered, against the torn header, the torn footer and a sample in between.
      if (idxVariant === 'partial entry' && length > 2 * IDX_ENTRY_SIZE && length < tornBuf.length - 2 * IDX_ENTRY_SIZE && length % 5 !== 0) continue
      const whole = length === tornBuf.length
      const partial = 1 + (length % (IDX_ENTRY_SIZE - 1))
      const idx =
        idxVariant === 'no entry' ? base.idx
        : idxVariant === 'whole entry' ? Buffer.concat([base.idx, tornEntry])
        : Buffer.concat([base.idx, tornEntry.subarray(0, partial)])
      const what = `${idxVariant}${idxVariant === 'partial entry' ? ` of ${partial} bytes` : ''}, ${length} of ${tornBuf.length} bytes`
      await install(dir, Buffer.concat([base.dat, tornBuf.subarray(0, length)]), idx)
      const messages: string[] = []
      const v = await open(dir, messages, FAST)
      try {
        const expect = whole ? { ...base.expect, live: [...base.expect.live, torn] } : base.expect
        for (const d of await differences(v, expect)) problems.push(`${what}: ${d}`)
        if (!whole) {
          const code = await codeOf(v.read(torn.keyHi, torn.keyLo, torn.cookie))
          if (code !== 'NS_ERR_NOT_FOUND') problems.push(`${what}: the torn needle reads ${code}`)
          if (v.datBytes !== base.dat.length) problems.push(`${what}: datBytes ${v.datBytes}, expected ${base.dat.length}`)
          if (messages.length === 0) silent++
        }
        const wantDat = base.dat.length + (whole ? tornBuf.length : 0)
        const datSize = (await stat(datPath(dir, VID))).size
        if (datSize !== wantDat) problems.push(`${what}: .dat is ${datSize} bytes, expected ${wantDat}`)
        const idxSize = (await stat(idxPath(dir, VID))).size
        const wantIdx = (entries + (whole ? 1 : 0)) * IDX_ENTRY_SIZE
        if (idxSize !== wantIdx) problems.push(`${what}: .idx is ${idxSize} bytes, expected ${wantIdx}`)
        // The next write lands right after the last whole needle and survives a restart.
        await v.write(after)
      } finally {
        await v.close()
      }
      const again = await open(dir, [], FAST)
      try {
        const expect = { ...base.expect, live: [...base.expect.live, ...(whole ? [torn] : []), after] }
        for (const d of await differences(again, expect)) problems.push(`${what}, after a write and a restart: ${d}`)
        const wantDat = base.dat.length + (whole ? tornBuf.length : 0) + afterLength
        if (again.datBytes !== wantDat) problems.push(`${what}, after a write and a restart: datBytes ${again.datBytes}, expected ${wantDat}`)
      } finally {
        await again.close()
      }
    }
  }
  t.same(problems.slice(0, 20), [], `${problems.length} problems`)
  t.equal(silent, 0, 'every torn tail is reported through onRecovery')
})

t.test('torn tail: a torn tombstone leaves the file alive', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir, 6)
  const victim = base.expect.live[0]!
  const ref = { offset: toUnits(SUPERBLOCK_SIZE), bodySize: BODY_FIXED_SIZE + victim.data.length, dataSize: victim.data.length, keyHi: victim.keyHi, keyLo: victim.keyLo, cookie: victim.cookie }
  const tomb = encodeNeedle({ cookie: victim.cookie, keyHi: victim.keyHi, keyLo: victim.keyLo, data: new Uint8Array(0), tombstone: true, ref }, CLOCK_MS, base.seed)
  const tombEntry = encodeIdxEntry({ keyHi: victim.keyHi, keyLo: victim.keyLo, offset: toUnits(base.dat.length), size: IDX_TOMBSTONE_SIZE })
  const problems: string[] = []
  for (const withEntry of [false, true]) {
    for (let length = 1; length <= tomb.length; length++) {
      const whole = length === tomb.length
      await install(dir, Buffer.concat([base.dat, tomb.subarray(0, length)]), withEntry ? Buffer.concat([base.idx, tombEntry]) : base.idx)
      const v = await open(dir, [], FAST)
      try {
        const expect = whole
          ? { live: base.expect.live.slice(1), deleted: [...base.expect.deleted, victim] }
          : base.expect
        for (const d of await differences(v, expect)) problems.push(`${withEntry ? 'with' : 'without'} entry, ${length} bytes: ${d}`)
        const status = v.status()
        if (status.deletedCount !== expect.deleted.length) problems.push(`${length} bytes: deletedCount ${status.deletedCount}`)
      } finally {
        await v.close()
      }
    }
  }
  t.same(problems.slice(0, 20), [], `${problems.length} problems`)
})

t.test('a missing .idx is rebuilt from .dat', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  await install(dir, base.dat, undefined)
  const messages: string[] = []
  const v = await open(dir, messages)
  t.same(await differences(v, base.expect), [], 'every file and every delete')
  t.equal(v.status().deletedCount, base.expect.deleted.length)
  t.ok(messages.length > 0, 'the rebuild is reported')
  await v.close()
  t.equal((await stat(idxPath(dir, VID))).size, base.idx.length, '.idx recreated with one entry per needle')
  t.same(await readFile(idxPath(dir, VID)), base.idx, '.idx is the same as the one the writes made')
  t.equal((await stat(datPath(dir, VID))).size, base.dat.length, '.dat untouched')
  const quiet: string[] = []
  const again = await open(dir, quiet)
  t.same(quiet, [], 'the next start needs no recovery')
  t.same(await differences(again, base.expect), [])
  await again.close()
})

t.test('a short .idx: needles past its last entry are re-indexed from .dat', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  const entries = base.idx.length / IDX_ENTRY_SIZE
  t.equal(entries, base.offsets.length, 'one entry per needle')
  const problems: string[] = []
  for (let bytes = 0; bytes <= base.idx.length; bytes += bytes % IDX_ENTRY_SIZE === 0 ? 5 : IDX_ENTRY_SIZE - (bytes % IDX_ENTRY_SIZE)) {
    await install(dir, base.dat, base.idx.subarray(0, bytes))
    const v = await open(dir)
    try {
      for (const d of await differences(v, base.expect)) problems.push(`.idx cut to ${bytes} bytes: ${d}`)
      if (v.status().deletedCount !== base.expect.deleted.length) problems.push(`.idx cut to ${bytes} bytes: deletedCount ${v.status().deletedCount}`)
    } finally {
      await v.close()
    }
    const idx = await readFile(idxPath(dir, VID))
    if (!idx.equals(base.idx)) problems.push(`.idx cut to ${bytes} bytes: not restored (${idx.length} bytes)`)
    if ((await stat(datPath(dir, VID))).size !== base.dat.length) problems.push(`.idx cut to ${bytes} bytes: .dat changed size`)
  }
  t.same(problems, [])
})

t.test('.idx with garbage entries is ignored past the garbage and rebuilt', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  const beyond = (n: number) =>
    Buffer.concat(
      Array.from({ length: n }, (_, i) =>
        encodeIdxEntry({ keyHi: 0, keyLo: 9000 + i, offset: toUnits(base.dat.length) + 8 * (i + 1), size: 100 + i }),
      ),
    )
  const cases: Array<[string, Buffer]> = [
    ['garbage entries appended (offsets beyond .dat)', Buffer.concat([base.idx, beyond(3)])],
    ['the last entries replaced by garbage', Buffer.concat([base.idx.subarray(0, base.idx.length - 4 * IDX_ENTRY_SIZE), beyond(4)])],
    ['random bytes only', bytesFrom(base.idx.length, 77)],
    ['an entry whose offset is in the middle of a needle', Buffer.concat([base.idx.subarray(0, 3 * IDX_ENTRY_SIZE), encodeIdxEntry({ keyHi: 0, keyLo: 1, offset: toUnits(base.offsets[3]!) + 1, size: 50 }), base.idx.subarray(4 * IDX_ENTRY_SIZE)])],
    ['an entry whose size is past the end of .dat', Buffer.concat([base.idx, encodeIdxEntry({ keyHi: 0, keyLo: 1, offset: toUnits(base.dat.length), size: 0x7fff_0000 })])],
  ]
  for (const [what, idx] of cases) {
    await install(dir, base.dat, idx)
    const messages: string[] = []
    const v = await open(dir, messages)
    try {
      t.same(await differences(v, base.expect), [], what)
      t.equal(await codeOf(v.read(0, 9000, 0)), 'NS_ERR_NOT_FOUND', `${what}: no garbage key`)
      t.ok(messages.length > 0, `${what}: reported`)
    } finally {
      await v.close()
    }
    t.same(await readFile(idxPath(dir, VID)), base.idx, `${what}: .idx rebuilt`)
    t.equal((await stat(datPath(dir, VID))).size, base.dat.length, `${what}: .dat untouched`)
  }
})

t.test('a damaged needle in the middle is never served and never cuts off the needles after it', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  // The 5th needle: file 5 (1000 bytes, no name), with needles (and tombstones) after it.
  const at = base.offsets[4]!
  const victim = file(5, 1000)
  t.same(base.dat.subarray(at, at + encodeNeedle(victim, CLOCK_MS).length), encodeNeedle(victim, CLOCK_MS, base.seed), 'the 5th needle is file 5')
  const rest: Expect = { live: base.expect.live.filter((f) => f.keyLo !== 5), deleted: base.expect.deleted }
  const where: Array<[string, number]> = [
    ['a data byte', NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + 500],
    ['the first data byte', NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE],
    ['the cookie', H_COOKIE],
    ['the key', H_KEY_LO],
    ['the body size', H_BODY_SIZE],
    ['the body size, high byte', H_BODY_SIZE + 3],
    ['the flags', NEEDLE_HEADER_SIZE],
    ['the checksum', NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + 1000 + 8],
  ]
  for (const [what, offset] of where) {
    const dat = Buffer.from(base.dat)
    dat[at + offset] ^= 0x40
    // With its .idx, the damaged needle is found and refused.
    await install(dir, dat, base.idx)
    const v = await open(dir)
    try {
      t.equal(await codeOf(v.read(victim.keyHi, victim.keyLo, victim.cookie)), 'NS_ERR_CORRUPT_NEEDLE', `${what}: the damaged needle is refused, never served`)
      t.same(await differences(v, { ...rest, live: rest.live }).then((d) => d.filter((x) => !x.startsWith('liveCount'))), [], `${what}: every other file reads`)
    } finally {
      await v.close()
    }
    t.equal((await stat(datPath(dir, VID))).size, base.dat.length, `${what}: .dat kept whole when .idx is there`)

    // Without .idx, a full scan skips the damaged needle and indexes every needle after it.
    await install(dir, dat, undefined)
    const messages: string[] = []
    const w = await open(dir, messages)
    try {
      t.same(await differences(w, rest), [], `${what}: full rescan: every other file and delete`)
      t.equal(await codeOf(w.read(victim.keyHi, victim.keyLo, victim.cookie)), 'NS_ERR_NOT_FOUND', `${what}: full rescan: the damaged needle is skipped`)
      t.equal(w.datBytes, base.dat.length, `${what}: full rescan: .dat is not cut at the damage`)
      t.ok(messages.some((m) => /damaged|skip/i.test(m)), `${what}: the damage is reported`)
      await w.write(file(700, 10))
    } finally {
      await w.close()
    }
    const back = await readFile(datPath(dir, VID))
    t.same(back.subarray(0, base.dat.length), dat, `${what}: the damaged bytes are kept, not rewritten`)
    const againMessages: string[] = []
    const again = await open(dir, againMessages)
    try {
      t.same(await differences(again, { ...rest, live: [...rest.live, file(700, 10)] }), [], `${what}: after a write and a restart`)
      t.same(againMessages, [], `${what}: the skip was recorded in .idx: the next start has nothing to mend`)
    } finally {
      await again.close()
    }
  }
})

t.test('a damaged last needle with a matching .idx entry: every whole needle before it stays', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  const last = base.offsets[base.offsets.length - 1]!
  const dat = Buffer.from(base.dat)
  dat[last + NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + 10] ^= 1
  await install(dir, dat, base.idx)
  const v = await open(dir)
  const lastFile = base.expect.live[base.expect.live.length - 1]!
  t.equal(lastFile.keyLo, 100)
  const rest: Expect = { live: base.expect.live.slice(0, -1), deleted: base.expect.deleted }
  t.same(await differences(v, rest), [], 'every whole needle and delete before it')
  t.not(await codeOf(v.read(lastFile.keyHi, lastFile.keyLo, lastFile.cookie)), 'resolved', 'the damaged needle is never served')
  t.ok(v.datBytes >= last, '.dat is not cut below the last whole needle')
  await v.close()
})

t.test('a torn upload whose data holds a whole needle does not create a phantom file', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir, 6)
  const victim = base.expect.live[0]!
  // An uploader puts, inside its own file, the encoding of a needle for another file's key and
  // cookie (both are in the public fid). The upload is torn by a crash after the forged bytes.
  // The uploader cannot know the volume's checksum seed, which never leaves the server.
  const forged = encodeNeedle({ cookie: victim.cookie, keyHi: victim.keyHi, keyLo: victim.keyLo, data: Buffer.from('forged content') }, CLOCK_MS)
  // Pad the data so that the forged needle starts on an 8-byte boundary of `.dat`.
  const prefix = 8 - ((NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE) % 8 || 8)
  const upload = file(600, prefix + forged.length + 4000, {})
  const payload = Buffer.concat([Buffer.alloc(prefix), forged, bytesFrom(4000, 3)])
  const uploadBuf = encodeNeedle({ ...upload, data: payload }, CLOCK_MS, base.seed)
  t.equal((base.dat.length + NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + prefix) % 8, 0, 'the forged needle is aligned')
  const cut = NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE + prefix + forged.length + 100
  await install(dir, Buffer.concat([base.dat, uploadBuf.subarray(0, cut)]), base.idx)
  const v = await open(dir)
  try {
    const got = await v.read(victim.keyHi, victim.keyLo, victim.cookie).then(
      (n) => (Buffer.compare(n.data, Buffer.from(victim.data)) === 0 ? 'its own content' : `other content: ${JSON.stringify(n.data.toString('latin1').slice(0, 40))}`),
      (err: unknown) => (isNeedleError(err) ? err.code : String(err)),
    )
    t.equal(got, 'its own content', 'the victim still reads its own content, not the forged one')
    t.equal(v.datBytes, base.dat.length, 'the torn upload is cut back entirely')
  } finally {
    await v.close()
  }
})

t.test('deletes survive: tombstones on every recovery path', async (t) => {
  const dir = await tempDir(t)
  const base = await buildBase(dir)
  const paths: Array<[string, Buffer | undefined, Buffer]> = [
    ['with .idx', base.idx, base.dat],
    ['without .idx', undefined, base.dat],
    ['.idx without its tombstone entries', base.idx.subarray(0, (base.idx.length / IDX_ENTRY_SIZE - 2) * IDX_ENTRY_SIZE), base.dat],
    ['.idx with a partial last entry', base.idx.subarray(0, base.idx.length - 7), base.dat],
    ['torn tail and no .idx', undefined, Buffer.concat([base.dat, bytesFrom(37, 5)])],
    ['a zero-filled tail', base.idx, Buffer.concat([base.dat, Buffer.alloc(4096)])],
  ]
  for (const [what, idx, dat] of paths) {
    await install(dir, dat, idx)
    const v = await open(dir)
    try {
      t.same(await differences(v, base.expect), [], what)
      t.equal(v.status().deletedCount, base.expect.deleted.length, `${what}: deletedCount`)
      for (const f of base.expect.deleted) {
        const { size } = await v.delete(f.keyHi, f.keyLo, f.cookie)
        if (size !== f.data.length) t.fail(`${what}: a repeated delete of key ${f.keyLo} answered ${size}, expected ${f.data.length}`)
      }
      t.equal(v.datBytes, base.dat.length, `${what}: repeated deletes append nothing`)
    } finally {
      await v.close()
    }
  }
})

t.test('a corrupted superblock keeps the volume out of service, never rewritten', async (t) => {
  const dir = await tempDir(t)
  await (await Volume.create(volumeOptions(dir, { volumeId: 1 }))).close()
  const two = await Volume.create(volumeOptions(dir, { volumeId: 2 }))
  await two.write(file(1, 100))
  await two.close()
  const three = await Volume.create(volumeOptions(dir, { volumeId: 3 }))
  await three.write(file(2, 200))
  await three.close()

  const damaged = await readFile(datPath(dir, 2))
  damaged[SB_PLACEMENT] ^= 1
  await writeFile(datPath(dir, 2), damaged)
  t.equal(await codeOf(Volume.open(volumeOptions(dir, { volumeId: 2 }))), 'NS_ERR_CORRUPT_VOLUME', 'a flipped byte')
  const checksumHit = Buffer.from(damaged)
  checksumHit[SB_PLACEMENT] ^= 1
  checksumHit[SB_CHECKSUM] ^= 1
  await writeFile(datPath(dir, 2), checksumHit)
  t.equal(await codeOf(Volume.open(volumeOptions(dir, { volumeId: 2 }))), 'NS_ERR_CORRUPT_VOLUME', 'a flipped checksum byte')
  await writeFile(datPath(dir, 2), damaged)
  await truncate(datPath(dir, 3), SUPERBLOCK_SIZE - 10)
  t.equal(await codeOf(Volume.open(volumeOptions(dir, { volumeId: 3 }))), 'NS_ERR_CORRUPT_VOLUME', 'a .dat shorter than a superblock')

  const log: string[] = []
  const store = await Store.open({ dir, volume: volumeDefaults, volumesMax: 10, log: (m) => log.push(m) })
  try {
    t.same(store.list().map((v) => v.id), [1], 'the healthy volume is in service')
    t.same(store.broken().map((b) => b.id).sort(), [2, 3], 'the damaged ones are out of service')
    t.ok(store.broken().every((b) => b.error.length > 0), 'with the reason')
    t.ok(log.some((m) => m.includes('2')) && log.some((m) => m.includes('3')), 'and reported')
    t.equal(await codeOf(store.create(2, 0)), 'NS_ERR_VOLUME_EXISTS', 'a broken volume id is not reused')
    t.equal(await codeOf(Promise.resolve().then(() => store.volume(2))), 'NS_ERR_VOLUME_NOT_FOUND')
  } finally {
    await store.close()
  }
  t.same(await readFile(datPath(dir, 2)), damaged, 'the damaged .dat is left as it was')
  t.equal((await stat(datPath(dir, 3))).size, SUPERBLOCK_SIZE - 10, 'the short .dat is left as it was')
})
