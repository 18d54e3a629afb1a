/**
 * Re-replication with real processes: four data servers, `002` volumes (three copies), one data
 * server killed for good.
 *
 * - Automatic: with a short --repair-after-ms, every volume that had a copy on the dead server
 *   gets three live copies again; reads through lookup never fail meanwhile; the new copy's
 *   `.dat` is byte-identical to a live copy's; every file reads back on every copy; the volumes
 *   take writes again on all three copies; after a master restart, the dead server, restarted,
 *   is told to drop its replaced copies and lookups never name it for them.
 * - On demand: with the timer effectively off, `fix-replication --dry-run` prints the plan and
 *   changes nothing; `fix-replication` does it; a second run finds nothing to do.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import { HttpClient, forEachLimit, growVolumes, hostOf, lookup, moveFid, randomBody, sha256, volumeOf, volumeStatuses } from '../helpers/cluster-io.js'
import { CLI_PATH, repoRoot } from '../helpers/dataserver-process.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(240_000)

const SEED = Number(process.env.NEEDLESTORE_REPAIR_SEED ?? 0x2e_2e_2e)
const SIZE_MAX = 32 * 1024

interface Stored {
  readonly fid: string
  readonly sha256: string
}

/** Grows `count` 002 volumes, makes every copy take a write, and stores `files` files spread over them. */
async function fill(cluster: Cluster, http: HttpClient, count: number, files: number, random: () => number) {
  await growVolumes(http, cluster.masterUrl, count, '002')
  const status = await volumeStatuses(http, cluster.masterUrl)
  const known = new Map([...status.values()].map((v) => [v.Id, v.Locations.map((l) => hostOf(l.url))]))
  // Every copy takes a write first, so that each data server knows the other copies of its new
  // volumes (growth and heartbeats race).
  const probe = await cluster.assign('replication=002')
  for (const [vid, hosts] of known) {
    for (const at of hosts) {
      await cluster.waitFor(`a write to volume ${vid} through ${at}`, async () => (await http.call('POST', `http://${at}/${moveFid(probe.fid, vid)}`, { body: Buffer.from('probe') })).status === 201)
    }
  }
  const vids = [...known.keys()]
  const stored: Stored[] = []
  const problems: string[] = []
  await forEachLimit(
    Array.from({ length: files }, (_, i) => i),
    6,
    async (i) => {
      const size = 1 + Math.floor(random() * SIZE_MAX)
      const data = randomBody(random, size)
      const a = await cluster.assign('replication=002')
      const vid = vids[i % vids.length]!
      const fid = moveFid(a.fid, vid)
      const at = known.get(vid)![i % 3]!
      const res = await http.call('POST', `http://${at}/${fid}`, { body: data })
      if (res.status !== 201) problems.push(`POST ${at}/${fid}: ${res.status} ${res.text()}`)
      else stored.push({ fid, sha256: sha256(data) })
    },
  )
  return { known, stored, problems }
}

/** The data server index holding the most copies. */
function victimOf(cluster: Cluster, known: Map<number, string[]>): number {
  const addresses = cluster.dataServers.map((p) => p.address)
  const copiesOn = (a: string) => [...known.values()].filter((hosts) => hosts.includes(a)).length
  return addresses.reduce((best, a, i) => (copiesOn(a) > copiesOn(addresses[best]!) ? i : best), 0)
}

/** Reads f through the locations lookup lists, in turn from `start`; undefined when one copy served it. */
async function readThroughLookup(http: HttpClient, master: string, f: Stored, start: number): Promise<string | undefined> {
  const listed = ((await lookup(http, master, f.fid)) ?? []).map((l) => l.publicUrl)
  const why: string[] = []
  for (let k = 0; k < listed.length; k++) {
    const where = listed[(start + k) % listed.length]!
    try {
      const res = await http.call('GET', `http://${where}/${f.fid}`, { timeoutMs: 5000 })
      if (res.status === 200 && sha256(res.body) === f.sha256) return undefined
      why.push(`${where}: ${res.status}`)
    } catch (err) {
      why.push(`${where}: ${(err as Error).message}`)
    }
  }
  return `${f.fid} (locations ${listed.join(', ') || 'none'}): ${why.join('; ')}`
}

