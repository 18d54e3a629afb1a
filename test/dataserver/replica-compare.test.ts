/**
 * The rules that compare the copies of one key (pure): what each copy's problem is, which copy
 * is the source of a repair, and which findings wait for the settle time.
 */
import t from 'tap'
import { compareKey, keyHex, parseKeyHex, type KeyState } from '../../src/dataserver/replica-compare.js'

const NOW = 1_700_000_000_000
const SETTLE = 60_000
const OLD = NOW - 10 * SETTLE

function live(md5 = 'aa', over: Partial<KeyState> = {}): KeyState {
  return { key: '0000000000000001', cookie: '12345678', state: 'live', size: 10, md5, appendAtMs: OLD, ...over }
}
const damaged = (over: Partial<KeyState> = {}): KeyState => ({ ...live('', over), state: 'damaged', size: 0, error: 'checksum mismatch', ...over })
const deleted = (over: Partial<KeyState> = {}): KeyState => ({ ...live('', over), state: 'deleted', ...over })

t.test('copies that agree, or hold nothing live, need nothing', async (t) => {
  t.same(compareKey([live(), live(), live()], NOW, SETTLE), [])
  t.same(compareKey([deleted(), deleted(), undefined], NOW, SETTLE), [], 'deleted here, absent there: deleted')
  t.same(compareKey([undefined, undefined, undefined], NOW, SETTLE), [])
})

t.test('a damaged copy is repaired from a whole one at once, even when recent', async (t) => {
  const recent = NOW - 1000
  const found = compareKey([live('aa', { appendAtMs: recent }), damaged(), live('aa', { appendAtMs: recent })], NOW, SETTLE)
  t.same(found.map((f) => [f.copy, f.problem, f.action, f.from, f.cookie]), [[1, 'damaged', 'copy', 0, '12345678']])
})

t.test('a damaged needle with a garbled cookie gets the good copy\'s cookie', async (t) => {
  const found = compareKey([damaged({ cookie: 'ffffffff' }), live(), live()], NOW, SETTLE)
  t.same(found.map((f) => [f.copy, f.problem, f.from, f.cookie]), [[0, 'damaged', 1, '12345678']])
})

t.test('missing on a minority: copied there once settled', async (t) => {
  t.same(compareKey([live(), undefined, live()], NOW, SETTLE).map((f) => [f.copy, f.problem, f.action, f.from]), [[1, 'missing', 'copy', 0]])
  const recent = compareKey([live('aa', { appendAtMs: NOW - 1000 }), undefined, live()], NOW, SETTLE)
  t.same(recent.map((f) => [f.copy, f.problem, f.action]), [[1, 'missing', 'none']], 'a recent write may still be on its way')
  t.match(recent[0]!.why, /recent/)
})

t.test('live on a minority only: extra, deleted there once settled', async (t) => {
  t.same(compareKey([undefined, live(), undefined], NOW, SETTLE).map((f) => [f.copy, f.problem, f.action, f.cookie]), [[1, 'extra', 'delete', '12345678']])
  t.same(compareKey([undefined, damaged(), undefined], NOW, SETTLE).map((f) => [f.copy, f.problem, f.action]), [[1, 'extra', 'delete']], 'damaged and extra: deleted, not repaired')
  t.same(compareKey([undefined, live('aa', { appendAtMs: NOW }), undefined], NOW, SETTLE).map((f) => f.action), ['none'])
})

t.test('two copies: one live copy of two is kept, not deleted', async (t) => {
  t.same(compareKey([live(), undefined], NOW, SETTLE).map((f) => [f.copy, f.problem, f.action]), [[1, 'missing', 'copy']])
})

t.test('deleted anywhere: the delete wins on every live copy', async (t) => {
  const found = compareKey([live(), deleted(), damaged()], NOW, SETTLE)
  t.same(found.map((f) => [f.copy, f.problem, f.action]), [[0, 'deleted', 'delete'], [2, 'deleted', 'delete']])
  const recent = compareKey([live(), deleted({ appendAtMs: NOW - 10 }), live()], NOW, SETTLE)
  t.same(recent.map((f) => f.action), ['none', 'none'], 'a delete still on its way is left alone')
})

t.test('whole copies vote on the content; the others get the majority\'s', async (t) => {
  const found = compareKey([live('bb'), live('aa'), live('aa')], NOW, SETTLE)
  t.same(found.map((f) => [f.copy, f.problem, f.action, f.from]), [[0, 'mismatch', 'copy', 1]])
  const mixed = compareKey([live('aa'), damaged(), live('bb')], NOW, SETTLE)
  t.same(mixed.map((f) => [f.copy, f.problem]), [[1, 'damaged'], [2, 'mismatch']], 'a tie goes to the first whole copy')
})

t.test('damaged everywhere it lives: lost, nothing to do', async (t) => {
  t.same(compareKey([damaged(), damaged(), undefined], NOW, SETTLE).map((f) => [f.copy, f.problem, f.action]), [[0, 'lost', 'none'], [1, 'lost', 'none']])
})

t.test('keys as fixed-width hex', async (t) => {
  t.equal(keyHex(0, 1), '0000000000000001')
  t.equal(keyHex(0xffffffff, 0x0000abcd), 'ffffffff0000abcd')
  t.same(parseKeyHex('ffffffff0000abcd'), { keyHi: 0xffffffff, keyLo: 0xabcd })
  t.same(parseKeyHex('1'), { keyHi: 0, keyLo: 1 })
  t.equal(parseKeyHex(''), undefined)
  t.equal(parseKeyHex('12345678901234567'), undefined)
  t.equal(parseKeyHex('xyz'), undefined)
  t.ok(keyHex(1, 0) > keyHex(0, 0xffffffff), 'string order is key order')
})
