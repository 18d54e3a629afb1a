import t from 'tap'
import fc from 'fast-check'
import { isNeedleError } from '../../src/common/errors.js'
import {
  VOLUME_ID_MAX,
  formatFid,
  formatKey,
  keyFromBigInt,
  keyToBigInt,
  parseFid,
  parseFidPath,
  parseVolumeId,
  type FileId,
} from '../../src/common/fid.js'

const u32 = fc.integer({ min: 0, max: 0xffff_ffff })
const fidArb: fc.Arbitrary<FileId> = fc.record({
  volumeId: fc.integer({ min: 1, max: VOLUME_ID_MAX }),
  keyHi: fc.oneof(fc.constant(0), u32),
  keyLo: u32,
  cookie: u32,
})

function codeOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    return isNeedleError(err) ? err.code : `non-NeedleError: ${String(err)}`
  }
  return 'returned'
}

t.test('formatFid / parseFid round trip', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(fidArb, (fid) => {
      const text = formatFid(fid)
      const back = parseFid(text)
      const ok =
        back.volumeId === fid.volumeId &&
        back.keyHi === fid.keyHi &&
        back.keyLo === fid.keyLo &&
        back.cookie === fid.cookie &&
        formatFid(back) === text &&
        /^[0-9]+,([0-9a-f]{2})+[0-9a-f]{8}$/.test(text)
      if (!ok) failures++
      return ok
    }),
    { numRuns: 1000, seed: 1 },
  )
  t.equal(failures, 0)
})

t.test('SeaweedFS examples', async (t) => {
  t.same(parseFid('3,01637037d6'), { volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0x637037d6 })
  t.equal(formatFid({ volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0x637037d6 }), '3,01637037d6')
  t.same(parseFid('3,01637037D6'), { volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0x637037d6 }, 'upper-case hex')
  t.same(parseFid('3,1637037d6'), { volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0x637037d6 }, 'an odd number of key digits')
  t.same(parseFid('7,0000000000000001637037d6'), { volumeId: 7, keyHi: 0, keyLo: 1, cookie: 0x637037d6 }, 'leading zero bytes')
  t.same(parseFid('4294967295,ffffffffffffffffffffffff'), { volumeId: VOLUME_ID_MAX, keyHi: 0xffff_ffff, keyLo: 0xffff_ffff, cookie: 0xffff_ffff })
  t.same(parseFid('3,0100000000'), { volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0 })
  t.same(parseFid('3,123456789abcdef0cafebabe'), { volumeId: 3, keyHi: 0x12345678, keyLo: 0x9abcdef0, cookie: 0xcafebabe })
})

t.test('the _d suffix adds d to the key, with carry', async (t) => {
  t.same(parseFid('3,01637037d6_0'), parseFid('3,01637037d6'), '_0 is the file itself')
  t.same(parseFid('3,01637037d6_1'), { volumeId: 3, keyHi: 0, keyLo: 2, cookie: 0x637037d6 })
  t.same(parseFid('3,ff637037d6_1'), { volumeId: 3, keyHi: 0, keyLo: 0x100, cookie: 0x637037d6 })
  t.same(parseFid('3,ffffffff637037d6_1'), { volumeId: 3, keyHi: 1, keyLo: 0, cookie: 0x637037d6 }, 'carry into the high half')
  t.same(parseFid('3,1fffffffe637037d6_3'), { volumeId: 3, keyHi: 2, keyLo: 1, cookie: 0x637037d6 })
  t.same(parseFid('3,01637037d6_999999999'), { volumeId: 3, keyHi: 0, keyLo: 1_000_000_000, cookie: 0x637037d6 })
  t.equal(codeOf(() => parseFid('3,ffffffffffffffff637037d6_1')), 'NS_ERR_BAD_FID', 'a key past 64 bits')
  fc.assert(
    fc.property(fidArb, fc.integer({ min: 0, max: 999_999_999 }), (fid, d) => {
      const key = keyToBigInt(fid.keyHi, fid.keyLo) + BigInt(d)
      const text = `${formatFid(fid)}_${d}`
      if (key >= 1n << 64n) return codeOf(() => parseFid(text)) === 'NS_ERR_BAD_FID'
      const p = parseFid(text)
      return keyToBigInt(p.keyHi, p.keyLo) === key && p.cookie === fid.cookie && p.volumeId === fid.volumeId
    }),
    { numRuns: 500, seed: 2 },
  )
})

t.test('formatKey writes big-endian bytes without leading zero bytes', async (t) => {
  t.equal(formatKey(0, 0), '00')
  t.equal(formatKey(0, 1), '01')
  t.equal(formatKey(0, 0xf), '0f')
  t.equal(formatKey(0, 0x100), '0100')
  t.equal(formatKey(0, 0x1234), '1234')
  t.equal(formatKey(0, 0xffff_ffff), 'ffffffff')
  t.equal(formatKey(1, 0), '0100000000')
  t.equal(formatKey(0xffff_ffff, 0xffff_ffff), 'ffffffffffffffff')
  t.equal(formatKey(0x0012_3456, 0), '12345600000000')
  fc.assert(
    fc.property(u32, u32, (hi, lo) => {
      const hex = formatKey(hi, lo)
      return hex.length % 2 === 0 && hex.length >= 2 && (hex.length === 2 || !hex.startsWith('00')) && BigInt(`0x${hex}`) === keyToBigInt(hi, lo)
    }),
    { numRuns: 500, seed: 3 },
  )
})

