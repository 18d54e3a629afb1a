/**
 * `kill -9` of one of four data servers (replication 002: three copies on three of the four):
 *
 * - every file stays readable: through the locations /dir/lookup lists, tried in turn, at every
 *   moment (also before the master notices the death), and through the master's redirect once
 *   the master has marked the server dead;
 * - once it is dead, no assign hands out a volume that has a copy on it, and writes to the fids
 *   assigned succeed on three live copies (the master grows volumes on the live servers);
 * - restarted on its directory and port, the server rejoins, its volumes become writable again,
 *   and a new write to one of them reaches all three copies, the restarted one included.
 */
import t from 'tap'
import { startCluster } from '../helpers/cluster.js'
import {
  HttpClient,
  forEachLimit,
  growVolumes,
  hostOf,
  lookup,
  moveFid,
  randomBody,
  sha256,
  volumeOf,
  volumeStatuses,
} from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

const SEED = Number(process.env.NEEDLESTORE_FAILURE_SEED ?? 0xdead_0002)
const ASSIGNED_FILES = 48
const TARGETED_PER_VOLUME = 2
const SIZE_MAX = 64 * 1024
const ASSIGNS_WHILE_DEAD = 60

interface Stored {
  readonly fid: string
  readonly size: number
  readonly sha256: string
}

