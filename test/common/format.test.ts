import t from 'tap'
import fc from 'fast-check'
import { NeedleError, isNeedleError } from '../../src/common/errors.js'
import {
  BODY_FIXED_SIZE,
  BODY_SIZE_MAX,
  B_FLAGS,
  B_DATA_SIZE,
  B_LAST_MODIFIED,
  B_MD5,
  DATA_BYTES_MAX,
  FLAG_TOMBSTONE,
  FORMAT_VERSION,
  F_APPEND_AT,
  F_CHECKSUM,
  H_BODY_SIZE,
  H_COOKIE,
  H_KEY_HI,
  H_KEY_LO,
  IDX_ENTRY_SIZE,
  IDX_TOMBSTONE_SIZE,
  MD5_SIZE,
  MIME_BYTES_MAX,
  NAME_BYTES_MAX,
  NEEDLE_ALIGNMENT,
  NEEDLE_FOOTER_SIZE,
  NEEDLE_HEADER_SIZE,
  NEEDLE_MIN_LENGTH,
  SB_CHECKSUM,
  SUPERBLOCK_SIZE,
  VOLUME_BYTES_MAX,
  bodySizeOf,
  checksum,
  decodeIdxEntry,
  decodeNeedle,
  decodeNeedleHeader,
  decodeSuperblock,
  encodeIdxEntry,
  encodeNeedle,
  encodeSuperblock,
  needleLength,
  toByteOffset,
  toUnits,
  type NeedleInput,
  FLAG_LINK,
  REF_COOKIE,
  REF_SIZE,
  TOMBSTONE_BODY_SIZE,
  TOMBSTONE_LENGTH,
  encodeRef,
  type NeedleRef,
} from '../../src/common/format.js'
import { bytesFrom } from '../helpers/volume.js'

const U48_MAX = 2 ** 48 - 1

const u32 = fc.integer({ min: 0, max: 0xffff_ffff })
const u48 = fc.integer({ min: 0, max: U48_MAX })

/** Data of 0 … 64 KiB: small arrays drawn byte by byte, large ones from a seed. */
const dataArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  fc.record({ size: fc.integer({ min: 0, max: 64 * 1024 }), seed: fc.integer() }).map(({ size, seed }) => bytesFrom(size, seed)),
  fc.constantFrom(new Uint8Array(0), new Uint8Array(64 * 1024).fill(0xff)),
)

/** Any Unicode string whose UTF-8 encoding fits the name field. */
const nameArb = fc
  .string({ unit: 'binary', maxLength: 255 })
  .filter((s) => Buffer.byteLength(s, 'utf8') <= NAME_BYTES_MAX)

const mimeArb = fc.oneof(
  fc.constantFrom('image/jpeg', 'image/png', 'application/octet-stream', 'text/plain; charset=utf-8'),
  fc.string({ unit: 'grapheme-ascii', maxLength: MIME_BYTES_MAX }),
)

const refArb: fc.Arbitrary<NeedleRef> = fc.record({ offset: u32, bodySize: u32, dataSize: u32, keyHi: u32, keyLo: u32, cookie: u32 })

/** Files, tombstones (which always carry a reference) and links (a reference instead of data). */
const inputArb: fc.Arbitrary<NeedleInput> = fc
  .tuple(
    fc.record(
      {
        cookie: u32,
        keyHi: u32,
        keyLo: u32,
        data: dataArb,
        name: nameArb,
        mime: mimeArb,
        lastModifiedMs: u48,
        md5: fc.uint8Array({ minLength: MD5_SIZE, maxLength: MD5_SIZE }),
      },
      { requiredKeys: ['cookie', 'keyHi', 'keyLo', 'data'] },
    ),
    fc.constantFrom('file', 'tombstone', 'link'),
    refArb,
  )
  .map(([input, kind, ref]) => (kind === 'file' ? input : kind === 'tombstone' ? { ...input, tombstone: true, ref } : { ...input, ref }))

