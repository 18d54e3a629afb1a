/**
 * Replicated writes, end to end: files uploaded through /dir/assign + POST to the assigned data
 * server are on every replica the master lists, byte for byte, with the same Content-Type, ETag
 * and Last-Modified; any replica, the master and a data server that does not hold the volume
 * lead a reader to the file; a delete through one replica removes it from all of them.
 */
import t from 'tap'
import { FormData } from 'undici'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import { HttpClient, forEachLimit, hostOf, lookup, md5Hex, randomBody, sha256, volumeOf, type Reply } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(90_000)

const FILES = 200
const SIZE_MAX = 256 * 1024
const CONCURRENCY = 8
const SEED = Number(process.env.NEEDLESTORE_REPLICATION_SEED ?? 0x5eed_0003)

interface Stored {
  readonly fid: string
  readonly size: number
  readonly sha256: string
  readonly md5: string
  /** The Content-Type every replica must answer. */
  readonly contentType: string
  /** The data server it was written to. */
  readonly writtenTo: string
}

/** How a file is sent: a raw body with or without a type, or multipart with a file name. */
const KINDS = [
  { kind: 'raw', header: 'image/jpeg', expect: 'image/jpeg' },
  { kind: 'raw', header: 'application/octet-stream', expect: 'application/octet-stream' },
  { kind: 'raw', header: 'text/plain; charset=utf-8', expect: 'text/plain' },
  { kind: 'multipart', name: 'photo.png', expect: 'image/png' },
  { kind: 'multipart', name: 'blob.bin', expect: 'application/octet-stream' },
] as const

/**
 * Uploads one file of a seeded random size through assign + POST. A failure goes to problems
 * and answers undefined, so that later checks look only at files that were stored.
 */
async function uploadOne(problems: string[], cluster: Cluster, http: HttpClient, random: () => number, query: string): Promise<Stored | undefined> {
  const size = 1 + Math.floor(random() * SIZE_MAX)
  const data = randomBody(random, size)
  const how = KINDS[Math.floor(random() * KINDS.length)]!
  const a = await cluster.assign(query)
  let res: Reply
  if (how.kind === 'raw') {
    res = await http.call('POST', `http://${a.url}/${a.fid}`, { body: data, headers: { 'content-type': how.header } })
  } else {
    const form = new FormData()
    form.append('file', new Blob([data]), how.name)
    res = await http.call('POST', `http://${a.url}/${a.fid}`, { body: form })
  }
  if (res.status !== 201) {
    problems.push(`upload of ${size} bytes to ${a.url}/${a.fid} answered ${res.status}: ${res.text()}`)
    return undefined
  }
  const answer = res.json<{ size: number; eTag: string }>()
  if (answer.size !== size || answer.eTag !== md5Hex(data)) problems.push(`upload ${a.fid} answered ${res.text()}`)
  return { fid: a.fid, size, sha256: sha256(data), md5: md5Hex(data), contentType: how.expect, writtenTo: a.url }
}

/** The essence of a Content-Type (no parameters). */
function essence(value: string | string[] | undefined): string {
  return String(value ?? '').split(';')[0]!.trim().toLowerCase()
}

/** Follows one redirect by hand, so that the test sees it. */
async function followOnce(http: HttpClient, url: string): Promise<{ redirect: Reply; target: string; final: Reply }> {
  const redirect = await http.call('GET', url)
  const target = String(redirect.headers.location ?? '')
  const final = redirect.status === 302 && target ? await http.call('GET', target) : redirect
  return { redirect, target, final }
}

