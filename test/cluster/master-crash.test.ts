/**
 * `kill -9` of the master during a write loop, three times: several writers keep doing
 * assign (some with count=3) + upload while the master dies and is restarted on the same
 * directory and port.
 *
 * - Assigns fail while the master is down or not ready yet (connection errors, 503 with
 *   Retry-After) and are retried.
 * - No key is handed out twice: every fid's key (and key + d for count = N) is unique over the
 *   whole run, and the keys handed out by each master run are disjoint from every other run's.
 *   The master leases keys in small steps here, so that kills land between and during writes
 *   of its high-water mark.
 * - Every acknowledged upload reads back byte-identical from every replica.
 * - Uploads go to data servers, which the master's death does not touch: none fails.
 */
import t from 'tap'
import { startCluster } from '../helpers/cluster.js'
import { HttpClient, fidParts, forEachLimit, growVolumes, hostOf, lookup, moveFid, randomBody, sha256, volumeOf, volumeStatuses } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

const SEED = Number(process.env.NEEDLESTORE_MASTER_CRASH_SEED ?? 0x0c4a_5400)
const WRITERS = 6
const CRASHES = 3
/** Acknowledged uploads wanted between two crashes (and after the last restart). */
const ACKED_PER_ROUND = 40
const SIZE_MAX = 32 * 1024
const COUNT3_SHARE = 0.3
/** Keys the master leases per durable write of its high-water mark (the default is 10000). */
const KEY_LEASE = 16
/** Pause before a writer retries a failed assign (the master is down or not ready). */
const RETRY_PAUSE_MS = 20

interface Handed {
  readonly fid: string
  readonly count: number
  /** Which master run answered it: 0 before the first crash, 1 after the first restart, … */
  readonly run: number
}