function sameRef(a: NeedleRef | undefined, b: NeedleRef | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.offset === b.offset && a.bodySize === b.bodySize && a.dataSize === b.dataSize && a.keyHi === b.keyHi && a.keyLo === b.keyLo && a.cookie === b.cookie
}

/** What decodeNeedle must give back for an input. */
function expected(input: NeedleInput) {
  const tomb = input.tombstone === true
  return {
    cookie: input.cookie,
    keyHi: input.keyHi,
    keyLo: input.keyLo,
    tombstone: tomb,
    link: !tomb && input.ref !== undefined,
    ref: input.ref,
    data: input.ref ? encodeRef(input.ref) : Buffer.from(input.data),
    name: tomb || !input.name ? undefined : input.name,
    mime: tomb || !input.mime ? undefined : input.mime,
    lastModifiedMs: tomb ? undefined : input.lastModifiedMs,
    md5: tomb || !input.md5 ? undefined : Buffer.from(input.md5),
  }
}

function codeOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (isNeedleError(err)) return err.code
    return `non-NeedleError: ${String(err)}`
  }
  return 'returned'
}

t.test('layout constants are consistent', async (t) => {
  t.equal(SUPERBLOCK_SIZE % NEEDLE_ALIGNMENT, 0, 'needles after the superblock start aligned')
  t.equal(SUPERBLOCK_SIZE, SB_CHECKSUM + 8)
  t.equal(NEEDLE_MIN_LENGTH, needleLength(BODY_FIXED_SIZE))
  t.equal(NEEDLE_MIN_LENGTH % NEEDLE_ALIGNMENT, 0)
  t.equal(NEEDLE_HEADER_SIZE, H_BODY_SIZE + 4)
  t.ok(H_COOKIE < H_KEY_LO && H_KEY_LO < H_KEY_HI && H_KEY_HI < H_BODY_SIZE, 'header fields in order')
  t.equal(BODY_FIXED_SIZE, B_MD5 + MD5_SIZE)
  t.equal(NEEDLE_FOOTER_SIZE, F_CHECKSUM + 8)
  t.equal(F_APPEND_AT, 0)
  t.equal(IDX_ENTRY_SIZE, 16)
  t.equal(VOLUME_BYTES_MAX, 2 ** 32 * NEEDLE_ALIGNMENT, 'u32 offsets in alignment units cover the volume')
  t.equal(bodySizeOf(DATA_BYTES_MAX, NAME_BYTES_MAX, MIME_BYTES_MAX), BODY_SIZE_MAX, 'the largest needle has the largest body')
  t.ok(needleLength(BODY_SIZE_MAX) <= 0x7fff_ffff, 'the largest needle fits 31 bits')
  for (let body = BODY_FIXED_SIZE; body < BODY_FIXED_SIZE + 64; body++) {
    const length = needleLength(body)
    if (length % NEEDLE_ALIGNMENT !== 0 || length < NEEDLE_HEADER_SIZE + body + NEEDLE_FOOTER_SIZE || length - (NEEDLE_HEADER_SIZE + body + NEEDLE_FOOTER_SIZE) >= NEEDLE_ALIGNMENT) {
      t.fail(`needleLength(${body}) = ${length}`)
    }
  }
  const ref = { offset: 9, bodySize: 40, dataSize: 8, keyHi: 2, keyLo: 3, cookie: 1 }
  const tomb = encodeNeedle({ cookie: 1, keyHi: 2, keyLo: 3, data: new Uint8Array(10), tombstone: true, name: 'x', mime: 'y/z', ref }, 5)
  t.equal(tomb.length, TOMBSTONE_LENGTH, 'every tombstone has one length whatever the input carries')
  t.equal(TOMBSTONE_LENGTH, needleLength(TOMBSTONE_BODY_SIZE))
  t.equal(REF_SIZE, REF_COOKIE + 4)
  t.throws(() => encodeNeedle({ cookie: 1, keyHi: 2, keyLo: 3, data: new Uint8Array(0), tombstone: true }, 5), TypeError, 'a tombstone without a reference is a programmer error')
  t.equal(toByteOffset(toUnits(SUPERBLOCK_SIZE)), SUPERBLOCK_SIZE)
  t.equal(toUnits(VOLUME_BYTES_MAX - NEEDLE_ALIGNMENT), 0xffff_ffff)
  t.throws(() => toUnits(SUPERBLOCK_SIZE + 3), TypeError, 'an unaligned offset is a programmer error')
})