t.test(`${FILES} files through assign + upload: every replica serves identical bytes and headers; deletes reach every replica`, async (t) => {
  const started = Date.now()
  const cluster = await startCluster(t, { dataServers: 3 })
  const http = new HttpClient(t)
  const dataServers = new Set(cluster.dataServers.map((p) => p.address))
  const random = seededRandom(SEED)
  t.comment(`seed ${SEED} (NEEDLESTORE_REPLICATION_SEED replays sizes, bodies and choices)`)

  // Each file has its own seed drawn in order, so sizes and bodies do not depend on timing.
  const seeds = Array.from({ length: FILES }, () => (random() * 0x1_0000_0000) >>> 0)
  const results: Array<Stored | undefined> = []
  const uploadProblems: string[] = []
  await forEachLimit(seeds, CONCURRENCY, async (seed, i) => {
    results[i] = await uploadOne(uploadProblems, cluster, http, seededRandom(seed), '')
  })
  t.same(uploadProblems, [], `${FILES} uploads answered 201 with their size and MD5`)
  const stored = results.filter((s): s is Stored => s !== undefined)
  t.comment(`uploads done after ${Date.now() - started} ms`)

  // Every replica, every file: the same bytes, Content-Type, ETag and Last-Modified.
  const locationsByVolume = new Map<number, string[]>()
  const failures: string[] = []
  let volumesSeen = 0
  for (const s of stored) {
    const vid = volumeOf(s.fid)
    if (!locationsByVolume.has(vid)) {
      const locations = await lookup(http, cluster.masterUrl, String(vid))
      const hosts = (locations ?? []).map((l) => l.publicUrl)
      locationsByVolume.set(vid, hosts)
      volumesSeen++
      t.equal(new Set(hosts).size, 3, `volume ${vid} has three locations on three servers: ${hosts.join(', ')}`)
      t.ok(hosts.every((h) => dataServers.has(h)), `volume ${vid}: every location is a data server`)
    }
    if (!locationsByVolume.get(vid)!.includes(s.writtenTo)) failures.push(`${s.fid} was assigned to ${s.writtenTo}, which is not a location of its volume`)
  }
  await forEachLimit(stored, CONCURRENCY, async (s) => {
    const answers = new Map<string, Reply>()
    for (const where of locationsByVolume.get(volumeOf(s.fid))!) {
      const res = await http.call('GET', `http://${where}/${s.fid}`)
      answers.set(where, res)
      if (res.status !== 200) {
        failures.push(`GET ${where}/${s.fid} answered ${res.status}: ${res.text().slice(0, 200)}`)
        continue
      }
      if (res.body.length !== s.size || sha256(res.body) !== s.sha256) failures.push(`${where}/${s.fid}: ${res.body.length} bytes that are not the ${s.size} uploaded`)
      if (essence(res.headers['content-type']) !== s.contentType) failures.push(`${where}/${s.fid}: Content-Type ${res.headers['content-type']}, expected ${s.contentType}`)
      if (res.headers.etag !== `"${s.md5}"`) failures.push(`${where}/${s.fid}: ETag ${res.headers.etag}, expected "${s.md5}"`)
    }
    const replies = [...answers.values()].filter((r) => r.status === 200)
    for (const header of ['content-type', 'etag', 'last-modified', 'content-length'] as const) {
      const values = new Set(replies.map((r) => String(r.headers[header])))
      if (values.size > 1) failures.push(`${s.fid}: replicas disagree on ${header}: ${[...values].join(' | ')}`)
    }
  })
  t.same(failures, [], `every file reads identically from each of its 3 replicas (${volumesSeen} volumes)`)
  t.comment(`replica reads done after ${Date.now() - started} ms`)

  // Through the master: a 302 to a replica that holds it.
  const redirectFailures: string[] = []
  await forEachLimit(stored.filter((_, i) => i % 4 === 0), CONCURRENCY, async (s) => {
    const { redirect, target, final } = await followOnce(http, `${cluster.masterUrl}/${s.fid}`)
    if (redirect.status !== 302) return void redirectFailures.push(`GET master/${s.fid} answered ${redirect.status}, not 302`)
    if (!locationsByVolume.get(volumeOf(s.fid))!.includes(hostOf(target))) redirectFailures.push(`master/${s.fid} redirects to ${target}, not a replica`)
    if (final.status !== 200 || sha256(final.body) !== s.sha256) redirectFailures.push(`${target} answered ${final.status} with ${final.body.length} bytes`)
  })
  t.same(redirectFailures, [], 'the master redirects reads to a replica that serves the file')

  // Deletes through one replica (not always the one written to) reach every replica.
  // Which files, and through which replica, drawn in order before the concurrent deletes.
  const doomed = stored.filter(() => random() < 0.3).map((s) => ({ s, pick: random() }))
  const survivors = stored.filter((s) => !doomed.some((d) => d.s === s))
  const deleteFailures: string[] = []
  await forEachLimit(doomed, CONCURRENCY, async ({ s, pick }) => {
    const locations = locationsByVolume.get(volumeOf(s.fid))!
    const at = locations[Math.floor(pick * locations.length)]!
    const del = await http.call('DELETE', `http://${at}/${s.fid}`)
    if (del.status !== 202) return void deleteFailures.push(`DELETE ${at}/${s.fid} answered ${del.status}: ${del.text()}`)
    if (del.json<{ size: number }>().size !== s.size) deleteFailures.push(`DELETE ${at}/${s.fid} answered ${del.text()}, expected size ${s.size}`)
    for (const where of locations) {
      const got = await http.call('GET', `http://${where}/${s.fid}`)
      if (got.status !== 404) deleteFailures.push(`after DELETE at ${at}, GET ${where}/${s.fid} answered ${got.status}, not 404`)
      const head = await http.call('HEAD', `http://${where}/${s.fid}`)
      if (head.status !== 404) deleteFailures.push(`after DELETE at ${at}, HEAD ${where}/${s.fid} answered ${head.status}, not 404`)
    }
    const viaMaster = await followOnce(http, `${cluster.masterUrl}/${s.fid}`)
    if (viaMaster.final.status !== 404) deleteFailures.push(`after DELETE, the master's redirect for ${s.fid} leads to ${viaMaster.final.status}, not 404`)
  })
  t.same(deleteFailures, [], `${doomed.length} deletes through one replica: 202 {size}, then 404 on every replica`)

  const survivorFailures: string[] = []
  await forEachLimit(survivors, CONCURRENCY, async (s) => {
    for (const where of locationsByVolume.get(volumeOf(s.fid))!) {
      const res = await http.call('GET', `http://${where}/${s.fid}`)
      if (res.status !== 200 || sha256(res.body) !== s.sha256) survivorFailures.push(`${where}/${s.fid} answered ${res.status} after other files were deleted`)
    }
  })
  t.same(survivorFailures, [], `the ${survivors.length} other files are untouched on every replica`)
  t.comment(`${Date.now() - started} ms in all`)
})

