/**
 * A hung replica (SIGSTOP: its sockets stay open, nothing answers) among four data servers
 * whose forwarded writes time out after --replicate-timeout-ms 1000:
 *
 * - a write to a volume with a copy on the hung server, sent to a live copy, fails within a
 *   bound with a 5xx and is not acknowledged; the live copies then drop it (404), so the copies
 *   converge without the failed write;
 * - writes to volumes without a copy there keep answering 201 meanwhile;
 * - once the master has marked the hung server dead, assigns avoid its volumes;
 * - after SIGCONT the server's volumes become writable again, the failed write is gone from
 *   every copy (the resumed one included), and new writes to them reach all three copies.
 */
import t from 'tap'
import { startCluster } from '../helpers/cluster.js'
import { HttpClient, growVolumes, hostOf, lookup, moveFid, randomBody, sha256, volumeOf, volumeStatuses, type Reply } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

const SEED = Number(process.env.NEEDLESTORE_HUNG_SEED ?? 0x5700_0004)
const REPLICATE_TIMEOUT_MS = 1000
/** How long a write to a volume with a hung copy may take to fail. */
const FAIL_WITHIN_MS = 5000

interface Target {
  readonly volume: number
  /** `host:port` of each copy. */
  readonly copies: readonly string[]
}

t.test('a SIGSTOPped replica: writes to its volumes fail in time and are not kept; other volumes keep working', async (t) => {
  const started = Date.now()
  const cluster = await startCluster(t, { dataServers: 4, deadAfterMs: 1500, heartbeatIntervalMs: 200, replicateTimeoutMs: REPLICATE_TIMEOUT_MS })
  const http = new HttpClient(t, 64)
  const master = cluster.masterUrl
  const random = seededRandom(SEED)
  t.comment(`seed ${SEED} (NEEDLESTORE_HUNG_SEED replays the bodies)`)

  t.equal(await growVolumes(http, master, 6, '002'), 6, 'six 002 volumes grown')
  const volumes: Target[] = [...(await volumeStatuses(http, master)).values()].map((v) => ({ volume: v.Id, copies: v.Locations.map((l) => hostOf(l.url)) }))
  const addresses = cluster.dataServers.map((p) => p.address)
  // The hung server: the first with copies of some volumes and not of others.
  const xi = addresses.findIndex((a) => volumes.some((v) => v.copies.includes(a)) && volumes.some((v) => !v.copies.includes(a)))
  t.ok(xi >= 0, 'a data server holds copies of some volumes and not of others')
  const hung = addresses[xi]!
  const withHung = volumes.filter((v) => v.copies.includes(hung))
  const withoutHung = volumes.filter((v) => !v.copies.includes(hung))
  t.comment(`hung server ${hung}: volumes with a copy there ${withHung.map((v) => v.volume).join(', ')}; without ${withoutHung.map((v) => v.volume).join(', ')}`)

  // Fresh keys come from assign (the key is unique across volumes), moved into the volume wanted.
  const keySource = (await cluster.assign('count=1000')).fid
  let keysUsed = 0
  const freshFid = (volume: number): string => moveFid(`${keySource}_${keysUsed++}`, volume)
  /** POSTs bytes to fid at `at`; `_d` fids are sent as they are. */
  const write = (at: string, fid: string, data: Buffer, timeoutMs = 15_000): Promise<Reply> => http.call('POST', `http://${at}/${fid}`, { body: data, timeoutMs })
  const readFrom = async (at: string, fid: string): Promise<Reply> => http.call('GET', `http://${at}/${fid}`, { timeoutMs: 5000 })

  // Every copy of every volume takes writes before the pause (and each server knows the others).
  const before: Array<{ fid: string; volume: Target; sha256: string }> = []
  for (const v of volumes) {
    for (const at of v.copies) {
      const fid = freshFid(v.volume)
      const data = randomBody(random, 1 + Math.floor(random() * 20_000))
      await cluster.waitFor(`a write to volume ${v.volume} through ${at}`, async () => (await write(at, fid, data)).status === 201)
      before.push({ fid, volume: v, sha256: sha256(data) })
    }
  }

  // --- SIGSTOP: writes to volumes with a copy on the hung server fail within the bound.
  await cluster.dataServers[xi]!.sigstop()
  const pausedAt = Date.now()
  t.pass(`${hung} is stopped`)

  // Meanwhile, a loop of writes to volumes without a hung copy, through each of their copies.
  let stopping = false
  const otherWrites = { ok: 0, failures: [] as string[], slowestMs: 0 }
  const loopRandom = seededRandom(SEED ^ 0x0f0f_0f0f)
  const otherLoop = (async () => {
    for (let i = 0; !stopping; i++) {
      const v = withoutHung[i % withoutHung.length]!
      const at = v.copies[Math.floor(i / withoutHung.length) % v.copies.length]!
      const fid = freshFid(v.volume)
      const t0 = Date.now()
      try {
        const res = await write(at, fid, randomBody(loopRandom, 4096), 10_000)
        if (res.status === 201) otherWrites.ok++
        else otherWrites.failures.push(`POST ${at}/${fid}: ${res.status} ${res.text().slice(0, 200)}`)
      } catch (err) {
        otherWrites.failures.push(`POST ${at}/${fid}: ${(err as Error).message}`)
      }
      otherWrites.slowestMs = Math.max(otherWrites.slowestMs, Date.now() - t0)
    }
  })()

  const failed: Array<{ fid: string; volume: Target; at: string }> = []
  try {
    // One write per volume with a hung copy, all at once, each sent to a live copy.
    const attempts = withHung.map((v, i) => {
      const live = v.copies.filter((c) => c !== hung)
      return { v, at: live[i % live.length]!, fid: freshFid(v.volume), data: randomBody(random, 1 + Math.floor(random() * 50_000)) }
    })
    const outcomes = await Promise.all(
      attempts.map(async (a) => {
        const t0 = Date.now()
        const res = await write(a.at, a.fid, a.data, FAIL_WITHIN_MS + 10_000)
        return { ...a, res, ms: Date.now() - t0 }
      }),
    )
    for (const o of outcomes) {
      const body = o.res.text()
      t.ok(o.res.status >= 500 && o.res.status < 600, `POST ${o.at}/${o.fid} (volume ${o.v.volume}, copy on the hung ${hung}) answers ${o.res.status}: ${body.slice(0, 300)}`)
      t.not(o.res.status, 201, 'the write is not acknowledged')
      t.ok(o.ms < FAIL_WITHIN_MS, `it failed after ${o.ms} ms (bound ${FAIL_WITHIN_MS} ms, replicate timeout ${REPLICATE_TIMEOUT_MS} ms)`)
      if (o.res.status === 503) t.equal(o.res.json<{ code?: string }>().code, 'NS_ERR_REPLICATION_FAILED', 'the code says the replication failed')
      failed.push({ fid: o.fid, volume: o.v, at: o.at })
    }

    // The live copies drop the failed write once it is reconciled.
    for (const f of failed) {
      const live = f.volume.copies.filter((c) => c !== hung)
      await cluster.waitFor(`${f.fid} to be gone from the live copies ${live.join(', ')}`, async () => {
        for (const at of live) if ((await readFrom(at, f.fid)).status !== 404) return false
        return true
      })
      t.pass(`${f.fid} (never acknowledged) reads 404 on the live copies ${live.join(', ')}`)
    }

    // Files stored before the pause still read from the live copies.
    const readFailures: string[] = []
    for (const b of before) {
      for (const at of b.volume.copies.filter((c) => c !== hung)) {
        const res = await readFrom(at, b.fid)
        if (res.status !== 200 || sha256(res.body) !== b.sha256) readFailures.push(`GET ${at}/${b.fid}: ${res.status}`)
      }
    }
    t.same(readFailures, [], 'files stored before the pause read from every live copy')

    // The master notices: the hung server is dead, and assigns avoid its volumes.
    await cluster.waitFor(`the master to mark ${hung} dead`, async () => !(await cluster.aliveDataServers()).has(hung))
    t.pass(`the master marked ${hung} dead ${Date.now() - pausedAt} ms after the SIGSTOP`)
    const assigned = new Set<number>()
    for (let i = 0; i < 30; i++) {
      const a = await cluster.assign('replication=002')
      assigned.add(volumeOf(a.fid))
    }
    const onHung = [...assigned].filter((vid) => withHung.some((v) => v.volume === vid))
    t.same(onHung, [], `30 assigns while ${hung} is hung name only volumes without a copy there (${[...assigned].join(', ')})`)
    const status = await volumeStatuses(http, master)
    for (const v of withHung) t.equal(status.get(v.volume)?.Writable, false, `/vol/status: volume ${v.volume} is not writable (${status.get(v.volume)?.Reason})`)
  } finally {
    stopping = true
    await otherLoop
  }
  t.same(otherWrites.failures, [], `${otherWrites.ok} writes to volumes without a hung copy answered 201 meanwhile (slowest ${otherWrites.slowestMs} ms)`)
  t.ok(otherWrites.ok > 0, 'the other volumes took writes while the server was hung')
  t.ok(otherWrites.slowestMs < FAIL_WITHIN_MS, `none of them waited for the hung server (slowest ${otherWrites.slowestMs} ms)`)

  // --- SIGCONT: the server comes back; its volumes recover.
  await cluster.dataServers[xi]!.sigcont()
  const resumedAt = Date.now()
  await cluster.waitFor(`the master to list ${hung} as alive again`, async () => (await cluster.aliveDataServers()).has(hung))
  await cluster.waitFor(`volumes ${withHung.map((v) => v.volume).join(', ')} to be writable again`, async () => {
    const status = await volumeStatuses(http, master)
    return withHung.every((v) => status.get(v.volume)?.Writable === true)
  })
  t.pass(`volumes with a copy on ${hung} are writable again ${Date.now() - resumedAt} ms after the SIGCONT`)

  // The failed writes are gone from every copy, the resumed one included: one live set.
  const leftovers: string[] = []
  for (const f of failed) {
    for (const at of f.volume.copies) {
      const res = await readFrom(at, f.fid)
      if (res.status !== 404) leftovers.push(`GET ${at}/${f.fid}: ${res.status}${at === hung ? ' (the resumed server)' : ''}`)
    }
  }
  t.same(leftovers, [], 'the writes that failed are on no copy once the volumes are writable again')

  const resumedReads: string[] = []
  for (const b of before.filter((x) => x.volume.copies.includes(hung))) {
    const res = await readFrom(hung, b.fid)
    if (res.status !== 200 || sha256(res.body) !== b.sha256) resumedReads.push(`GET ${hung}/${b.fid}: ${res.status}`)
  }
  t.same(resumedReads, [], `the resumed ${hung} serves the files it had`)

  // Assign hands out its volumes again; a new write there reaches all three copies.
  let assigns = 0
  const again = await cluster.waitFor(`an assign in a volume with a copy on ${hung}`, async () => {
    assigns++
    const a = await cluster.assign('replication=002')
    return withHung.some((v) => v.volume === volumeOf(a.fid)) ? a : undefined
  })
  t.pass(`assign handed out ${again.fid} after ${assigns} assigns`)
  const data = randomBody(random, 30_000)
  const res = await write(again.url, again.fid, data)
  t.equal(res.status, 201, `POST ${again.url}/${again.fid}: ${res.text()}`)
  const copies = ((await lookup(http, master, again.fid)) ?? []).map((l) => l.publicUrl)
  t.equal(copies.length, 3, 'three copies listed')
  t.ok(copies.includes(hung), 'the resumed server is one of them')
  for (const at of copies) {
    const got = await readFrom(at, again.fid)
    t.equal(got.status, 200, `${at} has the new file`)
    t.equal(sha256(got.body), sha256(data), `${at} holds the same bytes`)
  }
  t.comment(`${Date.now() - started} ms in all`)
})