t.test('kill -9 of a data server: reads go on, assigns avoid its volumes, and it rejoins after a restart', async (t) => {
  const started = Date.now()
  const cluster = await startCluster(t, { dataServers: 4, deadAfterMs: 1500, heartbeatIntervalMs: 200 })
  const http = new HttpClient(t)
  const master = cluster.masterUrl
  const random = seededRandom(SEED)
  t.comment(`seed ${SEED} (NEEDLESTORE_FAILURE_SEED replays sizes and bodies)`)

  t.equal(await growVolumes(http, master, 4, '002'), 4, 'four 002 volumes grown')
  const before = await volumeStatuses(http, master)
  /** Every location of each volume, as the master listed it before the kill. */
  const known = new Map([...before.values()].map((v) => [v.Id, v.Locations.map((l) => hostOf(l.url))]))
  for (const [vid, hosts] of known) t.equal(new Set(hosts).size, 3, `volume ${vid} has three copies: ${hosts.join(', ')}`)

  // The victim: the data server with the most copies (the lowest index among equals).
  const addresses = cluster.dataServers.map((p) => p.address)
  const copiesOn = (a: string) => [...known.values()].filter((hosts) => hosts.includes(a)).length
  const xi = addresses.reduce((best, a, i) => (copiesOn(a) > copiesOn(addresses[best]!) ? i : best), 0)
  const victim = addresses[xi]!
  const victimVolumes = new Set([...known].filter(([, hosts]) => hosts.includes(victim)).map(([vid]) => vid))
  t.ok(victimVolumes.size > 0, `${victim} holds copies of volumes ${[...victimVolumes].join(', ')}`)

  // Every copy of each volume takes a write before the test proper, so that each data server
  // knows the other copies of its new volumes (growth and heartbeats race: see the report).
  const probe = await cluster.assign('replication=002')
  for (const [vid, hosts] of known) {
    for (const at of hosts) {
      await cluster.waitFor(`a write to volume ${vid} through ${at}`, async () => (await http.call('POST', `http://${at}/${moveFid(probe.fid, vid)}`, { body: Buffer.from('probe') })).status === 201)
    }
  }

  // Files: through assign, and a few aimed at each volume (a fresh assigned key moved into it).
  const plans: Array<{ seed: number; volume?: number }> = []
  for (let i = 0; i < ASSIGNED_FILES; i++) plans.push({ seed: (random() * 0x1_0000_0000) >>> 0 })
  for (const vid of known.keys()) for (let i = 0; i < TARGETED_PER_VOLUME; i++) plans.push({ seed: (random() * 0x1_0000_0000) >>> 0, volume: vid })
  const stored: Array<Stored | undefined> = []
  const uploadProblems: string[] = []
  await forEachLimit(plans, 6, async (plan, i) => {
    const r = seededRandom(plan.seed)
    const size = 1 + Math.floor(r() * SIZE_MAX)
    const data = randomBody(r, size)
    const a = await cluster.assign('replication=002')
    const fid = plan.volume === undefined ? a.fid : moveFid(a.fid, plan.volume)
    const at = plan.volume === undefined ? a.url : known.get(plan.volume)![0]!
    const res = await http.call('POST', `http://${at}/${fid}`, { body: data })
    if (res.status !== 201) uploadProblems.push(`POST ${at}/${fid}: ${res.status} ${res.text()}`)
    else stored[i] = { fid, size, sha256: sha256(data) }
  })
  t.same(uploadProblems, [], `${plans.length} files written`)
  const files = stored.filter((f): f is Stored => f !== undefined)
  const onVictim = files.filter((f) => victimVolumes.has(volumeOf(f.fid)))
  t.ok(onVictim.length >= TARGETED_PER_VOLUME, `${onVictim.length} of them have a copy on ${victim}`)

  /**
   * Reads f through the locations /dir/lookup lists, trying them in turn from the one at index
   * `start` (so that every location, the dead one included, comes first now and then).
   */
  const readThroughLookup = async (f: Stored, start: number): Promise<{ ok: boolean; listed: string[]; why: string[] }> => {
    const locations = (await lookup(http, master, f.fid)) ?? []
    const listed = locations.map((l) => l.publicUrl)
    const why: string[] = []
    for (let k = 0; k < listed.length; k++) {
      const where = listed[(start + k) % listed.length]!
      try {
        const res = await http.call('GET', `http://${where}/${f.fid}`, { timeoutMs: 5000 })
        if (res.status === 200 && sha256(res.body) === f.sha256) return { ok: true, listed, why }
        why.push(`${where}: ${res.status} (${res.body.length} bytes)`)
      } catch (err) {
        why.push(`${where}: ${(err as Error).message}`)
      }
    }
    if (listed.length === 0) why.push('lookup: no location')
    return { ok: false, listed, why }
  }

  /** GET through the one data server that does not hold f's volume; it must redirect to a holder. */
  const nonHolderOf = (f: Stored) => addresses.find((a) => !known.get(volumeOf(f.fid))!.includes(a))!
  const readThroughNonHolder = async (f: Stored, problems: string[]): Promise<string | undefined> => {
    const at = nonHolderOf(f)
    const redirect = await http.call('GET', `http://${at}/${f.fid}`)
    const target = String(redirect.headers.location ?? '')
    if (redirect.status !== 302) return void problems.push(`GET ${at}/${f.fid} (not a holder): ${redirect.status}, not 302`)
    try {
      const res = await http.call('GET', target, { timeoutMs: 5000 })
      if (res.status !== 200 || sha256(res.body) !== f.sha256) problems.push(`GET ${at}/${f.fid} → ${target}: ${res.status}`)
    } catch (err) {
      problems.push(`GET ${at}/${f.fid} → ${target}: ${(err as Error).message}`)
    }
    return hostOf(target)
  }
  const redirectedBefore: string[] = []
  await forEachLimit(files, 6, async (f) => void (await readThroughNonHolder(f, redirectedBefore)))
  t.same(redirectedBefore, [], 'before the kill, the data server without a volume redirects each read to a holder')

  // A write that will fail: fresh key, into a volume with a copy on the victim, sent to a live copy.
  const doomedVolume = [...victimVolumes][0]!
  const doomedFid = moveFid((await cluster.assign('replication=002')).fid, doomedVolume)
  const doomedAt = known.get(doomedVolume)!.find((h) => h !== victim)!

  // --- kill -9, and read while the master has not noticed yet.
  const exit = await cluster.dataServers[xi]!.kill9()
  t.equal(exit.signal, 'SIGKILL', `${victim} is killed`)
  const killedAt = Date.now()
  const meanwhile: string[] = []
  let readsMeanwhile = 0
  let victimStillListed = 0
  let markedDeadAfterMs = -1
  for (let i = 0; markedDeadAfterMs < 0; i++) {
    const f = onVictim[i % onVictim.length]!
    const read = await readThroughLookup(f, i)
    readsMeanwhile++
    if (read.listed.includes(victim)) victimStillListed++
    if (!read.ok) meanwhile.push(`${f.fid} (locations ${read.listed.join(', ')}): ${read.why.join('; ')}`)
    if (i % 4 === 3 && !(await cluster.aliveDataServers()).has(victim)) markedDeadAfterMs = Date.now() - killedAt
    if (Date.now() - killedAt > 20_000) {
      t.fail(`the master still lists ${victim} as alive 20 s after its kill -9`)
      break
    }
  }
  t.same(meanwhile, [], `${readsMeanwhile} reads through lookup locations while the master had not yet noticed: none failed (${victimStillListed} lookups still listed the dead server)`)
  t.ok(markedDeadAfterMs >= 0, `the master marked ${victim} dead ${markedDeadAfterMs} ms after the kill`)

  // The write to the volume with a copy on the dead server fails and is not kept on the others.
  {
    const t0 = Date.now()
    const res = await http.call('POST', `http://${doomedAt}/${doomedFid}`, { body: randomBody(random, 5000), timeoutMs: 15_000 })
    t.ok(res.status >= 500, `a write to volume ${doomedVolume} (a copy on the dead ${victim}) through ${doomedAt} fails: ${res.status} ${res.text().slice(0, 300)} after ${Date.now() - t0} ms`)
    const live = known.get(doomedVolume)!.filter((h) => h !== victim)
    await cluster.waitFor(`${doomedFid} to be gone from ${live.join(', ')}`, async () => {
      for (const at of live) if ((await http.call('GET', `http://${at}/${doomedFid}`)).status !== 404) return false
      return true
    })
    t.pass(`the failed write ${doomedFid} reads 404 on the live copies`)
  }

  // --- Once it is dead: lookups leave it out, the master redirects to live copies.
  const readFailures: string[] = []
  await forEachLimit(files, 6, async (f) => {
    const locations = ((await lookup(http, master, f.fid)) ?? []).map((l) => l.publicUrl)
    const expected = known.get(volumeOf(f.fid))!.filter((h) => h !== victim)
    if (locations.includes(victim)) readFailures.push(`lookup ${f.fid} still lists the dead ${victim}`)
    if (new Set(locations).size !== expected.length || !expected.every((h) => locations.includes(h))) {
      readFailures.push(`lookup ${f.fid}: ${locations.join(', ')}; expected the live copies ${expected.join(', ')}`)
    }
    for (const where of locations) {
      const res = await http.call('GET', `http://${where}/${f.fid}`)
      if (res.status !== 200 || sha256(res.body) !== f.sha256) readFailures.push(`GET ${where}/${f.fid}: ${res.status}`)
    }
    for (let k = 0; k < 2; k++) {
      const redirect = await http.call('GET', `${master}/${f.fid}`)
      const target = String(redirect.headers.location ?? '')
      if (redirect.status !== 302) {
        readFailures.push(`GET master/${f.fid}: ${redirect.status}, not 302`)
        break
      }
      if (hostOf(target) === victim) readFailures.push(`the master redirects ${f.fid} to the dead ${victim}`)
      const res = await http.call('GET', target)
      if (res.status !== 200 || sha256(res.body) !== f.sha256) readFailures.push(`GET ${target} (via the master): ${res.status}`)
    }
  })
  t.same(readFailures, [], `all ${files.length} files read from every live copy and through the master's redirect`)

  // A data server without the volume redirects to a live holder too, not to the dead one.
  const redirectedWhileDead: string[] = []
  await forEachLimit(onVictim, 6, async (f) => {
    const target = await readThroughNonHolder(f, redirectedWhileDead)
    if (target === victim) redirectedWhileDead.push(`${nonHolderOf(f)} redirects ${f.fid} to ${victim}, which the master has marked dead`)
  })
  t.same(redirectedWhileDead, [], `reads through the data server without the volume lead to live holders (${onVictim.length} files)`)

  const deadStatus = await volumeStatuses(http, master)
  for (const vid of victimVolumes) {
    const v = deadStatus.get(vid)
    t.equal(v?.Writable, false, `/vol/status: volume ${vid} is not writable (${v?.Reason})`)
  }

  // --- Assigns avoid every volume with a copy on the dead server; writes to them succeed. Half
  // of them name a new collection, which has no volume yet: the master must grow its volumes on
  // the three live servers.
  const assignFailures: string[] = []
  const writeFailures: string[] = []
  const written: Stored[] = []
  const volumesAssigned = new Set<number>()
  const assignSeeds = Array.from({ length: ASSIGNS_WHILE_DEAD }, () => (random() * 0x1_0000_0000) >>> 0)
  await forEachLimit(assignSeeds, 4, async (seed, i) => {
    const a = await cluster.assign(i % 2 === 0 ? 'replication=002' : 'replication=002&collection=afterdeath')
    const vid = volumeOf(a.fid)
    volumesAssigned.add(vid)
    if (victimVolumes.has(vid)) assignFailures.push(`assign handed out ${a.fid}: volume ${vid} has a copy on the dead ${victim}`)
    if (a.url === victim) assignFailures.push(`assign ${a.fid} names the dead ${victim} to write to`)
    const r = seededRandom(seed)
    const data = randomBody(r, 1 + Math.floor(r() * SIZE_MAX))
    const res = await http.call('POST', `http://${a.url}/${a.fid}`, { body: data })
    if (res.status !== 201) writeFailures.push(`POST ${a.url}/${a.fid} (volume ${vid}): ${res.status} ${res.text()}`)
    else written[i] = { fid: a.fid, size: data.length, sha256: sha256(data) }
  })
  t.same(assignFailures, [], `${ASSIGNS_WHILE_DEAD} assigns while ${victim} is dead: none on its volumes (volumes ${[...volumesAssigned].sort((a, b) => a - b).join(', ')})`)
  t.same(writeFailures, [], 'every write to an assigned fid answers 201, in the new volumes too')
  const afterAssigns = await volumeStatuses(http, master)
  const writtenProblems: string[] = []
  for (const vid of volumesAssigned) {
    const hosts = afterAssigns.get(vid)?.Locations ?? []
    if (hosts.length !== 3 || hosts.some((l) => !l.alive || hostOf(l.url) === victim)) {
      writtenProblems.push(`assigned volume ${vid} has locations ${JSON.stringify(hosts)}`)
    }
  }
  await forEachLimit(written.filter(Boolean), 6, async (f) => {
    const locations = ((await lookup(http, master, f.fid)) ?? []).map((l) => l.publicUrl)
    if (locations.length !== 3) writtenProblems.push(`${f.fid} has ${locations.length} locations: ${locations.join(', ')}`)
    for (const where of locations) {
      const res = await http.call('GET', `http://${where}/${f.fid}`)
      if (res.status !== 200 || sha256(res.body) !== f.sha256) writtenProblems.push(`GET ${where}/${f.fid}: ${res.status}`)
    }
  })
  t.same(writtenProblems, [], 'the files written meanwhile are on three live copies each')
  const grown = [...volumesAssigned].filter((vid) => !known.has(vid))
  t.ok(grown.length > 0, `volumes grown on the three live servers while ${victim} was dead: ${grown.join(', ')}`)

  // --- Restart: it rejoins with its volumes, which take writes again.
  const restartAt = Date.now()
  await cluster.restartDataServer(xi)
  t.ok((await cluster.aliveDataServers()).has(victim), `${victim} rejoined ${Date.now() - restartAt} ms after its restart`)
  await cluster.waitFor(`every volume of ${victim} to be writable again`, async () => {
    const status = await volumeStatuses(http, master)
    return [...victimVolumes].every((vid) => status.get(vid)?.Writable === true && status.get(vid)!.Locations.every((l) => l.alive))
  })
  t.pass(`volumes ${[...victimVolumes].join(', ')} are writable again ${Date.now() - restartAt} ms after the restart`)

  const rejoinFailures: string[] = []
  for (const f of onVictim) {
    const res = await http.call('GET', `http://${victim}/${f.fid}`)
    if (res.status !== 200 || sha256(res.body) !== f.sha256) rejoinFailures.push(`GET ${victim}/${f.fid} after the restart: ${res.status}`)
    const locations = ((await lookup(http, master, f.fid)) ?? []).map((l) => l.publicUrl)
    if (!locations.includes(victim)) rejoinFailures.push(`lookup ${f.fid} does not list the restarted ${victim}: ${locations.join(', ')}`)
  }
  t.same(rejoinFailures, [], `the restarted ${victim} serves its ${onVictim.length} files and lookups list it again`)
  const doomedLeft: string[] = []
  for (const at of known.get(doomedVolume)!) {
    const res = await http.call('GET', `http://${at}/${doomedFid}`)
    if (res.status !== 404) doomedLeft.push(`GET ${at}/${doomedFid}: ${res.status}`)
  }
  t.same(doomedLeft, [], `the write that failed while ${victim} was down is on none of the three copies`)

  // Assign hands out one of its volumes again (assigns spread at random over writable volumes).
  let assigns = 0
  const again = await cluster.waitFor(`an assign in one of ${victim}'s volumes`, async () => {
    assigns++
    const a = await cluster.assign('replication=002')
    return victimVolumes.has(volumeOf(a.fid)) ? a : undefined
  })
  t.pass(`assign handed out ${again.fid} (a volume with a copy on ${victim}) after ${assigns} assigns`)
  const data = randomBody(random, 10_000)
  const res = await http.call('POST', `http://${again.url}/${again.fid}`, { body: data })
  t.equal(res.status, 201, `a new write to volume ${volumeOf(again.fid)} through ${again.url} is stored: ${res.text()}`)
  const copies = known.get(volumeOf(again.fid))!
  t.ok(copies.includes(victim))
  for (const where of copies) {
    const got = await http.call('GET', `http://${where}/${again.fid}`)
    t.equal(got.status, 200, `${where} has the new file`)
    t.equal(sha256(got.body), sha256(data), `${where} holds the same bytes`)
  }
  t.comment(`${Date.now() - started} ms in all`)
})