t.test('encodeNeedle / decodeNeedle round trip', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(inputArb, u48, (input, appendAtMs) => {
      const buf = encodeNeedle(input, appendAtMs)
      const n = decodeNeedle(buf)
      const want = expected(input)
      const ok =
        n.cookie === want.cookie &&
        n.keyHi === want.keyHi &&
        n.keyLo === want.keyLo &&
        n.tombstone === want.tombstone &&
        ((n.flags & FLAG_TOMBSTONE) !== 0) === want.tombstone &&
        ((n.flags & FLAG_LINK) !== 0) === want.link &&
        sameRef(n.ref, want.ref) &&
        Buffer.compare(n.data, want.data) === 0 &&
        n.name === want.name &&
        n.mime === want.mime &&
        n.lastModifiedMs === want.lastModifiedMs &&
        (want.md5 === undefined ? n.md5 === undefined : n.md5 !== undefined && Buffer.compare(n.md5, want.md5) === 0) &&
        n.appendAtMs === appendAtMs &&
        n.length === buf.length &&
        buf.length % NEEDLE_ALIGNMENT === 0 &&
        buf.length === needleLength(n.bodySize) &&
        buf.readUInt32LE(H_BODY_SIZE) === n.bodySize &&
        n.checksum === checksum(buf.subarray(0, NEEDLE_HEADER_SIZE + n.bodySize + F_CHECKSUM))
      if (!ok) failures++
      return ok
    }),
    { numRuns: 400, seed: 0x5eed },
  )
  t.equal(failures, 0)
})

t.test('decodeNeedle at an offset inside a larger buffer, and the header decoder', async (t) => {
  const a = encodeNeedle({ cookie: 0xdeadbeef, keyHi: 0xffff_ffff, keyLo: 0, data: bytesFrom(1000, 1), name: 'ä.jpg' }, 1234)
  const b = encodeNeedle({ cookie: 7, keyHi: 0, keyLo: 0xffff_ffff, data: bytesFrom(3, 2), mime: 'image/png' }, 99)
  const both = Buffer.concat([a, b])
  const second = decodeNeedle(both, a.length)
  t.equal(second.cookie, 7)
  t.equal(second.keyLo, 0xffff_ffff)
  t.equal(second.mime, 'image/png')
  t.same([...second.data], [...bytesFrom(3, 2)])
  const first = decodeNeedle(both, 0)
  t.equal(first.keyHi, 0xffff_ffff)
  t.equal(first.name, 'ä.jpg')
  const header = decodeNeedleHeader(both, a.length)
  t.same(header, { cookie: 7, keyHi: 0, keyLo: 0xffff_ffff, bodySize: second.bodySize })
})

t.test('encodeNeedle refuses inputs past a limit with a TypeError', async (t) => {
  const base = { cookie: 1, keyHi: 0, keyLo: 1, data: new Uint8Array(1) }
  t.throws(() => encodeNeedle({ ...base, name: 'a'.repeat(NAME_BYTES_MAX + 1) }, 0), TypeError)
  t.throws(() => encodeNeedle({ ...base, name: 'é'.repeat(128) }, 0), TypeError, '256 UTF-8 bytes in 128 characters')
  t.doesNotThrow(() => encodeNeedle({ ...base, name: 'é'.repeat(127) + 'a' }, 0), '255 UTF-8 bytes fit')
  t.throws(() => encodeNeedle({ ...base, mime: 'm'.repeat(MIME_BYTES_MAX + 1) }, 0), TypeError)
  t.throws(() => encodeNeedle({ ...base, md5: new Uint8Array(15) }, 0), TypeError)
  t.throws(() => encodeNeedle({ ...base, lastModifiedMs: 2 ** 48 }, 0), TypeError)
  t.throws(() => encodeNeedle(base, -1), TypeError)
  t.throws(() => bodySizeOf(DATA_BYTES_MAX + 1, 0, 0), TypeError)
})