/** Every file on every location /vol/status lists for its volume: the problems found. */
async function readEverywhere(http: HttpClient, master: string, files: readonly Stored[]): Promise<string[]> {
  const status = await volumeStatuses(http, master)
  const problems: string[] = []
  await forEachLimit(files, 6, async (f) => {
    for (const l of status.get(volumeOf(f.fid))?.Locations ?? []) {
      const res = await http.call('GET', `http://${hostOf(l.url)}/${f.fid}`)
      if (res.status !== 200 || sha256(res.body) !== f.sha256) problems.push(`GET ${l.url}/${f.fid}: ${res.status}`)
    }
  })
  return problems
}

/** True when every volume of vids has three live locations, none on `dead`, and is writable. */
async function whole(http: HttpClient, master: string, vids: Iterable<number>, dead: string): Promise<boolean> {
  const status = await volumeStatuses(http, master)
  for (const vid of vids) {
    const v = status.get(vid)
    if (!v || v.Locations.length !== 3 || v.Locations.some((l) => !l.alive || hostOf(l.url) === dead) || !v.Writable) return false
  }
  return true
}

function fileSha(path: string): Promise<string> {
  return readFile(path).then((b) => createHash('sha256').update(b).digest('hex'))
}

t.test('a data server killed for good: its volumes come back to three copies, byte-identical, and reads never fail', async (t) => {
  const cluster = await startCluster(t, { dataServers: 4, deadAfterMs: 1500, heartbeatIntervalMs: 200, masterArgs: ['--repair-after-ms', '1000'] })
  const http = new HttpClient(t)
  const master = cluster.masterUrl
  const random = seededRandom(SEED)
  t.comment(`seed ${SEED} (NEEDLESTORE_REPAIR_SEED replays sizes and bodies)`)

  const { known, stored, problems } = await fill(cluster, http, 4, 100, random)
  t.same(problems, [], `${stored.length} files stored in 4 volumes`)
  const xi = victimOf(cluster, known)
  const victim = cluster.dataServers[xi]!.address
  const victimVolumes = [...known].filter(([, hosts]) => hosts.includes(victim)).map(([vid]) => vid)
  t.ok(victimVolumes.length > 0, `${victim} holds copies of volumes ${victimVolumes.join(', ')}`)

  // Reads through lookup go on in the background from the kill to the end of the repair.
  const readFailures: string[] = []
  let reads = 0
  let reading = true
  const reader = (async () => {
    for (let i = 0; reading; i++) {
      const failure = await readThroughLookup(http, master, stored[i % stored.length]!, i).catch((err: Error) => `lookup: ${err.message}`)
      reads++
      if (failure) readFailures.push(failure)
    }
  })()

  const killedAt = Date.now()
  await cluster.dataServers[xi]!.kill9()
  await cluster.waitFor(`volumes ${victimVolumes.join(', ')} to have three live copies without ${victim}`, () => whole(http, master, victimVolumes, victim), 90_000)
  const repairedMs = Date.now() - killedAt
  reading = false
  await reader
  t.same(readFailures, [], `${reads} reads through lookup while the copies were remade: none failed`)
  t.pass(`every volume of ${victim} has three live copies again ${repairedMs} ms after the kill`)

  // Each new copy's .dat is byte-identical to a live copy's (its source's).
  const after = await volumeStatuses(http, master)
  const dirOf = (address: string) => join(cluster.dir, `dataserver-${cluster.dataServers.findIndex((p) => p.address === address)}`)
  for (const vid of victimVolumes) {
    const hosts = after.get(vid)!.Locations.map((l) => hostOf(l.url))
    const added = hosts.filter((h) => !known.get(vid)!.includes(h))
    t.equal(added.length, 1, `volume ${vid}: one new copy, on ${added.join(', ')}`)
    const newSha = await fileSha(join(dirOf(added[0]!), `${vid}.dat`))
    const others = await Promise.all(hosts.filter((h) => h !== added[0]).map((h) => fileSha(join(dirOf(h), `${vid}.dat`))))
    t.ok(others.includes(newSha), `volume ${vid}: ${vid}.dat on ${added[0]} is byte-identical to a live copy's`)
  }

  t.same(await readEverywhere(http, master, stored), [], `all ${stored.length} files read back byte-identical on every copy`)

  // The repaired volumes take writes again, on all three copies.
  for (const vid of victimVolumes) {
    const fid = moveFid((await cluster.assign('replication=002')).fid, vid)
    const hosts = (await volumeStatuses(http, master)).get(vid)!.Locations.map((l) => hostOf(l.url))
    const data = randomBody(random, 4000)
    await cluster.waitFor(`a write to repaired volume ${vid}`, async () => (await http.call('POST', `http://${hosts[0]}/${fid}`, { body: data })).status === 201)
    for (const h of hosts) {
      const res = await http.call('GET', `http://${h}/${fid}`)
      t.equal(res.status === 200 && sha256(res.body) === sha256(data), true, `volume ${vid}: the new file ${fid} is on ${h}`)
    }
  }
  let assigns = 0
  const handed = await cluster.waitFor('an assign in a repaired volume', async () => {
    assigns++
    const a = await cluster.assign('replication=002')
    return victimVolumes.includes(volumeOf(a.fid)) ? a : undefined
  })
  t.pass(`assign hands out repaired volume ${volumeOf(handed.fid)} again (after ${assigns} assigns)`)

  // The master restarts (the replaced copies are in its state), then the dead server comes
  // back: its replaced copies are deleted there and never listed.
  await cluster.startMaster()
  await cluster.restartDataServer(xi)
  await cluster.waitFor(`${victim} to drop its replaced copies`, async () => {
    const res = await http.call('GET', `http://${victim}/status`)
    const ids = res.json<{ volumes: Array<{ id: number }> }>().volumes.map((v) => v.id)
    return victimVolumes.every((vid) => !ids.includes(vid))
  })
  const listed: string[] = []
  for (const vid of victimVolumes) {
    const locations = ((await lookup(http, master, String(vid))) ?? []).map((l) => l.publicUrl)
    if (locations.includes(victim) || locations.length !== 3) listed.push(`volume ${vid}: ${locations.join(', ')}`)
  }
  t.same(listed, [], `after a master restart ${victim} is back; it deleted its replaced copies and lookups list three copies without it`)
  t.ok(await whole(http, master, victimVolumes, victim), 'the repaired volumes stay whole and writable')
})

