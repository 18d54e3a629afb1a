import { seededRandom } from '../helpers/random.js'
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { NeedleIndex, SEGMENT_ENTRIES, STAGING_ENTRIES_MAX, CHUNK_ENTRIES } from '../../src/dataserver/needle-index.js'

const U64_MAX = 2n ** 64n - 1n

function hi(key: bigint): number {
  return Number(key >> 32n)
}

function lo(key: bigint): number {
  return Number(key & 0xffff_ffffn)
}

interface Entry {
  offset: number
  size: number
  deleted: boolean
}

/** Deterministic offset and size for a key, so a test can tell which write it sees. */
function valueFor(key: bigint, version = 0): { offset: number; size: number } {
  const k = Number(key % 0xffff_ff00n)
  return { offset: (k + version * 7919) >>> 0, size: ((k * 31 + version) % 0x7fff_ffff) + 1 }
}

function set(index: NeedleIndex, key: bigint, version = 0): void {
  const v = valueFor(key, version)
  index.set(hi(key), lo(key), v.offset, v.size)
}

/** What lookup() reports for the key, or undefined if the key is unknown. */
function found(index: NeedleIndex, key: bigint): Entry | undefined {
  if (!index.lookup(hi(key), lo(key))) return undefined
  return { offset: index.foundOffset, size: index.foundSize, deleted: index.foundDeleted }
}

function sameEntry(a: Entry | undefined, b: Entry | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.offset === b.offset && a.size === b.size && a.deleted === b.deleted
}

function entries(index: NeedleIndex): Array<[bigint, Entry]> {
  const out: Array<[bigint, Entry]> = []
  index.forEach((keyHi, keyLo, offset, size, deleted) => {
    out.push([(BigInt(keyHi) << 32n) | BigInt(keyLo), { offset, size, deleted }])
  })
  return out
}

/** Checks every key of `keys` is found with its version-0 value, and forEach lists exactly them in order. */
function checkHolds(t: Test, index: NeedleIndex, keys: readonly bigint[]): void {
  let wrong = 0
  for (const key of keys) {
    if (!sameEntry(found(index, key), { ...valueFor(key), deleted: false })) wrong++
  }
  t.equal(wrong, 0, 'every key is found with its value')
  t.equal(index.liveCount, keys.length, 'liveCount')
  const sorted = [...keys].sort((a, b) => (a < b ? -1 : 1))
  const listed = entries(index).map(([key]) => key)
  t.equal(listed.length, sorted.length, 'forEach visits every key once')
  t.ok(
    listed.every((key, i) => key === sorted[i]),
    'forEach visits keys in increasing order',
  )
}

function ascending(start: bigint, count: number, gap: (i: number) => bigint): bigint[] {
  const keys: bigint[] = []
  let key = start
  for (let i = 0; i < count; i++) {
    keys.push(key)
    key += gap(i)
  }
  return keys
}

/** A small seeded generator, so failures reproduce. */
const random = seededRandom

t.test('an empty index knows nothing', async (t) => {
  const index = new NeedleIndex()
  t.equal(index.lookup(0, 0), false)
  t.equal(index.markDeleted(0, 1), false)
  t.equal(index.remove(0, 1), false)
  t.equal(index.liveCount, 0)
  t.equal(index.deletedCount, 0)
  t.same(entries(index), [])
})

t.test('in-order inserts across many segments', async (t) => {
  const index = new NeedleIndex()
  const keys = ascending(1n, 20_000, () => 2n)
  for (const key of keys) set(index, key)
  checkHolds(t, index, keys)
  const stats = index.stats()
  t.ok(stats.segments >= Math.floor((20_000 - STAGING_ENTRIES_MAX) / SEGMENT_ENTRIES), `${stats.segments} segments`)
  t.equal(stats.overflowEntries, 0, 'nothing spills into the overflow table')
  t.equal(stats.wideSegments, 0, 'small gaps keep 16-bit deltas')
  let found = 0
  for (let k = 0n; k <= 40_002n; k += 2n) if (index.lookup(0, Number(k))) found++
  t.equal(found, 0, 'keys in the gaps are absent')
  t.equal(index.lookup(0, 40_001), false, 'the key just past the last one is absent')
})