t.test('corrupting any single byte of a needle is detected', async (t) => {
  let failures = 0
  const seen: string[] = []
  fc.assert(
    fc.property(inputArb, u48, fc.nat(), fc.integer({ min: 1, max: 255 }), (input, appendAtMs, where, xor) => {
      const buf = encodeNeedle(input, appendAtMs)
      const pos = where % buf.length
      buf[pos] ^= xor
      const code = codeOf(() => decodeNeedle(buf))
      if (code !== 'NS_ERR_CORRUPT_NEEDLE') {
        failures++
        if (seen.length < 5) seen.push(`byte ${pos} of ${buf.length} ^ ${xor}: ${code}`)
        return false
      }
      return true
    }),
    { numRuns: 1500, seed: 0xbad },
  )
  t.equal(failures, 0, seen.join('; '))
})

t.test('corrupting each byte of a few needles, exhaustively, is detected', async (t) => {
  const needles = [
    encodeNeedle({ cookie: 0x637037d6, keyHi: 0, keyLo: 1, data: bytesFrom(37, 3), name: 'file.jpg', mime: 'image/jpeg', lastModifiedMs: 1_700_000_000_000, md5: bytesFrom(16, 4) }, 1_700_000_000_123),
    encodeNeedle({ cookie: 1, keyHi: 0x8000_0000, keyLo: 2, data: new Uint8Array(0) }, 0),
    encodeNeedle({ cookie: 2, keyHi: 3, keyLo: 4, data: new Uint8Array(0), tombstone: true, ref: { offset: 8, bodySize: 37, dataSize: 5, keyHi: 3, keyLo: 4, cookie: 2 } }, 42),
    encodeNeedle({ cookie: 4, keyHi: 3, keyLo: 5, data: new Uint8Array(0), name: 'copy.jpg', ref: { offset: 8, bodySize: 37, dataSize: 5, keyHi: 3, keyLo: 4, cookie: 2 } }, 43),
    encodeNeedle({ cookie: 3, keyHi: 5, keyLo: 6, data: bytesFrom(5, 7) }, U48_MAX),
  ]
  const wrong: string[] = []
  for (const [n, clean] of needles.entries()) {
    for (let pos = 0; pos < clean.length; pos++) {
      for (const xor of [0x01, 0x80, 0xff]) {
        const buf = Buffer.from(clean)
        buf[pos] ^= xor
        const code = codeOf(() => decodeNeedle(buf))
        if (code !== 'NS_ERR_CORRUPT_NEEDLE') wrong.push(`needle ${n} byte ${pos} ^ ${xor}: ${code}`)
      }
    }
  }
  t.same(wrong, [], 'every corrupted byte is refused as NS_ERR_CORRUPT_NEEDLE')
})

t.test('a truncated needle is refused at every length', async (t) => {
  fc.assert(
    fc.property(inputArb, (input) => {
      const buf = encodeNeedle(input, 1)
      // Every length for small needles; for large ones every length near the ends and a sample.
      const lengths: number[] = []
      for (let l = 0; l < buf.length; l++) {
        if (buf.length < 512 || l < 256 || l > buf.length - 256 || l % 97 === 0) lengths.push(l)
      }
      for (const l of lengths) {
        const code = codeOf(() => decodeNeedle(Buffer.from(buf.subarray(0, l))))
        if (code !== 'NS_ERR_CORRUPT_NEEDLE') throw new Error(`length ${l} of ${buf.length}: ${code}`)
      }
    }),
    { numRuns: 60, seed: 7 },
  )
  const exact = encodeNeedle({ cookie: 1, keyHi: 0, keyLo: 9, data: bytesFrom(100, 9), name: 'n' }, 1)
  t.equal(decodeNeedle(exact).data.length, 100, 'the whole needle still decodes')
})