interface Acked {
  readonly fid: string
  readonly size: number
  readonly sha256: string
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test(`kill -9 of the master during a write loop, ${CRASHES} times: no key handed out twice, every acknowledged upload intact`, async (t) => {
  const started = Date.now()
  // A small key lease, so that the master writes a new high-water mark every few assigns and a
  // kill may well land while one is being written.
  const cluster = await startCluster(t, { dataServers: 3, masterArgs: ['--key-lease', String(KEY_LEASE)] })
  const http = new HttpClient(t, 64)
  const master = cluster.masterUrl
  t.comment(`seed ${SEED} (NEEDLESTORE_MASTER_CRASH_SEED replays each writer's sizes, bodies and counts)`)

  // Volumes first, and a write through every copy of each, so that the writers start on a
  // settled cluster (every data server knows the other copies of its volumes).
  t.equal(await growVolumes(http, master, 3, '002'), 3, 'three 002 volumes grown')
  const probe = await cluster.assign('replication=002')
  for (const v of (await volumeStatuses(http, master)).values()) {
    for (const l of v.Locations) {
      const fid = moveFid(probe.fid, v.Id)
      await cluster.waitFor(`a write to volume ${v.Id} through ${l.url}`, async () => {
        const res = await http.call('POST', `http://${hostOf(l.url)}/${fid}`, { body: Buffer.from('probe') })
        return res.status === 201
      })
    }
  }

  const handed: Handed[] = []
  const acked: Acked[] = []
  const uploadFailures: string[] = []
  const assignFailures = { connection: 0, byStatus: new Map<string, number>(), withoutRetryAfter: [] as string[] }
  let run = 0
  let stopping = false

  const writer = async (w: number) => {
    const random = seededRandom(SEED + w * 7919)
    while (!stopping) {
      const count = random() < COUNT3_SHARE ? 3 : 1
      let answer
      try {
        answer = await http.call('GET', `${master}/dir/assign?count=${count}`, { timeoutMs: 5000 })
      } catch {
        assignFailures.connection++
        await pause(RETRY_PAUSE_MS)
        continue
      }
      if (answer.status !== 200) {
        const code = answer.status === 503 ? `503 ${answer.json<{ code?: string }>().code}` : `${answer.status} ${answer.text().slice(0, 200)}`
        assignFailures.byStatus.set(code, (assignFailures.byStatus.get(code) ?? 0) + 1)
        if (answer.status === 503 && answer.headers['retry-after'] === undefined) assignFailures.withoutRetryAfter.push(code)
        await pause(RETRY_PAUSE_MS)
        continue
      }
      const a = answer.json<{ fid: string; url: string; count: number }>()
      handed.push({ fid: a.fid, count, run })
      if (a.count !== count) uploadFailures.push(`assign count=${count} answered count ${a.count}`)
      for (let d = 0; d < count; d++) {
        const fid = d === 0 ? a.fid : `${a.fid}_${d}`
        const data = randomBody(random, 1 + Math.floor(random() * SIZE_MAX))
        try {
          const res = await http.call('POST', `http://${a.url}/${fid}`, { body: data, timeoutMs: 10_000 })
          if (res.status === 201) acked.push({ fid, size: data.length, sha256: sha256(data) })
          else uploadFailures.push(`POST ${a.url}/${fid} (master run ${run}): ${res.status} ${res.text().slice(0, 200)}`)
        } catch (err) {
          uploadFailures.push(`POST ${a.url}/${fid} (master run ${run}): ${(err as Error).message}`)
        }
      }
    }
  }
  const writers = Array.from({ length: WRITERS }, (_, w) => writer(w))

  try {
    for (let crash = 1; crash <= CRASHES; crash++) {
      const ackedBefore = acked.length
      await cluster.waitFor(`${ACKED_PER_ROUND} more acknowledged uploads`, async () => acked.length >= ackedBefore + ACKED_PER_ROUND)
      const exit = await cluster.master.kill9()
      const killedAt = Date.now()
      run = crash
      t.equal(exit.signal, 'SIGKILL', `crash ${crash}: the master is killed with ${acked.length} uploads acknowledged so far`)
      const failedBefore = assignFailures.connection
      await cluster.waitFor('the writers to notice the dead master', async () => assignFailures.connection >= failedBefore + WRITERS)
      await cluster.startMaster()
      t.comment(`crash ${crash}: the master was back and saw every data server ${Date.now() - killedAt} ms after the kill`)
    }
    const ackedBefore = acked.length
    await cluster.waitFor(`${ACKED_PER_ROUND} acknowledged uploads after the last restart`, async () => acked.length >= ackedBefore + ACKED_PER_ROUND)
  } finally {
    stopping = true
    await Promise.all(writers)
  }

  const statuses = [...assignFailures.byStatus].map(([k, n]) => `${n} × ${k}`).join(', ')
  t.comment(`${handed.length} assigns answered, ${acked.length} uploads acknowledged; assigns retried: ${assignFailures.connection} connection errors, ${statuses || 'no error answers'}`)
  t.ok(assignFailures.connection >= CRASHES * WRITERS, 'assigns failed while the master was down, and were retried')
  for (const key of assignFailures.byStatus.keys()) t.match(key, /^503 NS_ERR_NOT_READY$/, `an assign that the master answered with an error is a 503 NS_ERR_NOT_READY (${key})`)
  t.same(assignFailures.withoutRetryAfter, [], 'every 503 of assign carries Retry-After')

  // No key twice: over the whole run, and between the master's runs.
  const seen = new Map<bigint, string>()
  const duplicates: string[] = []
  const keysByRun: Array<Set<bigint>> = Array.from({ length: CRASHES + 1 }, () => new Set())
  for (const h of handed) {
    const { key } = fidParts(h.fid)
    for (let d = 0; d < h.count; d++) {
      const k = key + BigInt(d)
      const id = d === 0 ? h.fid : `${h.fid}_${d}`
      const earlier = seen.get(k)
      if (earlier !== undefined) duplicates.push(`key ${k.toString(16)}: ${earlier} and ${id} (run ${h.run})`)
      seen.set(k, `${id} (run ${h.run})`)
      keysByRun[h.run]!.add(k)
    }
  }
  t.same(duplicates, [], `${seen.size} keys handed out, none twice`)
  for (let a = 0; a <= CRASHES; a++) {
    t.ok(keysByRun[a]!.size > 0, `master run ${a} handed out ${keysByRun[a]!.size} keys`)
    for (let b = a + 1; b <= CRASHES; b++) {
      const shared = [...keysByRun[a]!].filter((k) => keysByRun[b]!.has(k))
      t.same(shared.map((k) => k.toString(16)), [], `the keys of master runs ${a} and ${b} are disjoint`)
    }
  }
  t.equal(new Set(handed.map((h) => h.fid)).size, handed.length, 'no fid handed out twice')

  // Summarized by master run and error code: a failure here tends to come in dozens.
  const failureSummary: Record<string, number> = {}
  for (const f of uploadFailures) {
    const key = `${/master run [0-9]+/.exec(f)?.[0] ?? 'assign'}: ${/NS_ERR_[A-Z_]+/.exec(f)?.[0] ?? f.slice(0, 120)}`
    failureSummary[key] = (failureSummary[key] ?? 0) + 1
  }
  t.same(failureSummary, {}, 'no upload failed: the data servers did not need the master to store them')
  if (uploadFailures.length > 0) t.comment(`the first failed uploads:\n${uploadFailures.slice(0, 5).join('\n')}`)

  // Every acknowledged upload, from every replica.
  const locations = new Map<number, string[]>()
  for (const vid of new Set(acked.map((a) => volumeOf(a.fid)))) {
    locations.set(vid, ((await lookup(http, master, String(vid))) ?? []).map((l) => l.publicUrl))
    t.equal(locations.get(vid)!.length, 3, `volume ${vid} has three live copies`)
  }
  const readFailures: string[] = []
  await forEachLimit(acked, 8, async (a) => {
    for (const where of locations.get(volumeOf(a.fid))!) {
      const res = await http.call('GET', `http://${where}/${a.fid}`)
      if (res.status !== 200 || res.body.length !== a.size || sha256(res.body) !== a.sha256) readFailures.push(`GET ${where}/${a.fid}: ${res.status}, ${res.body.length} bytes`)
    }
  })
  t.same(readFailures, [], `all ${acked.length} acknowledged uploads read back byte-identical from every replica`)

  // Volume ids are leased like keys: a volume grown after the crashes gets an id never used.
  const existing = new Set((await volumeStatuses(http, master)).keys())
  const res = await http.call('POST', `${master}/vol/grow?count=2&replication=002&collection=aftercrash`, { timeoutMs: 20_000 })
  t.equal(res.status, 200, `/vol/grow after the crashes: ${res.text()}`)
  const grown = [...(await volumeStatuses(http, master)).values()].filter((v) => v.Collection === 'aftercrash').map((v) => v.Id)
  t.equal(grown.length, 2, `two volumes grown after the crashes: ${grown.join(', ')}`)
  t.same(grown.filter((id) => existing.has(id)), [], `their ids are new (the ${existing.size} volumes before: ${[...existing].join(', ')})`)
  t.comment(`${Date.now() - started} ms in all`)
})