t.test('segments of uneven length across several chunks', async (t) => {
  // Gaps up to 40 make 4096 keys span more than 0xffff, so segments end early at uneven
  // lengths and the last segment of a chunk is cut to fit.
  const next = random(7)
  const index = new NeedleIndex()
  const keys = ascending(1000n, 3 * CHUNK_ENTRIES, () => BigInt(1 + Math.floor(next() * 40)))
  for (const key of keys) set(index, key)
  checkHolds(t, index, keys)
  const stats = index.stats()
  t.ok(stats.chunks >= 2, `${stats.chunks} chunks`)
  t.equal(stats.frozenSlots + stats.stagingEntries, keys.length, 'no slot is wasted')
  t.ok(index.memoryBytes() <= keys.length * 12, `${index.memoryBytes()} bytes for ${keys.length} keys`)
})

t.test('keys with keyHi ≠ 0 and across 2^32 boundaries', async (t) => {
  const index = new NeedleIndex()
  const keys = [
    ...ascending(2n ** 32n - 7000n, 14_000, () => 1n),
    ...ascending(0x1234_5678_ffff_f000n, 10_000, () => 3n),
    ...ascending(U64_MAX - 9_000n, 9_001, () => 1n),
  ]
  for (const key of keys) set(index, key)
  checkHolds(t, index, keys)
  t.ok(index.lookup(0xffff_ffff, 0xffff_ffff), 'the largest key')
  t.equal(index.lookup(1, 7000), false, 'one past the first run')
  t.equal(index.lookup(0, 0xffff_ffff - 7000), false, 'one before the first run')
  t.equal(index.lookup(0x1234_5678, 0), false, 'a key between runs')

  // A jump of 2^32 (plus a little) leaves the low halves close while the high halves differ, so
  // a segment must not be judged by the low halves alone.
  const jumps = new NeedleIndex()
  const jumping = ascending(10n, 20_000, (i) => (i % 3000 === 2999 ? 2n ** 32n + BigInt(i % 2) : 1n))
  for (const key of jumping) set(jumps, key)
  checkHolds(t, jumps, jumping)
  let found = 0
  for (const key of jumping) if (jumps.lookup(hi(key) ^ 1, lo(key))) found++
  t.equal(found, 0, 'keys 2^32 away from present ones are absent')
})

t.test('huge gaps force 32-bit deltas and early segment ends', async (t) => {
  const index = new NeedleIndex()
  const wide = ascending(5n, 12_000, (i) => 1n + BigInt((i * 7919) % (1 << 20)))
  for (const key of wide) set(index, key)
  checkHolds(t, index, wide)
  t.ok(index.stats().wideSegments > 0, 'wide segments exist')

  const sparse = new NeedleIndex()
  const far = ascending(3n, 12_000, (i) => 2n ** 33n + BigInt(i))
  for (const key of far) set(sparse, key)
  checkHolds(t, sparse, far)
  const stats = sparse.stats()
  t.equal(stats.segments, stats.frozenSlots, 'each segment holds one key when keys are 2^33 apart')
  let found = 0
  for (const key of far.slice(0, 2000)) {
    if (sparse.lookup(hi(key) + 1, lo(key))) found++
    if (sparse.lookup(hi(key), lo(key) + 1)) found++
  }
  t.equal(found, 0, 'neighbours of sparse keys are absent')

  const mixed = new NeedleIndex()
  const next = random(11)
  const keys = ascending(0n, 30_000, () => (next() < 0.01 ? 2n ** 40n : next() < 0.2 ? 100_000n : 1n))
  for (const key of keys) set(mixed, key)
  checkHolds(t, mixed, keys)
})

t.test('slightly out-of-order keys stay out of the overflow table', async (t) => {
  const next = random(3)
  const keys = ascending(100n, 30_000, () => BigInt(1 + Math.floor(next() * 8)))
  // Each key arrives up to 200 places late, as with concurrent writers.
  const arrival = keys
    .map((key, i) => ({ key, at: i + next() * 200 }))
    .sort((a, b) => a.at - b.at)
    .map(({ key }) => key)
  const index = new NeedleIndex()
  for (const key of arrival) set(index, key)
  checkHolds(t, index, keys)
  t.equal(index.stats().overflowEntries, 0)
})

