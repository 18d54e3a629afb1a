/**
 * `needlestore verify`'s output: the table of volumes, one line per problem, and a volume
 * that could not be verified.
 */
import t from 'tap'
import type { VolumeVerifyReport } from '../../src/client/index.js'
import { formatVerify } from '../../src/cli/verify.js'

const none = { damaged: 0, missing: 0, mismatch: 0, extra: 0, deleted: 0, lost: 0 }

function report(over: Partial<VolumeVerifyReport>): VolumeVerifyReport {
  return {
    volume: 1,
    copies: ['a:1', 'b:2', 'c:3'],
    copiesExpected: 3,
    checked: 10,
    repair: false,
    counts: none,
    damaged: [],
    missing: [],
    mismatch: [],
    extra: [],
    deleted: [],
    lost: [],
    repaired: 0,
    unrepaired: 0,
    failed: [],
    ok: true,
    ...over,
  }
}

t.test('a table of the volumes, then one line per problem', async (t) => {
  const text = formatVerify([
    { volume: 1, report: report({}) },
    {
      volume: 2,
      report: report({
        volume: 2,
        counts: { ...none, damaged: 1, extra: 1 },
        damaged: [{ fid: '2,01637037d6', copy: 'b:2', problem: 'damaged', why: 'checksum mismatch', repair: 'copied from a:1' }],
        extra: [{ fid: '2,02637037d6', copy: 'c:3', problem: 'extra', why: 'on 1 of 3 copies only' }],
        repaired: 1,
        unrepaired: 1,
        ok: false,
      }),
    },
    { volume: 3, error: 'no live copy', code: 'NS_ERR_VOLUME_NOT_FOUND' },
  ])
  const lines = text.trimEnd().split('\n')
  t.match(lines[0], /^VOLUME\s+COPIES\s+CHECKED\s+DAMAGED\s+MISSING\s+MISMATCH\s+EXTRA\s+DELETED\s+LOST\s+REPAIRED\s+LEFT\s+STATE$/)
  t.match(lines[1], /^\s*1\s+3\/3\s+10(\s+0){8}\s+ok$/)
  t.match(lines[2], /^\s*2\s+3\/3\s+10\s+1\s+0\s+0\s+1\s+0\s+0\s+1\s+1\s+PROBLEMS$/)
  t.match(lines[3], /^\s*3\s+error$/)
  t.equal(lines[4], '2,01637037d6\tb:2\tdamaged\tcopied from a:1', 'a repaired problem says what was done')
  t.equal(lines[5], '2,02637037d6\tc:3\textra\ton 1 of 3 copies only', 'an unrepaired one says why')
  t.equal(lines.length, 6)
})
