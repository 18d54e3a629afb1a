/**
 * MD5 dedup, deferred deletes, undelete and batch delete on a real 3-copy cluster, over raw
 * HTTP: the same bytes stored twice take one copy on disk (on every replica) and two fids;
 * deleting one never breaks the other; deleted files answer 404 on every copy, also after a
 * kill -9; an operator's undelete brings a file back on every copy; a stale dedup entry falls
 * back to a full upload; with a secret, the stored copy's fid never reaches the writer.
 */
import t from 'tap'
import { FormData } from 'undici'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import { HttpClient, lookup, md5Hex, randomBody, volumeOf } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

const IMAGE = randomBody(seededRandom(0xd0d0), 256 * 1024)
const MD5 = md5Hex(IMAGE)

interface Submitted {
  readonly fid: string
  readonly size: number
  readonly eTag: string
  readonly deduplicated: boolean
}

async function submit(http: HttpClient, cluster: Cluster, name: string, data: Buffer): Promise<Submitted> {
  const form = new FormData()
  form.append('file', new Blob([data], { type: 'image/jpeg' }), name)
  const res = await http.call('POST', `${cluster.masterUrl}/submit`, { body: form, timeoutMs: 20_000 })
  if (res.status !== 201) throw new Error(`/submit answered ${res.status}: ${res.text()}`)
  return res.json<Submitted>()
}

/** The bytes of every volume file, summed over the data servers (their /status). */
async function volumeBytes(http: HttpClient, cluster: Cluster): Promise<number[]> {
  return Promise.all(
    cluster.dataServers.map(async (ds) => {
      const res = await http.call('GET', `${ds.url}/status`)
      return res.json<{ Volumes: { Size: number }[] }>().Volumes.reduce((n, v) => n + v.Size, 0)
    }),
  )
}

/** What every copy of fid answers to a GET: status and body. */
async function readEverywhere(http: HttpClient, cluster: Cluster, fid: string): Promise<{ status: number; body: Buffer; disposition: string | undefined }[]> {
  const locations = await lookup(http, cluster.masterUrl, fid)
  if (!locations || locations.length !== 3) throw new Error(`${fid} has ${locations?.length} copies`)
  return Promise.all(
    locations.map(async (l) => {
      const res = await http.call('GET', `http://${l.url}/${fid}`)
      return { status: res.status, body: res.body, disposition: res.headers['content-disposition'] as string | undefined }
    }),
  )
}

/** Waits until the master's dedup index names a stored copy of IMAGE (data servers report in batches). */
async function waitForDedupIndex(http: HttpClient, cluster: Cluster): Promise<void> {
  await cluster.waitFor('the dedup index to know the image', async () => {
    const res = await http.call('GET', `${cluster.masterUrl}/dir/assign?md5=${MD5}&size=${IMAGE.length}`)
    return res.status === 200 && res.json<{ dedupOf?: string }>().dedupOf !== undefined
  })
}

