import t from 'tap'
import { codeOfCall } from '../helpers/volume.js'
import { signToken, tokenSubject, verifyToken } from '../../src/common/token.js'

const SECRET = 'cluster-secret'
const NOW = 1_700_000_000_000

t.test('a token is valid for its fid, every _d id of it, until it expires', async (t) => {
  const token = signToken(SECRET, '3,01637037d6', 10, NOW)
  t.equal(codeOfCall(() => verifyToken(SECRET, token, '3,01637037d6', NOW)), "returned")
  t.equal(codeOfCall(() => verifyToken(SECRET, token, '3,01637037d6_2', NOW)), "returned", 'a count=N id')
  t.equal(codeOfCall(() => verifyToken(SECRET, token, '3,01637037d6', NOW + 9_999)), "returned")
  t.equal(codeOfCall(() => verifyToken(SECRET, token, '3,01637037d6', NOW + 10_000)), 'NS_ERR_UNAUTHORIZED', 'expired')
  t.equal(codeOfCall(() => verifyToken(SECRET, token, '3,02637037d6', NOW)), 'NS_ERR_UNAUTHORIZED', 'another fid')
  t.equal(codeOfCall(() => verifyToken('other', token, '3,01637037d6', NOW)), 'NS_ERR_UNAUTHORIZED', 'another secret')
})

t.test('malformed or forged tokens are refused', async (t) => {
  const token = signToken(SECRET, '3,01637037d6', 10, NOW)
  const [h, p, s] = token.split('.') as [string, string, string]
  const forgedPayload = Buffer.from(JSON.stringify({ fid: '3,01637037d6', exp: NOW / 1000 + 1e6 })).toString('base64url')
  const none = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')
  for (const bad of [undefined, '', 'x', 'a.b', `${h}.${p}`, `${h}.${forgedPayload}.${s}`, `${none}.${p}.`, `${h}.${p}.${s}x`, 'a'.repeat(5000)]) {
    t.equal(codeOfCall(() => verifyToken(SECRET, bad, '3,01637037d6', NOW)), 'NS_ERR_UNAUTHORIZED', String(bad).slice(0, 40))
  }
})

t.test('the subject drops the _d suffix and an extension', async (t) => {
  t.equal(tokenSubject('3,01637037d6'), '3,01637037d6')
  t.equal(tokenSubject('3,01637037d6_12'), '3,01637037d6')
  t.equal(tokenSubject('3,01637037d6.jpg'), '3,01637037d6')
})