/** Re-seals a needle whose fields were edited, so only the structural checks can catch it. */
function reseal(buf: Buffer): Buffer {
  const bodySize = buf.readUInt32LE(H_BODY_SIZE)
  const at = NEEDLE_HEADER_SIZE + bodySize + F_CHECKSUM
  buf.writeBigUInt64LE(checksum(buf.subarray(0, at)), at)
  return buf
}

t.test('structural checks beyond the checksum', async (t) => {
  const make = () => encodeNeedle({ cookie: 1, keyHi: 0, keyLo: 1, data: bytesFrom(5, 5), name: 'ab' }, 10)
  t.equal(decodeNeedle(reseal(make())).data.length, 5, 'resealing an untouched needle keeps it valid')

  const unknownFlag = make()
  unknownFlag[NEEDLE_HEADER_SIZE + B_FLAGS] |= 0x80
  t.equal(codeOf(() => decodeNeedle(reseal(unknownFlag))), 'NS_ERR_CORRUPT_NEEDLE', 'unknown flag bit')

  const sizes = make()
  sizes.writeUInt32LE(4, NEEDLE_HEADER_SIZE + B_DATA_SIZE)
  t.equal(codeOf(() => decodeNeedle(reseal(sizes))), 'NS_ERR_CORRUPT_NEEDLE', 'field sizes that do not add up')

  const tomb = make()
  tomb[NEEDLE_HEADER_SIZE + B_FLAGS] |= FLAG_TOMBSTONE
  t.equal(codeOf(() => decodeNeedle(reseal(tomb))), 'NS_ERR_CORRUPT_NEEDLE', 'a tombstone with contents')

  const link = make()
  link[NEEDLE_HEADER_SIZE + B_FLAGS] |= FLAG_LINK
  t.equal(codeOf(() => decodeNeedle(reseal(link))), 'NS_ERR_CORRUPT_NEEDLE', 'a link whose data is not a reference')

  const padded = make()
  t.ok(padded.length > NEEDLE_HEADER_SIZE + padded.readUInt32LE(H_BODY_SIZE) + NEEDLE_FOOTER_SIZE, 'this needle has padding')
  padded[padded.length - 1] = 1
  t.equal(codeOf(() => decodeNeedle(padded)), 'NS_ERR_CORRUPT_NEEDLE', 'nonzero padding (outside the checksum)')

  const small = make()
  small.writeUInt32LE(BODY_FIXED_SIZE - 1, H_BODY_SIZE)
  t.equal(codeOf(() => decodeNeedleHeader(small)), 'NS_ERR_CORRUPT_NEEDLE', 'a body smaller than its fixed part')
  const huge = make()
  huge.writeUInt32LE(BODY_SIZE_MAX + 1, H_BODY_SIZE)
  t.equal(codeOf(() => decodeNeedleHeader(huge)), 'NS_ERR_CORRUPT_NEEDLE', 'a body past the maximum')
  t.equal(codeOf(() => decodeNeedleHeader(Buffer.alloc(NEEDLE_HEADER_SIZE - 1))), 'NS_ERR_CORRUPT_NEEDLE', 'a header cut short')

  const lm = encodeNeedle({ cookie: 1, keyHi: 0, keyLo: 1, data: new Uint8Array(0) }, 10)
  t.equal(decodeNeedle(lm).lastModifiedMs, undefined, 'no last-modified unless given')
  t.equal(lm.readUIntLE(NEEDLE_HEADER_SIZE + B_LAST_MODIFIED, 6), 0)
  t.equal(decodeNeedle(encodeNeedle({ cookie: 1, keyHi: 0, keyLo: 1, data: new Uint8Array(0), lastModifiedMs: 0 }, 10)).lastModifiedMs, 0, 'a last-modified of 0 is kept')
})