t.test('4 data servers, replication 001: a data server without the volume redirects a read to one that has it', async (t) => {
  const started = Date.now()
  const cluster = await startCluster(t, { dataServers: 4 })
  const http = new HttpClient(t)
  const all = cluster.dataServers.map((p) => p.address)
  const random = seededRandom(SEED ^ 0x0001)
  const seeds = Array.from({ length: 24 }, () => (random() * 0x1_0000_0000) >>> 0)
  const results: Array<Stored | undefined> = []
  const uploadProblems: string[] = []
  await forEachLimit(seeds, 4, async (seed, i) => {
    results[i] = await uploadOne(uploadProblems, cluster, http, seededRandom(seed), 'replication=001')
  })
  t.same(uploadProblems, [], `${seeds.length} uploads with replication 001 answered 201`)
  const stored = results.filter((s): s is Stored => s !== undefined)
  const failures: string[] = []
  t.comment(`uploads done after ${Date.now() - started} ms`)
  let redirects = 0
  for (const s of stored) {
    const holders = ((await lookup(http, cluster.masterUrl, s.fid)) ?? []).map((l) => l.publicUrl)
    if (holders.length !== 2 || new Set(holders).size !== 2) {
      failures.push(`${s.fid} (replication 001) has locations ${holders.join(', ')}, not two`)
      continue
    }
    for (const where of holders) {
      const res = await http.call('GET', `http://${where}/${s.fid}`)
      if (res.status !== 200 || sha256(res.body) !== s.sha256) failures.push(`holder ${where}/${s.fid} answered ${res.status}`)
    }
    for (const where of all.filter((a) => !holders.includes(a))) {
      const { redirect, target, final } = await followOnce(http, `http://${where}/${s.fid}`)
      if (redirect.status !== 302) {
        failures.push(`${where} (does not hold volume ${volumeOf(s.fid)}) answered ${redirect.status} for ${s.fid}, not 302: ${redirect.text().slice(0, 200)}`)
        continue
      }
      redirects++
      if (!holders.includes(hostOf(target))) failures.push(`${where}/${s.fid} redirects to ${target}, which does not hold the volume`)
      if (new URL(target).pathname !== `/${s.fid}`) failures.push(`${where}/${s.fid} redirects to ${target}: another path`)
      if (final.status !== 200 || sha256(final.body) !== s.sha256) failures.push(`following ${where}/${s.fid} → ${target} answered ${final.status}`)
      if (essence(final.headers['content-type']) !== s.contentType) failures.push(`${target}: Content-Type ${final.headers['content-type']}, expected ${s.contentType}`)
    }
    const viaMaster = await followOnce(http, `${cluster.masterUrl}/${s.fid}`)
    if (viaMaster.redirect.status !== 302 || !holders.includes(hostOf(viaMaster.target))) failures.push(`master/${s.fid} answered ${viaMaster.redirect.status} → ${viaMaster.target}`)
    else if (viaMaster.final.status !== 200 || sha256(viaMaster.final.body) !== s.sha256) failures.push(`master/${s.fid} → ${viaMaster.target} answered ${viaMaster.final.status}`)
  }
  t.same(failures, [], `${stored.length} files on two of four servers: holders serve them, the other two redirect (${redirects} redirects followed)`)
  t.equal(redirects, stored.length * 2, 'every non-holder answered with a redirect')
  t.comment(`${Date.now() - started} ms`)
})
