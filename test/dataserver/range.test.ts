import t from 'tap'
import fc from 'fast-check'
import { parseRange } from '../../src/dataserver/range.js'

t.test('single ranges', async (t) => {
  t.same(parseRange('bytes=0-9', 100), { kind: 'range', start: 0, end: 9 })
  t.same(parseRange('bytes=10-10', 100), { kind: 'range', start: 10, end: 10 }, 'one byte')
  t.same(parseRange('bytes=5-', 100), { kind: 'range', start: 5, end: 99 }, 'open end')
  t.same(parseRange('bytes=0-', 1), { kind: 'range', start: 0, end: 0 })
  t.same(parseRange('bytes=-3', 100), { kind: 'range', start: 97, end: 99 }, 'suffix')
  t.same(parseRange('bytes=-300', 100), { kind: 'range', start: 0, end: 99 }, 'a suffix longer than the file is the whole file')
  t.same(parseRange('bytes=99-99', 100), { kind: 'range', start: 99, end: 99 }, 'last byte')
  t.same(parseRange('bytes= 2 - 4 ', 100), { kind: 'range', start: 2, end: 4 }, 'optional whitespace')
})

t.test('clamping and unsatisfiable ranges', async (t) => {
  t.same(parseRange('bytes=90-200', 100), { kind: 'range', start: 90, end: 99 }, 'end beyond the size is clamped')
  t.same(parseRange('bytes=0-99999999999999999999', 100), { kind: 'range', start: 0, end: 99 })
  t.same(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' }, 'start at the size')
  t.same(parseRange('bytes=150-200', 100), { kind: 'unsatisfiable' }, 'start beyond the size')
  t.same(parseRange('bytes=99999999999999999999-', 100), { kind: 'unsatisfiable' })
  t.same(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' }, 'an empty suffix')
})

t.test('invalid headers are ignored', async (t) => {
  t.same(parseRange(undefined, 100), { kind: 'none' })
  t.same(parseRange('', 100), { kind: 'none' })
  t.same(parseRange('bytes=9-5', 100), { kind: 'none' }, 'last before first')
  t.same(parseRange('bytes=0-1,5-6', 100), { kind: 'none' }, 'multiple ranges answer the whole file')
  t.same(parseRange('bytes=-', 100), { kind: 'none' })
  t.same(parseRange('bytes=', 100), { kind: 'none' })
  t.same(parseRange('bytes=a-b', 100), { kind: 'none' })
  t.same(parseRange('bytes=1.5-3', 100), { kind: 'none' })
  t.same(parseRange('bytes=-1-3', 100), { kind: 'none' })
  t.same(parseRange('items=0-9', 100), { kind: 'none' }, 'another unit')
  t.same(parseRange('0-9', 100), { kind: 'none' })
  t.same(parseRange('garbage', 100), { kind: 'none' })
})

t.test('a zero-size file', async (t) => {
  t.same(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' })
  t.same(parseRange('bytes=0-', 0), { kind: 'unsatisfiable' })
  t.same(parseRange('bytes=-5', 0), { kind: 'unsatisfiable' })
  t.same(parseRange(undefined, 0), { kind: 'none' })
  t.same(parseRange('bytes=3-1', 0), { kind: 'none' })
})

t.test('every satisfiable range lies within the file', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 1000 }),
      fc.option(fc.integer({ min: 0, max: 1500 })),
      fc.option(fc.integer({ min: 0, max: 1500 })),
      (size, first, last) => {
        const header = `bytes=${first ?? ''}-${last ?? ''}`
        const r = parseRange(header, size)
        let ok: boolean
        if (first === null && last === null) ok = r.kind === 'none'
        else if (first !== null && last !== null && last < first) ok = r.kind === 'none'
        else if (first === null) {
          // A suffix of `last` bytes.
          ok = last === 0 || size === 0 ? r.kind === 'unsatisfiable' : r.kind === 'range' && r.start === Math.max(0, size - last!) && r.end === size - 1
        } else if (first >= size) ok = r.kind === 'unsatisfiable'
        else ok = r.kind === 'range' && r.start === first && r.end === Math.min(last ?? size - 1, size - 1)
        if (ok && r.kind === 'range') ok = r.start >= 0 && r.start <= r.end && r.end < size
        if (!ok) failures++
        return ok
      },
    ),
    { numRuns: 2000, seed: 5 },
  )
  t.equal(failures, 0)
})