interface CliRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

function cli(args: readonly string[], timeoutMs = 120_000): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: repoRoot(), stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
    })
  })
}

t.test('fix-replication: --dry-run prints the plan and changes nothing; without it the copies are made', async (t) => {
  const secret = 'repair-s3cret'
  // The timer waits ten minutes: only the command repairs here.
  const cluster = await startCluster(t, { dataServers: 4, deadAfterMs: 1000, heartbeatIntervalMs: 200, secret, masterArgs: ['--repair-after-ms', '600000'] })
  const http = new HttpClient(t)
  const master = cluster.masterUrl
  const random = seededRandom(SEED + 1)
  // On a secured cluster, growth needs the secret.
  const grown = await http.call('POST', `${master}/vol/grow?count=2&replication=002`, { headers: { authorization: `Bearer ${secret}` }, timeoutMs: 20_000 })
  t.equal(grown.status, 200, `two 002 volumes grown: ${grown.text()}`)
  const status = await volumeStatuses(http, master)
  const known = new Map([...status.values()].map((v) => [v.Id, v.Locations.map((l) => hostOf(l.url))]))
  // Files through /submit, which the master assigns and stores (the secret cluster needs no token there).
  const stored: Stored[] = []
  for (let i = 0; i < 20; i++) {
    const data = randomBody(random, 1 + Math.floor(random() * SIZE_MAX))
    const res = await cluster.waitFor(`submit ${i}`, async () => {
      const r = await http.call('POST', `${master}/submit`, { body: data })
      if (r.status !== 201) throw new Error(`${r.status} ${r.text()}`)
      return r
    })
    stored.push({ fid: res.json<{ fid: string }>().fid, sha256: sha256(data) })
  }
  const xi = victimOf(cluster, known)
  const victim = cluster.dataServers[xi]!.address
  const victimVolumes = [...known].filter(([, hosts]) => hosts.includes(victim)).map(([vid]) => vid)
  await cluster.dataServers[xi]!.kill9()
  await cluster.waitFor(`the master to mark ${victim} dead`, async () => !(await cluster.aliveDataServers()).has(victim))

  const flags = ['--master', master, '--secret', secret]
  const noSecret = await cli(['fix-replication', '--dry-run', '--master', master])
  t.equal(noSecret.code, 1, `without the secret, fix-replication exits 1: ${noSecret.stderr.trim()}`)

  const dry = await cli(['fix-replication', '--dry-run', '--json', ...flags])
  t.equal(dry.code, 0, `fix-replication --dry-run exits 0 (${dry.stderr.trim()})`)
  const plan = JSON.parse(dry.stdout) as { dryRun: boolean; steps: Array<{ volume: number; source: string; destinations: string[]; replaces: string[] }>; results: unknown[] }
  t.equal(plan.dryRun, true)
  t.same(plan.steps.map((s) => s.volume).sort((a, b) => a - b), [...victimVolumes].sort((a, b) => a - b), `the plan names volumes ${victimVolumes.join(', ')}`)
  for (const s of plan.steps) {
    t.same(s.replaces, [victim], `volume ${s.volume}: replaces the copy on ${victim}`)
    t.equal(s.destinations.length, 1, `volume ${s.volume}: one destination, ${s.destinations.join(', ')}`)
    t.notOk(known.get(s.volume)!.includes(s.destinations[0]!), `volume ${s.volume}: the destination holds no copy yet`)
    t.ok(known.get(s.volume)!.includes(s.source) && s.source !== victim, `volume ${s.volume}: the source ${s.source} is a live copy`)
  }
  t.same(plan.results, [], 'a dry run does nothing')
  const human = await cli(['fix-replication', '--dry-run', ...flags])
  t.match(human.stdout, new RegExp(`volume ${victimVolumes[0]}\\tcopy from \\S+ to \\S+\\treplacing ${victim.replace(/\./g, '\\.')}`), 'the plan in words')
  const unchanged = await volumeStatuses(http, master)
  for (const vid of victimVolumes) {
    const v = unchanged.get(vid)!
    t.ok(v.Locations.some((l) => hostOf(l.url) === victim) && !v.Writable, `after the dry run volume ${vid} still lists ${victim} and takes no writes`)
  }

  const run = await cli(['fix-replication', '--json', ...flags])
  t.equal(run.code, 0, `fix-replication exits 0 (${run.stderr.trim()})`)
  const done = JSON.parse(run.stdout) as { results: Array<{ volume: number; ok: boolean; copied: string[]; error?: string }> }
  t.same(done.results.filter((r) => !r.ok), [], 'every repair succeeded')
  t.same(done.results.map((r) => r.volume).sort((a, b) => a - b), [...victimVolumes].sort((a, b) => a - b), 'one result per volume')
  t.ok(await whole(http, master, victimVolumes, victim), 'every repaired volume has three live copies and takes writes')
  t.same(await readEverywhere(http, master, stored), [], `all ${stored.length} files read back on every copy`)

  const again = await cli(['fix-replication', ...flags])
  t.equal(again.code, 0, 'a second run exits 0')
  t.match(again.stderr, /every volume has all its copies on live servers/, 'and finds nothing to do')
})