t.test('keyToBigInt / keyFromBigInt', async (t) => {
  t.equal(keyToBigInt(1, 2), (1n << 32n) | 2n)
  t.same(keyFromBigInt((1n << 64n) - 1n), { keyHi: 0xffff_ffff, keyLo: 0xffff_ffff })
  t.throws(() => keyFromBigInt(1n << 64n), TypeError)
  t.throws(() => keyFromBigInt(-1n), TypeError)
})

t.test('malformed file ids are refused with NS_ERR_BAD_FID', async (t) => {
  const bad = [
    '',
    '301637037d6',
    '3;01637037d6',
    ',01637037d6',
    '3,',
    '3,01637037dg',
    '3,0x1637037d6',
    '3,01637037d6 ',
    '3,-1637037d6',
    '3,637037d6',
    '3,37037d6',
    '3,0123456789abcdef0123456789',
    '3,00000000000000001637037d6',
    '0,01637037d6',
    '4294967296,01637037d6',
    '99999999999,01637037d6',
    '-3,01637037d6',
    '3.0,01637037d6',
    'a,01637037d6',
    ' 3,01637037d6',
    '3,01637037d6_',
    '3,01637037d6_x',
    '3,01637037d6_-1',
    '3,01637037d6_1_2',
    '3,01637037d6_1000000000',
    '3,01637037d6_0x1',
    '3,01,637037d6',
  ]
  for (const text of bad) t.equal(codeOf(() => parseFid(text)), 'NS_ERR_BAD_FID', JSON.stringify(text))
  t.equal(codeOf(() => parseVolumeId('0')), 'NS_ERR_BAD_FID')
  t.equal(parseVolumeId('4294967295'), VOLUME_ID_MAX)
  t.equal(codeOf(() => parseVolumeId('4294967296')), 'NS_ERR_BAD_FID')
  t.equal(codeOf(() => parseVolumeId('1e3')), 'NS_ERR_BAD_FID')
})

t.test('arbitrary strings either parse into a valid id or throw NS_ERR_BAD_FID', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(/^[0-9]{0,11},[0-9a-fA-F_]{0,30}$/)), (text) => {
      try {
        const f = parseFid(text)
        const ok = [f.keyHi, f.keyLo, f.cookie].every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffff_ffff) && f.volumeId >= 1 && f.volumeId <= VOLUME_ID_MAX
        if (!ok) failures++
        return ok
      } catch (err) {
        const ok = isNeedleError(err) && err.code === 'NS_ERR_BAD_FID'
        if (!ok) failures++
        return ok
      }
    }),
    { numRuns: 2000, seed: 4 },
  )
  t.equal(failures, 0)
})

t.test('parseFidPath accepts the SeaweedFS path forms', async (t) => {
  const fid = { volumeId: 3, keyHi: 0, keyLo: 1, cookie: 0x637037d6 }
  t.has(parseFidPath('/3,01637037d6'), { fid, name: undefined, ext: undefined })
  t.has(parseFidPath('/3,01637037d6.jpg'), { fid, name: undefined, ext: 'jpg' })
  t.has(parseFidPath('/3/01637037d6'), { fid, name: undefined, ext: undefined })
  t.has(parseFidPath('/3/01637037d6.jpg'), { fid, name: undefined, ext: 'jpg' })
  t.has(parseFidPath('/3/01637037d6/name.jpg'), { fid, name: 'name.jpg', ext: undefined })
  t.has(parseFidPath('/3,01637037d6/name.jpg'), { fid, name: 'name.jpg', ext: undefined })
  t.has(parseFidPath('/3,01637037d6?x=1&y=2'), { fid, name: undefined, ext: undefined }, 'query string ignored')
  t.has(parseFidPath('/3,01637037d6.png?download=1'), { fid, name: undefined, ext: 'png' })
  t.has(parseFidPath('/3/01637037d6/name.jpg?x=/a/b'), { fid, name: 'name.jpg', ext: undefined }, 'slashes in the query do not count')
  t.has(parseFidPath('/3/01637037d6/my%20photo.jpg'), { fid, name: 'my photo.jpg', ext: undefined }, 'percent-decoded name')
  t.has(parseFidPath('/3,01637037d6_1.jpg'), { fid: { ...fid, keyLo: 2 }, name: undefined, ext: 'jpg' })
  t.has(parseFidPath('/3/01637037d6_1'), { fid: { ...fid, keyLo: 2 }, name: undefined, ext: undefined })
  t.equal(parseFidPath('/3/01637037d6_1/a.jpg').text, '3,01637037d6_1', 'text: the id in the comma form, suffix kept')
  t.equal(parseFidPath('/3,01637037d6.jpg?x=1').text, '3,01637037d6', 'text: without extension or query')
  for (const bad of ['/', '/3', '/3/', '/3/x/y/z', '/a,b', '/3,01637037d6/%E0%A4%A', '/0/01637037d6', '/3//01637037d6']) {
    t.equal(codeOf(() => parseFidPath(bad)), 'NS_ERR_BAD_FID', JSON.stringify(bad))
  }
})
