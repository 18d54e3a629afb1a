/**
 * The SDK's deadlines against hung servers (SIGSTOP: sockets stay open, nothing answers),
 * with three data servers and replication 002:
 *
 * - a read whose first copy is hung fails over and succeeds within attemptTimeoutMs plus slack;
 * - with the master hung, calls that need it fail with NS_ERR_PEER_UNREACHABLE within their
 *   timeoutMs plus slack, and a read whose cache entry has expired still succeeds from it;
 * - with every copy of a file hung, a read fails with NS_ERR_PEER_UNREACHABLE within timeoutMs
 *   plus slack, and the error names the fid.
 */
import t from 'tap'
import { NeedleClient, type UploadResult } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'
import { failure } from '../helpers/client.js'

t.setTimeout(180_000)

const SEED = Number(process.env.NEEDLESTORE_SDK_HUNG_SEED ?? 0x5d4_0004)
const ATTEMPT_TIMEOUT_MS = 600
const TIMEOUT_MS = 5000
/** Scheduling on a busy two-core machine: what a bound may be exceeded by. */
const SLACK_MS = 1500

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now()
  const value = await p
  return { value, ms: Date.now() - started }
}

t.test('hung servers: failover within the attempt bound, and every call ends by its deadline', async (t) => {
  const random = seededRandom(SEED)
  const cluster = await startCluster(t, { dataServers: 3, deadAfterMs: 1500, heartbeatIntervalMs: 200 })
  // random: () => 0 fixes the order copies are tried in, so the test can hang the copy tried first.
  const client = new NeedleClient({ master: cluster.masterUrl, timeoutMs: TIMEOUT_MS, attemptTimeoutMs: ATTEMPT_TIMEOUT_MS, random: () => 0 })
  t.teardown(() => client.close())
  let nowMs = 0
  const clocked = new NeedleClient({ master: cluster.masterUrl, timeoutMs: TIMEOUT_MS, attemptTimeoutMs: ATTEMPT_TIMEOUT_MS, locationTtlMs: 1000, now: () => nowMs })
  t.teardown(() => clocked.close())

  const files: Array<{ result: UploadResult; sha256: string }> = []
  for (let i = 0; i < 8; i++) {
    const data = randomBody(random, 1 + Math.floor(random() * 50_000))
    const result = await cluster.waitFor('an upload', () => client.upload(data))
    files.push({ result, sha256: sha256(data) })
  }
  for (const f of files) {
    await client.download(f.result.fid)
    await clocked.download(f.result.fid)
  }

  // --- The copy a read tries first is hung.
  const first = files[0]!.result.fid
  const hungHost = new URL(await client.url(first)).host
  const hung = cluster.dataServerAt(hungHost)!
  await hung.sigstop()
  t.comment(`${hungHost} is stopped`)
  const failoversBefore = client.stats.failovers
  const read = await timed(client.download(first))
  t.equal(sha256(read.value), files[0]!.sha256, `${first} reads through another copy`)
  t.ok(read.ms < ATTEMPT_TIMEOUT_MS + SLACK_MS, `in ${read.ms} ms (attempt bound ${ATTEMPT_TIMEOUT_MS} ms + ${SLACK_MS} ms slack)`)
  t.ok(read.ms >= ATTEMPT_TIMEOUT_MS - 50, `after waiting out the hung copy (${read.ms} ms)`)
  t.ok(client.stats.failovers > failoversBefore, 'the client failed over')
  for (const f of files.slice(1)) {
    const r = await timed(client.download(f.result.fid))
    t.equal(sha256(r.value), f.sha256, `${f.result.fid} reads in ${r.ms} ms`)
    t.ok(r.ms < ATTEMPT_TIMEOUT_MS + SLACK_MS, 'within the attempt bound plus slack')
  }
  const head = await timed(client.head(first))
  t.equal(head.value.size, files[0]!.result.size, `head fails over too (${head.ms} ms)`)
  await hung.sigcont()
  await cluster.waitFor(`the master to list ${hungHost} as alive again`, async () => (await cluster.aliveDataServers()).has(hungHost))

  // --- The master is hung.
  await cluster.master.sigstop()
  t.comment('the master is stopped')
  for (const [what, call] of [
    ['clusterStatus', () => client.clusterStatus({ timeoutMs: 1500 })],
    ['volumeStatus', () => client.volumeStatus({ timeoutMs: 1500 })],
    ['lookup', () => client.lookup(first, { timeoutMs: 1500 })],
    ['upload', () => client.upload(Buffer.from('x'), { timeoutMs: 1500 })],
  ] as const) {
    const started = Date.now()
    const err = await failure(call())
    const ms = Date.now() - started
    t.equal(err.code, 'NS_ERR_PEER_UNREACHABLE', `${what}: ${err.message}`)
    t.equal(err.statusCode, undefined, `${what}: no status`)
    t.ok(ms >= 1400 && ms < 1500 + SLACK_MS, `${what} failed after ${ms} ms (timeoutMs 1500)`)
  }
  // The location cache outlives the master: an expired entry serves when the master does not answer.
  nowMs += 10_000
  const stale = await timed(clocked.download(first))
  t.equal(sha256(stale.value), files[0]!.sha256, `an expired cache entry still serves a read (${stale.ms} ms)`)
  t.equal(clocked.stats.staleHits, 1, 'counted as a stale hit')
  t.ok(stale.ms < ATTEMPT_TIMEOUT_MS + SLACK_MS, 'after one attempt at the master')
  await cluster.master.sigcont()
  await cluster.waitFor('the master to list every data server as alive', async () => (await cluster.aliveDataServers()).size === 3)

  // --- Every copy is hung.
  for (const p of cluster.dataServers) await p.sigstop()
  t.comment('every data server is stopped')
  const started = Date.now()
  const err = await failure(client.download(first, { timeoutMs: 2500 }))
  const ms = Date.now() - started
  t.equal(err.code, 'NS_ERR_PEER_UNREACHABLE', `a read of ${first}: ${err.message}`)
  t.equal(err.fid, first, 'the error names the fid')
  t.ok(err.message.includes(first), 'and so does its message')
  t.ok(ms < 2500 + SLACK_MS, `it failed after ${ms} ms (timeoutMs 2500)`)
  t.ok(err.attempts >= 3, `after ${err.attempts} attempts`)
})