t.test('random and descending keys', async (t) => {
  const next = random(5)
  const keys = new Set<bigint>()
  while (keys.size < 20_000) {
    keys.add((BigInt(Math.floor(next() * 2 ** 32)) << 32n) | BigInt(Math.floor(next() * 2 ** 32)))
  }
  const index = new NeedleIndex()
  for (const key of keys) set(index, key)
  checkHolds(t, index, [...keys])
  t.ok(index.stats().overflowEntries > 0, 'keys below the frozen range went to the overflow table')

  const descending = new NeedleIndex()
  const down = ascending(0n, 15_000, () => 3n).reverse()
  for (const key of down) set(descending, key)
  checkHolds(t, descending, down)
})

t.test('keys arriving far too late interleave with frozen keys', async (t) => {
  const index = new NeedleIndex()
  const even = ascending(2n ** 32n * 3n, 20_000, () => 2n)
  for (const key of even) set(index, key)
  // Odd keys inside the frozen range land in the overflow table, between frozen keys.
  const odd = ascending(2n ** 32n * 3n + 1001n, 3000, () => 2n)
  for (const key of odd) set(index, key)
  checkHolds(t, index, [...even, ...odd])
  t.equal(index.stats().overflowEntries, odd.length)
  let removed = 0
  for (const key of odd.slice(0, 1000)) if (index.remove(hi(key), lo(key))) removed++
  t.equal(removed, 1000)
  checkHolds(t, index, [...even, ...odd.slice(1000)])
})

/** An index whose keys 0 … 9999 (step 10) sit in frozen segments, staging and overflow. */
function threePlaces(): { index: NeedleIndex; frozen: bigint; staged: bigint; overflow: bigint } {
  const index = new NeedleIndex()
  for (let k = 1000n; k < 1000n + BigInt(STAGING_ENTRIES_MAX) * 10n + 500n; k += 10n) set(index, k)
  set(index, 5n)
  const stats = index.stats()
  if (stats.segments !== 1 || stats.overflowEntries !== 1) throw new Error('setup did not fill three places')
  return { index, frozen: 1010n, staged: 1000n + BigInt(STAGING_ENTRIES_MAX) * 10n + 100n, overflow: 5n }
}

t.test('overwrite replaces the value wherever the key lives', async (t) => {
  const { index, frozen, staged, overflow } = threePlaces()
  const live = index.liveCount
  for (const key of [frozen, staged, overflow]) {
    set(index, key, 1)
    const v = valueFor(key, 1)
    t.ok(index.lookup(hi(key), lo(key)))
    t.same([index.foundOffset, index.foundSize, index.foundDeleted], [v.offset, v.size, false], `key ${key}`)
  }
  t.equal(index.liveCount, live, 'overwrites add no entries')
  t.equal(index.stats().overflowEntries, 1)
})

t.test('markDeleted, lookup of deleted entries and remove', async (t) => {
  const { index, frozen, staged, overflow } = threePlaces()
  const live = index.liveCount
  for (const key of [frozen, staged, overflow]) {
    const v = valueFor(key)
    t.equal(index.markDeleted(hi(key), lo(key)), true, `deleting live key ${key}`)
    t.equal(index.markDeleted(hi(key), lo(key)), false, 'deleting it again')
    t.ok(index.lookup(hi(key), lo(key)), 'a deleted key is still found')
    t.same([index.foundOffset, index.foundSize, index.foundDeleted], [v.offset, v.size, true], 'with its offset and size')
  }
  t.equal(index.liveCount, live - 3)
  t.equal(index.deletedCount, 3)
  t.equal(entries(index).filter(([, e]) => e.deleted).length, 3, 'forEach reports deleted entries')

  t.equal(index.markDeleted(0, 7), false, 'an unknown key')
  t.equal(index.lookup(0, 7), false, 'is not recorded by markDeleted')
  t.equal(index.deletedCount, 3)

  set(index, frozen, 2)
  t.ok(index.lookup(hi(frozen), lo(frozen)) && !index.foundDeleted, 'set clears the deleted mark')
  t.equal(index.deletedCount, 2)
  t.equal(index.liveCount, live - 2)

  for (const key of [frozen, staged, overflow]) {
    t.equal(index.remove(hi(key), lo(key)), true, `removing key ${key}`)
    t.equal(index.remove(hi(key), lo(key)), false, 'removing it again')
    t.equal(index.lookup(hi(key), lo(key)), false, 'a removed key is unknown')
    t.equal(index.markDeleted(hi(key), lo(key)), false, 'and cannot be deleted')
  }
  t.equal(index.liveCount, live - 3)
  t.equal(index.deletedCount, 0)
  t.equal(entries(index).length, live - 3)

  set(index, frozen, 3)
  t.ok(sameEntry(found(index, frozen), { ...valueFor(frozen, 3), deleted: false }), 'a removed frozen key can return')
  t.equal(index.stats().overflowEntries, 0, 'into its old slot, not the overflow table')
})