t.test('dedup, deferred deletes and undelete across every replica', async (t) => {
  const cluster = await startCluster(t, { dataServers: 3 })
  const http = new HttpClient(t)

  const first = await submit(http, cluster, 'first.jpg', IMAGE)
  t.equal(first.deduplicated, false, 'the first upload stores the bytes')
  t.equal(first.eTag, MD5, 'its eTag is the MD5 of the bytes')
  await waitForDedupIndex(http, cluster)
  const before = await volumeBytes(http, cluster)
  const second = await submit(http, cluster, 'second.jpg', IMAGE)
  t.equal(second.deduplicated, true, 'the same bytes again share the stored copy')
  t.not(second.fid, first.fid, 'and still get their own fid')
  t.equal(volumeOf(second.fid), volumeOf(first.fid), 'in the volume of the stored copy')
  t.equal(second.size, IMAGE.length)
  const after = await volumeBytes(http, cluster)
  for (const [i, grown] of after.map((b, i) => b - before[i]!).entries()) {
    t.ok(grown < 4096, `data server ${i}: the second upload added ${grown} bytes, not another copy`)
  }

  for (const [fid, name] of [[first.fid, 'first.jpg'], [second.fid, 'second.jpg']] as const) {
    const copies = await readEverywhere(http, cluster, fid)
    t.ok(copies.every((c) => c.status === 200 && c.body.equals(IMAGE)), `${name} reads byte-identical on every copy`)
    t.ok(copies.every((c) => c.disposition?.includes(name)), `${name} keeps its own name on every copy`)
  }

  // The dedup index lives in the master's level: a restarted master still knows the bytes.
  await cluster.master.kill9()
  await cluster.startMaster()
  const afterRestart = await cluster.waitFor('the restarted master to assign', async () => {
    const res = await http.call('GET', `${cluster.masterUrl}/dir/assign?md5=${MD5}&size=${IMAGE.length}`)
    return res.status === 200 && res.json<{ dedupOf?: string }>()
  })
  t.equal(afterRestart.dedupOf, first.fid, 'after a kill -9 and restart, the master still names the stored copy')

  // Deleting the stored copy leaves the fid that shares it whole.
  const del = await http.call('DELETE', `${cluster.masterUrl}/${first.fid}`)
  t.equal(del.status, 202, 'a delete through the master')
  t.ok((await readEverywhere(http, cluster, first.fid)).every((c) => c.status === 404), 'the deleted fid answers 404 on every copy')
  t.ok((await readEverywhere(http, cluster, second.fid)).every((c) => c.status === 200 && c.body.equals(IMAGE)), 'the fid sharing its bytes still reads on every copy')

  // The index still names the deleted fid: the next upload misses, falls back, and stores in full.
  const third = await submit(http, cluster, 'third.jpg', IMAGE)
  t.equal(third.deduplicated, false, 'a dedup entry whose file is gone falls back to a full upload')
  t.ok((await readEverywhere(http, cluster, third.fid)).every((c) => c.status === 200 && c.body.equals(IMAGE)), 'which reads on every copy')

  // Undelete, by an operator, on every copy.
  const holder = (await lookup(http, cluster.masterUrl, first.fid))![0]!
  const undelete = await http.call('POST', `http://${holder.url}/admin/undelete?fid=${first.fid}`)
  t.equal(undelete.status, 200, `undelete: ${undelete.text()}`)
  t.same(undelete.json(), { fid: first.fid, size: IMAGE.length, undeleted: true })
  t.ok((await readEverywhere(http, cluster, first.fid)).every((c) => c.status === 200 && c.body.equals(IMAGE)), 'the undeleted fid reads on every copy')
  t.same((await http.call('POST', `http://${holder.url}/admin/undelete?fid=${first.fid}`)).json(), { fid: first.fid, size: IMAGE.length, undeleted: false }, 'undeleting a live fid changes nothing')
  const unknown = await http.call('POST', `http://${holder.url}/admin/undelete?fid=${first.fid.slice(0, -8)}00000000`)
  t.equal(unknown.json<{ code: string }>().code, 'NS_ERR_NOT_FOUND', 'a wrong cookie has nothing to restore')

  // Delete both, kill -9 every data server right after: the tombstones are on disk.
  for (const fid of [first.fid, second.fid]) t.equal((await http.call('DELETE', `${cluster.masterUrl}/${fid}`)).status, 202)
  for (const ds of cluster.dataServers) await ds.kill9()
  for (let i = 0; i < cluster.dataServers.length; i++) await cluster.restartDataServer(i)
  for (const fid of [first.fid, second.fid]) {
    const copies = await cluster.waitFor(`${fid} to be served again`, async () => {
      const c = await readEverywhere(http, cluster, fid)
      return c.every((x) => x.status !== 503) && c
    })
    t.ok(copies.every((c) => c.status === 404), `${fid} stays deleted on every copy after kill -9`)
  }
  const statuses = await Promise.all(cluster.dataServers.map(async (ds) => (await http.call('GET', `${ds.url}/status`)).json<{ volumes: { id: number; garbageBytes: number }[] }>()))
  for (const [i, s] of statuses.entries()) {
    const v = s.volumes.find((x) => x.id === volumeOf(first.fid))!
    t.ok(v.garbageBytes >= IMAGE.length, `data server ${i}: with both fids deleted, the shared bytes are garbage for compaction`)
  }
  // And the undelete still works after the restart.
  const again = await http.call('POST', `http://${holder.url}/admin/undelete?fid=${second.fid}`)
  t.equal(again.status, 200, `undelete after a restart: ${again.text()}`)
  t.ok((await readEverywhere(http, cluster, second.fid)).every((c) => c.status === 200 && c.body.equals(IMAGE)), 'a link undeleted after a restart reads on every copy')
})

