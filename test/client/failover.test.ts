/**
 * The SDK when a data server dies (`kill -9`), with four data servers and replication 002:
 *
 * - a client whose location cache still names the dead server reads every file, byte for
 *   byte, through the other copies: at once (connection refused), before the master notices;
 * - so does a fresh client, while the master still lists the dead server and after it has
 *   marked it dead;
 * - once the master has marked it dead, uploads through the SDK succeed again (volumes with a
 *   copy on the dead server take no writes; the client gets a new fid when one is refused).
 */
import t from 'tap'
import { NeedleClient, type UploadResult } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(180_000)

const SEED = Number(process.env.NEEDLESTORE_SDK_FAILOVER_SEED ?? 0x5d4_0003)
const FILES = 40
const SIZE_MAX = 96 * 1024

t.test('kill -9 of a data server: every file still reads through the SDK, cached location or not', async (t) => {
  const random = seededRandom(SEED)
  t.comment(`seed ${SEED} (NEEDLESTORE_SDK_FAILOVER_SEED replays the bodies)`)
  const cluster = await startCluster(t, { dataServers: 4, deadAfterMs: 1500, heartbeatIntervalMs: 200 })
  // random: () => 0 fixes the order copies are tried in, so the test can pick the copy a read tries first.
  const warm = new NeedleClient({ master: cluster.masterUrl, timeoutMs: 15_000, random: () => 0 })
  t.teardown(() => warm.close())

  const files: Array<{ result: UploadResult; sha256: string }> = []
  const bodies = Array.from({ length: FILES }, () => randomBody(random, 1 + Math.floor(random() * SIZE_MAX)))
  const results = await warm.uploadMany(bodies.map((data, i) => ({ data, fileName: `f${i}.bin` })))
  for (const [i, r] of results.entries()) {
    if (r instanceof Error) throw r
    files.push({ result: r, sha256: sha256(bodies[i]!) })
  }
  const volumes = new Set(files.map((f) => f.result.fid.split(',')[0]))
  t.pass(`${FILES} files uploaded into volumes ${[...volumes].join(', ')}`)
  for (const f of files) await warm.download(f.result.fid)
  const lookupsBefore = warm.stats.masterLookups

  // The victim is the copy the warm client tries first for the first file.
  const victimHost = new URL(await warm.url(files[0]!.result.fid)).host
  const victim = cluster.dataServerAt(victimHost)!
  t.ok(victim, `the victim is ${victimHost}`)
  await victim.kill9()
  const killedAt = Date.now()

  const problems: string[] = []
  for (const f of files) {
    try {
      const got = await warm.download(f.result.fid)
      if (sha256(got) !== f.sha256) problems.push(`${f.result.fid}: other bytes`)
    } catch (err) {
      problems.push(`${f.result.fid}: ${(err as Error).message}`)
    }
  }
  t.same(problems, [], `the warm client read all ${FILES} files ${Date.now() - killedAt} ms after the kill`)
  t.ok(warm.stats.failovers >= 1, `it failed over from the dead copy (${warm.stats.failovers} failovers)`)
  const info = await warm.head(files[0]!.result.fid)
  t.equal(info.size, files[0]!.result.size, 'head of the first file fails over too')
  t.comment(`master lookups during the reads: ${warm.stats.masterLookups - lookupsBefore}`)

  const fresh = new NeedleClient({ master: cluster.masterUrl, timeoutMs: 15_000 })
  t.teardown(() => fresh.close())
  const freshProblems: string[] = []
  for (const f of files) {
    try {
      if (sha256(await fresh.download(f.result.fid)) !== f.sha256) freshProblems.push(`${f.result.fid}: other bytes`)
    } catch (err) {
      freshProblems.push(`${f.result.fid}: ${(err as Error).message}`)
    }
  }
  t.same(freshProblems, [], 'a client without a cache reads every file too')

  await cluster.waitFor(`the master to mark ${victimHost} dead`, async () => !(await cluster.aliveDataServers()).has(victimHost))
  const after = new NeedleClient({ master: cluster.masterUrl, timeoutMs: 15_000 })
  t.teardown(() => after.close())
  for (const f of files) t.equal(sha256(await after.download(f.result.fid)), f.sha256, `${f.result.fid} reads once the server is dead`)
  const data = randomBody(random, 50_000)
  const stored = await cluster.waitFor('an upload through the SDK to succeed', () => after.upload(data))
  const locations = await after.lookup(stored.fid)
  t.notOk(locations.some((l) => l.publicUrl === victimHost), `the new file ${stored.fid} has no copy on the dead server`)
  t.equal(sha256(await after.download(stored.fid)), sha256(data), 'and reads back')
})