t.test('removing from the overflow table keeps probe runs intact', async (t) => {
  // 6000 keys fill the 8192-slot table to 73%, so probe runs are long and some wrap around
  // its end; rounds of removals and re-inserts then move entries back in every configuration.
  for (const seed of [9, 10, 11, 12]) {
    const index = new NeedleIndex()
    for (let k = 0; k < STAGING_ENTRIES_MAX; k++) set(index, 2n ** 40n + BigInt(k))
    const next = random(seed)
    const low = ascending(BigInt(seed), 6000, () => BigInt(1 + Math.floor(next() * 1000)))
    for (const key of low) set(index, key)
    const present = new Set(low)
    let wrong = 0
    for (let round = 0; round < 4; round++) {
      for (const key of low) {
        if (next() >= 0.3) continue
        if (present.has(key)) {
          if (!index.remove(hi(key), lo(key))) wrong++
          present.delete(key)
        } else {
          set(index, key)
          present.add(key)
        }
      }
      for (const key of low) if (index.lookup(hi(key), lo(key)) !== present.has(key)) wrong++
    }
    t.equal(wrong, 0, `seed ${seed}: every kept key is found and every removed one is not`)
    t.equal(index.stats().overflowEntries, present.size)
  }
})

t.test('out-of-range arguments throw TypeError', async (t) => {
  const index = new NeedleIndex()
  const bad = [-1, 2 ** 32, 1.5, NaN, Infinity, '1' as unknown as number]
  for (const x of bad) {
    t.throws(() => index.set(x, 0, 0, 1), TypeError, `keyHi ${String(x)}`)
    t.throws(() => index.set(0, x, 0, 1), TypeError, `keyLo ${String(x)}`)
    t.throws(() => index.set(0, 0, x, 1), TypeError, `offset ${String(x)}`)
    t.throws(() => index.lookup(0, x), TypeError, `lookup keyLo ${String(x)}`)
  }
  for (const size of [0, -1, 0x8000_0000, 1.5, NaN]) {
    t.throws(() => index.set(0, 0, 0, size), TypeError, `bodySize ${size}`)
  }
  t.equal(index.liveCount, 0, 'nothing was recorded')
  index.set(0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0x7fff_ffff)
  t.ok(index.lookup(0xffff_ffff, 0xffff_ffff))
  t.same([index.foundOffset, index.foundSize], [0xffff_ffff, 0x7fff_ffff], 'the largest values round-trip')
})

// A model-based property: random operation sequences give the same answers as a Map.

type Op =
  | { kind: 'run'; count: number; gapMax: number; seed: number }
  | { kind: 'late'; back: number }
  | { kind: 'any'; key: bigint }
  | { kind: 'delete'; pick: number }
  | { kind: 'remove'; pick: number }
  | { kind: 'deleteAny'; key: bigint }
  | { kind: 'rewrite'; pick: number }