t.test('batch delete: one request, per-fid results, gone from every copy', async (t) => {
  const cluster = await startCluster(t, { dataServers: 3 })
  const http = new HttpClient(t)
  const random = seededRandom(77)
  const a = await cluster.assign('count=1')
  const holder = a.url
  const fids: string[] = []
  for (let i = 0; i < 20; i++) {
    const assigned = await cluster.assign()
    if (volumeOf(assigned.fid) !== volumeOf(a.fid)) continue
    const res = await http.call('POST', `http://${holder}/${assigned.fid}`, { body: randomBody(random, 2000) })
    t.equal(res.status, 201)
    fids.push(assigned.fid)
  }
  t.ok(fids.length > 0, `${fids.length} files in volume ${volumeOf(a.fid)}`)
  const missing = `${volumeOf(a.fid)},ffffff0012345678`
  const res = await http.call('POST', `http://${holder}/delete`, { body: JSON.stringify({ fids: [...fids, missing, 'not-a-fid', '999999,0112345678'] }), headers: { 'content-type': 'application/json' } })
  t.equal(res.status, 200, res.text())
  const results = res.json<{ results: { fid: string; status: number; code?: string; size?: number }[] }>().results
  t.equal(results.length, fids.length + 3, 'one result per fid, in order')
  t.ok(results.slice(0, fids.length).every((r, i) => r.fid === fids[i] && r.status === 202 && r.size === 2000), 'every stored fid deleted, with its size')
  t.match(results.at(-3), { fid: missing, status: 202, size: 0 }, 'a missing fid is not an error')
  t.match(results.at(-2), { status: 400, code: 'NS_ERR_BAD_FID' }, 'a malformed fid gets its own error')
  t.match(results.at(-1), { status: 404, code: 'NS_ERR_VOLUME_NOT_FOUND' }, 'a volume not here gets its own error')
  for (const fid of fids) t.ok((await readEverywhere(http, cluster, fid)).every((c) => c.status === 404), `${fid}: 404 on every copy`)
  const tooMany = await http.call('POST', `http://${holder}/delete`, { body: JSON.stringify({ fids: Array.from({ length: 1001 }, () => missing) }) })
  t.equal(tooMany.status, 400, 'more fids than --batch-delete-max is refused whole')
  const garbled = await http.call('POST', `http://${holder}/delete`, { body: '{"fids": 3}' })
  t.equal(garbled.json<{ code: string }>().code, 'NS_ERR_BAD_REQUEST', 'a malformed body is refused')
})

t.test('with a secret: sealed dedup references, and deletes and undeletes need authority', async (t) => {
  const secret = 'dedup-s3cret'
  const cluster = await startCluster(t, { dataServers: 3, secret })
  const http = new HttpClient(t)
  const auth = { authorization: `Bearer ${secret}` }
  const first = await submit(http, cluster, 'a.jpg', IMAGE)
  await waitForDedupIndex(http, cluster)

  const assigned = (await http.call('GET', `${cluster.masterUrl}/dir/assign?md5=${MD5}&size=${IMAGE.length}`)).json<{ fid: string; url: string; auth: string; dedupOf: string }>()
  t.not(assigned.dedupOf, first.fid, 'the writer never sees the stored fid')
  t.notOk(assigned.dedupOf.includes(first.fid.split(',')[1]!), 'not even inside the reference')
  const other = (await http.call('GET', `${cluster.masterUrl}/dir/assign?md5=${MD5}&size=${IMAGE.length}`)).json<{ fid: string; url: string; auth: string }>()
  const misused = await http.call('POST', `http://${other.url}/${other.fid}?dedupOf=${encodeURIComponent(assigned.dedupOf)}&md5=${MD5}`, { headers: { authorization: `Bearer ${other.auth}` } })
  t.equal(misused.json<{ code: string }>().code, 'NS_ERR_DEDUP_MISS', 'a reference works only for the fid it was assigned with')
  const linked = await http.call('POST', `http://${assigned.url}/${assigned.fid}?dedupOf=${encodeURIComponent(assigned.dedupOf)}&md5=${MD5}&filename=b.jpg`, { headers: { authorization: `Bearer ${assigned.auth}` } })
  t.equal(linked.status, 201, linked.text())
  t.equal(linked.json<{ deduplicated: boolean }>().deduplicated, true)
  t.ok((await readEverywhere(http, cluster, assigned.fid)).every((c) => c.status === 200 && c.body.equals(IMAGE)), 'the link reads on every copy')
  const noToken = await http.call('POST', `http://${assigned.url}/${first.fid}?dedupOf=${encodeURIComponent(assigned.dedupOf)}&md5=${MD5}`)
  t.equal(noToken.status, 401, 'a dedup upload needs the write token like any upload')

  const holder = (await lookup(http, cluster.masterUrl, first.fid))![0]!.url
  t.equal((await http.call('POST', `http://${holder}/delete`, { body: JSON.stringify({ fids: [first.fid] }) })).json<{ results: { status: number }[] }>().results[0]!.status, 401, 'a batch delete without authority deletes nothing')
  const token = (await http.call('GET', `${cluster.masterUrl}/dir/lookup?fileId=${first.fid}`)).json<{ auth: string }>().auth
  const withToken = await http.call('POST', `http://${holder}/delete`, { body: JSON.stringify({ fids: [{ fid: first.fid, jwt: token }] }) })
  t.match(withToken.json(), { results: [{ fid: first.fid, status: 202, size: IMAGE.length }] }, 'a per-fid token from lookup deletes it')
  t.equal((await http.call('POST', `http://${holder}/admin/undelete?fid=${first.fid}`)).status, 401, 'undelete without the secret is refused')
  t.equal((await http.call('POST', `http://${holder}/admin/undelete?fid=${first.fid}`, { headers: auth })).status, 200, 'with the secret it restores')
  const bySecret = await http.call('POST', `http://${holder}/delete`, { body: JSON.stringify({ fids: [first.fid] }), headers: auth })
  t.match(bySecret.json(), { results: [{ status: 202 }] }, 'the cluster secret deletes in batches')
})