t.test('errors are NeedleErrors with a 500 status', async (t) => {
  const buf = encodeNeedle({ cookie: 1, keyHi: 0, keyLo: 1, data: new Uint8Array(3) }, 1)
  buf[NEEDLE_HEADER_SIZE + BODY_FIXED_SIZE] ^= 1
  try {
    decodeNeedle(buf)
    t.fail('decoded a corrupt needle')
  } catch (err) {
    t.ok(err instanceof NeedleError)
    t.equal((err as NeedleError).code, 'NS_ERR_CORRUPT_NEEDLE')
    t.equal((err as NeedleError).statusCode, 500)
  }
})

const sbArb = fc.record({
  placement: fc.integer({ min: 0, max: 255 }),
  compactRevision: u32,
  volumeId: u32,
  createdAtMs: u48,
  checksumSeed: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  collection: fc.stringMatching(/^[A-Za-z0-9_.-]{0,24}$/),
})

t.test('superblock round trip', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(sbArb, (sb) => {
      const buf = encodeSuperblock(sb)
      const back = decodeSuperblock(buf)
      const ok =
        buf.length === SUPERBLOCK_SIZE &&
        back.version === FORMAT_VERSION &&
        back.placement === sb.placement &&
        back.compactRevision === sb.compactRevision &&
        back.checksumSeed === sb.checksumSeed &&
        back.volumeId === sb.volumeId &&
        back.createdAtMs === sb.createdAtMs
      if (!ok) failures++
      return ok
    }),
    { numRuns: 300, seed: 11 },
  )
  t.equal(failures, 0)
})

t.test('a superblock with any byte corrupted, or cut short, is refused', async (t) => {
  const wrong: string[] = []
  fc.assert(
    fc.property(sbArb, (sb) => {
      const clean = encodeSuperblock(sb)
      for (let pos = 0; pos < SUPERBLOCK_SIZE; pos++) {
        for (const xor of [0x01, 0x10, 0xff]) {
          const buf = Buffer.from(clean)
          buf[pos] ^= xor
          const code = codeOf(() => decodeSuperblock(buf))
          if (code !== 'NS_ERR_CORRUPT_VOLUME') wrong.push(`byte ${pos} ^ ${xor}: ${code}`)
        }
      }
      for (let l = 0; l < SUPERBLOCK_SIZE; l++) {
        const code = codeOf(() => decodeSuperblock(clean.subarray(0, l)))
        if (code !== 'NS_ERR_CORRUPT_VOLUME') wrong.push(`length ${l}: ${code}`)
      }
    }),
    { numRuns: 20, seed: 12 },
  )
  t.same(wrong.slice(0, 10), [])
  t.equal(codeOf(() => decodeSuperblock(Buffer.alloc(SUPERBLOCK_SIZE))), 'NS_ERR_CORRUPT_VOLUME', 'all zeros')
})

t.test('index entry round trip, also at an offset in a shared buffer', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(
      fc.array(fc.record({ keyHi: u32, keyLo: u32, offset: u32, size: fc.oneof(fc.constant(IDX_TOMBSTONE_SIZE), u32) }), { minLength: 1, maxLength: 20 }),
      (entries) => {
        const shared = Buffer.alloc(entries.length * IDX_ENTRY_SIZE)
        entries.forEach((e, i) => encodeIdxEntry(e, shared, i * IDX_ENTRY_SIZE))
        const ok = entries.every((e, i) => {
          const alone = encodeIdxEntry(e)
          const a = decodeIdxEntry(alone)
          const b = decodeIdxEntry(shared, i * IDX_ENTRY_SIZE)
          return (
            alone.length === IDX_ENTRY_SIZE &&
            alone.equals(shared.subarray(i * IDX_ENTRY_SIZE, (i + 1) * IDX_ENTRY_SIZE)) &&
            a.keyHi === e.keyHi && a.keyLo === e.keyLo && a.offset === e.offset && a.size === e.size &&
            b.keyHi === e.keyHi && b.keyLo === e.keyLo && b.offset === e.offset && b.size === e.size
          )
        })
        if (!ok) failures++
        return ok
      },
    ),
    { numRuns: 300, seed: 13 },
  )
  t.equal(failures, 0)
})