const keyArb = fc.bigInt(0n, U64_MAX)
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('run' as const),
      count: fc.integer({ min: 1, max: 2500 }),
      gapMax: fc.constantFrom(1, 2, 8, 40, 70_000, 2 ** 33),
      seed: fc.integer({ min: 1, max: 2 ** 31 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('late' as const), back: fc.integer({ min: 0, max: 40_000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('any' as const), key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteAny' as const), key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('rewrite' as const), pick: fc.nat() }) },
)
const startArb = fc.oneof(fc.constantFrom(0n, 2n ** 32n - 3000n, 0xffff_0000n, 2n ** 63n), fc.bigInt(0n, 2n ** 62n))

t.test('behaves like a Map over random operation sequences', async (t) => {
  let runs = 0
  fc.assert(
    fc.property(startArb, fc.array(opArb, { maxLength: 40 }), (start, ops) => {
      runs++
      const index = new NeedleIndex()
      const model = new Map<bigint, Entry>()
      const touched: bigint[] = []
      let cursor = start
      let version = 0
      const put = (key: bigint): void => {
        if (key < 0n || key > U64_MAX) return
        version++
        const v = valueFor(key, version)
        index.set(hi(key), lo(key), v.offset, v.size)
        model.set(key, { ...v, deleted: false })
        touched.push(key)
      }
      const pick = (n: number): bigint | undefined => (touched.length === 0 ? undefined : touched[n % touched.length])
      const markDeleted = (key: bigint): void => {
        const entry = model.get(key)
        const expected = entry !== undefined && !entry.deleted
        if (entry !== undefined) entry.deleted = true
        if (index.markDeleted(hi(key), lo(key)) !== expected) throw new Error(`markDeleted(${key}) should be ${expected}`)
      }

      for (const op of ops) {
        switch (op.kind) {
          case 'run': {
            const next = random(op.seed)
            for (let i = 0; i < op.count; i++) {
              put(cursor)
              cursor += BigInt(1 + Math.floor(next() * op.gapMax))
            }
            break
          }
          case 'late':
            put(cursor - BigInt(op.back))
            break
          case 'any':
            put(op.key)
            break
          case 'rewrite': {
            const key = pick(op.pick)
            if (key !== undefined) put(key)
            break
          }
          case 'delete': {
            const key = pick(op.pick)
            if (key !== undefined) markDeleted(key)
            break
          }
          case 'deleteAny':
            markDeleted(op.key)
            break
          case 'remove': {
            const key = pick(op.pick)
            if (key === undefined) break
            const expected = model.delete(key)
            if (index.remove(hi(key), lo(key)) !== expected) throw new Error(`remove(${key}) should be ${expected}`)
            break
          }
        }
      }

      const sorted = [...model].sort(([a], [b]) => (a < b ? -1 : 1))
      const listed = entries(index)
      if (listed.length !== sorted.length) throw new Error(`forEach listed ${listed.length}, model has ${sorted.length}`)
      for (let i = 0; i < sorted.length; i++) {
        const [key, e] = sorted[i]
        const [gotKey, got] = listed[i]
        if (gotKey !== key || !sameEntry(got, e)) {
          throw new Error(`forEach entry ${i}: got ${gotKey} ${JSON.stringify(got)}, expected ${key} ${JSON.stringify(e)}`)
        }
        if (!sameEntry(found(index, key), e)) throw new Error(`lookup(${key}) disagrees with the model`)
      }
      for (const key of touched) {
        if (!model.has(key) && index.lookup(hi(key), lo(key))) throw new Error(`removed key ${key} is still found`)
      }
      for (const key of [cursor, cursor + 1n, start - 1n]) {
        if (key < 0n || key > U64_MAX) continue
        if (!sameEntry(found(index, key), model.get(key))) throw new Error(`lookup(${key}) of a probe key`)
      }
      const live = sorted.filter(([, e]) => !e.deleted).length
      if (index.liveCount !== live) throw new Error(`liveCount ${index.liveCount}, model ${live}`)
      const deleted = sorted.length - live
      if (index.deletedCount !== deleted) throw new Error(`deletedCount ${index.deletedCount}, model ${deleted}`)
    }),
    { numRuns: 200 },
  )
  t.equal(runs >= 200, true, `${runs} random sequences agreed with the model`)
})
