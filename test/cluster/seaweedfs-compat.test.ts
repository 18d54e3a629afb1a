/**
 * The cluster as a SeaweedFS client sees it: only raw HTTP, following SeaweedFS's documented
 * master and volume-server REST API (assign, upload, lookup, read from any replica, redirect
 * through the master, delete, submit, status pages). A real master and three data servers, so
 * the default replication is 002: three copies of every file.
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { Agent, FormData, request, type Dispatcher } from 'undici'
import { startCluster } from '../helpers/cluster.js'
import { bytesFrom } from '../helpers/volume.js'

t.setTimeout(120_000)

const dispatcher: Dispatcher = new Agent({ headersTimeout: 15_000, bodyTimeout: 15_000, connections: 8 })
t.teardown(() => dispatcher.destroy())

const cluster = await startCluster(t, { dataServers: 3 })
const master = cluster.masterUrl
const dataServerAddresses = new Set(cluster.dataServers.map((p) => p.address))

/** `<vid>,<key bytes as hex, no leading zero byte><cookie as 8 hex>`, as SeaweedFS formats it. */
const FID = /^([1-9][0-9]*),((?:[0-9a-f]{2}){1,8})([0-9a-f]{8})$/

interface Assigned {
  fid: string
  url: string
  publicUrl: string
  count: number
  auth?: string
  error?: string
}

interface Lookup {
  volumeOrFileId?: string
  volumeId?: string
  locations?: Array<{ url: string; publicUrl: string }>
  error?: string
}

const bytes = bytesFrom

const md5 = (data: Uint8Array) => createHash('md5').update(data).digest('hex')

async function call(method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE', url: string, body?: FormData | Buffer) {
  const res = await request(url, { dispatcher, method, body })
  const data = Buffer.from(await res.body.arrayBuffer())
  return {
    status: res.statusCode,
    headers: res.headers,
    body: data,
    json: <T = Record<string, unknown>>() => JSON.parse(data.toString('utf8')) as T,
    text: () => data.toString('utf8'),
  }
}

/** A multipart body as `curl -F file=@<filename>` sends it: field `file`, a file name. */
function filePart(data: Buffer, filename: string): FormData {
  const form = new FormData()
  form.append('file', new Blob([data]), filename)
  return form
}

function vidOf(fid: string): string {
  return fid.slice(0, fid.indexOf(','))
}

async function assign(query = ''): Promise<Assigned> {
  const assigned = await cluster.assign(query)
  return assigned as Assigned
}

async function lookup(volumeId: string): Promise<Lookup & { status: number }> {
  const res = await call('GET', `${master}/dir/lookup?volumeId=${encodeURIComponent(volumeId)}`)
  return { status: res.status, ...res.json<Lookup>() }
}

/** The host:port of every location the master lists for the volume of fidOrVid. */
async function locationsOf(fidOrVid: string): Promise<string[]> {
  const found = await lookup(fidOrVid)
  if (found.status !== 200) throw new Error(`lookup ${fidOrVid} answered ${found.status}: ${JSON.stringify(found)}`)
  return (found.locations ?? []).map((l) => l.publicUrl)
}

t.test('GET / answers 200 (clients use it as a ping)', async (t) => {
  const res = await call('GET', `${master}/`)
  t.equal(res.status, 200)
})

t.test('/dir/assign answers a fid, url, publicUrl and count, by GET and by POST', async (t) => {
  const res = await call('GET', `${master}/dir/assign`)
  t.equal(res.status, 200, res.text())
  const a = res.json<Assigned>()
  t.match(a.fid, FID, `fid ${a.fid} has SeaweedFS's shape`)
  const key = FID.exec(a.fid)![2]!
  t.ok(key.length === 2 || !key.startsWith('00'), `the key ${key} has no leading zero byte`)
  t.ok(dataServerAddresses.has(a.url), `url ${a.url} is one of the data servers`)
  t.type(a.publicUrl, 'string')
  t.equal(a.count, 1)
  t.equal(a.auth, undefined, 'no token without a secret')

  const posted = await call('POST', `${master}/dir/assign`)
  t.equal(posted.status, 200, posted.text())
  const b = posted.json<Assigned>()
  t.match(b.fid, FID)
  t.not(b.fid, a.fid, 'every assign hands out a new fid')
})

t.test('upload multipart to <url>/<fid>, look it up, read it from every replica and through the master', async (t) => {
  const a = await assign()
  const vid = vidOf(a.fid)
  const data = bytes(20_000, 1)

  const put = await call('POST', `http://${a.url}/${a.fid}`, filePart(data, 'photo.png'))
  t.equal(put.status, 201, put.text())
  const stored = put.json<{ name: string; size: number; eTag: string }>()
  t.equal(stored.name, 'photo.png')
  t.equal(stored.size, data.length)
  t.equal(stored.eTag, md5(data), 'eTag is the MD5 of the content')

  const byVid = await lookup(vid)
  t.equal(byVid.status, 200, JSON.stringify(byVid))
  t.equal(byVid.volumeOrFileId, vid)
  const locations = byVid.locations ?? []
  t.equal(locations.length, 3, 'three replicas (default replication 002 with three data servers)')
  const urls = locations.map((l) => l.url)
  t.equal(new Set(urls).size, 3, 'on three different data servers')
  for (const l of locations) {
    t.ok(dataServerAddresses.has(l.url), `location url ${l.url} is a data server`)
    t.ok(dataServerAddresses.has(l.publicUrl), `location publicUrl ${l.publicUrl} is a data server`)
  }
  t.ok(urls.includes(a.url), 'the assigned url is one of the locations')

  const byFid = await lookup(a.fid)
  t.equal(byFid.status, 200, JSON.stringify(byFid))
  t.equal(byFid.volumeOrFileId, vid, 'a fid is looked up by its volume id, as SeaweedFS does')
  t.same(new Set((byFid.locations ?? []).map((l) => l.url)), new Set(urls), 'the same locations by fid as by volume id')

  for (const l of locations) {
    const got = await call('GET', `http://${l.publicUrl}/${a.fid}`)
    t.equal(got.status, 200, `GET from ${l.publicUrl}`)
    t.ok(got.body.equals(data), `${l.publicUrl} serves the bytes unchanged`)
    t.equal(got.headers['content-type'], 'image/png', `${l.publicUrl}: Content-Type from the file name`)
    t.equal(got.headers.etag, `"${md5(data)}"`)
    const zero = await call('GET', `http://${l.publicUrl}/${a.fid}_0`)
    t.equal(zero.status, 200)
    t.ok(zero.body.equals(data), `${l.publicUrl}: <fid>_0 is the same file as <fid>`)
  }

  const viaMaster = await call('GET', `${master}/${a.fid}`)
  t.equal(viaMaster.status, 302, 'the master redirects a read')
  const location = new URL(String(viaMaster.headers.location))
  t.ok(urls.includes(location.host), `Location ${location.href} points at a replica`)
  t.equal(location.pathname, `/${a.fid}`)
  const followed = await call('GET', location.href)
  t.equal(followed.status, 200)
  t.ok(followed.body.equals(data), 'the redirect leads to the file')

  const head = await call('HEAD', `${master}/${a.fid}`)
  t.equal(head.status, 302, 'HEAD through the master redirects too')
  t.ok(urls.includes(new URL(String(head.headers.location)).host))
})

t.test('assign count=3: <fid>, <fid>_1 and <fid>_2 are three files; <fid>_0 is <fid>', async (t) => {
  const a = await assign('count=3')
  t.equal(a.count, 3)
  const files = [
    { id: a.fid, data: bytes(5_000, 10), name: 'zero.jpg', type: 'image/jpeg' },
    { id: `${a.fid}_1`, data: bytes(6_000, 11), name: 'one.gif', type: 'image/gif' },
    { id: `${a.fid}_2`, data: bytes(7_000, 12), name: 'two.png', type: 'image/png' },
  ]
  for (const f of files) {
    const put = await call('POST', `http://${a.url}/${f.id}`, filePart(f.data, f.name))
    t.equal(put.status, 201, `upload ${f.id}: ${put.text()}`)
    t.match(put.json(), { name: f.name, size: f.data.length })
  }
  const locations = await locationsOf(a.fid)
  t.equal(locations.length, 3)
  for (const where of locations) {
    for (const f of files) {
      const got = await call('GET', `http://${where}/${f.id}`)
      t.equal(got.status, 200, `GET ${where}/${f.id}`)
      t.ok(got.body.equals(f.data), `${where}/${f.id} holds its own bytes`)
      t.equal(got.headers['content-type'], f.type)
    }
    const zero = await call('GET', `http://${where}/${a.fid}_0`)
    t.ok(zero.body.equals(files[0]!.data), `${where}/<fid>_0 is <fid>`)
  }
})

t.test('DELETE at a replica answers 202 {size}; the file is then gone from every replica', async (t) => {
  const a = await assign()
  const data = bytes(12_345, 2)
  const put = await call('POST', `http://${a.url}/${a.fid}`, filePart(data, 'doomed.bin'))
  t.equal(put.status, 201, put.text())
  const locations = await locationsOf(a.fid)
  t.equal(locations.length, 3)
  // Any replica takes a delete and passes it on, as in SeaweedFS; use one that was not written to.
  const at = locations.find((l) => l !== a.url) ?? a.url
  const del = await call('DELETE', `http://${at}/${a.fid}`)
  t.equal(del.status, 202, del.text())
  t.same(del.json(), { size: data.length }, 'the answer is the size of the deleted file')
  for (const where of locations) {
    const got = await call('GET', `http://${where}/${a.fid}`)
    t.equal(got.status, 404, `${where} no longer serves it`)
  }
  const again = await call('DELETE', `http://${a.url}/${a.fid}`)
  t.equal(again.status, 202, 'deleting again is not an error')
})

t.test('/submit stores a multipart upload and answers fid, fileName, fileUrl and size', async (t) => {
  const data = Buffer.from('hello from /submit\n'.repeat(100))
  const res = await call('POST', `${master}/submit`, filePart(data, 'hello.txt'))
  t.equal(res.status, 201, res.text())
  const s = res.json<{ fid: string; fileName: string; fileUrl: string; size: number }>()
  t.match(s.fid, FID)
  t.equal(s.fileName, 'hello.txt')
  t.equal(s.size, data.length)
  t.match(s.fileUrl, new RegExp(`^[^/]+:[0-9]+/${s.fid.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`), 'fileUrl is host:port/fid')
  t.ok(dataServerAddresses.has(s.fileUrl.slice(0, s.fileUrl.indexOf('/'))), 'fileUrl names a data server')
  const got = await call('GET', `http://${s.fileUrl}`)
  t.equal(got.status, 200)
  t.ok(got.body.equals(data), 'the file reads back at fileUrl')
  t.match(String(got.headers['content-type']), /^text\/plain/)
  for (const where of await locationsOf(s.fid)) {
    const copy = await call('GET', `http://${where}/${s.fid}`)
    t.ok(copy.body.equals(data), `${where} holds a copy`)
  }
})

t.test('/submit also takes a raw body (?filename= names it)', async (t) => {
  const data = bytes(3_000, 4)
  const res = await call('POST', `${master}/submit?filename=raw.png`, data)
  t.equal(res.status, 201, res.text())
  const s = res.json<{ fid: string; fileName: string; fileUrl: string; size: number }>()
  t.match(s.fid, FID)
  t.equal(s.size, data.length)
  const got = await call('GET', `http://${s.fileUrl}`)
  t.equal(got.status, 200)
  t.ok(got.body.equals(data), 'the raw body reads back at fileUrl')
})

t.test('assign takes replication=000: one copy', async (t) => {
  const a = await assign('replication=000')
  const put = await call('POST', `http://${a.url}/${a.fid}`, filePart(bytes(500, 5), 'single.bin'))
  t.equal(put.status, 201, put.text())
  t.same(await locationsOf(a.fid), [a.publicUrl], 'the volume has one location: the assigned server')
  // A data server without the volume sends the reader to one that has it.
  const elsewhere = [...dataServerAddresses].find((d) => d !== a.publicUrl)!
  const res = await call('GET', `http://${elsewhere}/${a.fid}`)
  t.equal(res.status, 302, `GET from ${elsewhere}, which does not hold the volume`)
  const location = new URL(String(res.headers.location))
  t.equal(location.host, a.publicUrl, 'redirected to the server that holds it')
  t.equal(location.pathname, `/${a.fid}`)
})

t.test('errors are JSON with an error field', async (t) => {
  const bad = await call('GET', `${master}/dir/assign?replication=9z9`)
  t.ok(bad.status >= 400 && bad.status < 500, `assign with a malformed replication: ${bad.status}`)
  t.type(bad.json().error, 'string')
  const missing = await call('GET', `${master}/4000000,01637037d6`)
  t.equal(missing.status, 404, 'a read through the master of an unknown volume')
  t.type(missing.json().error, 'string')
})

t.test('/vol/grow creates volumes and answers their count', async (t) => {
  const res = await call('POST', `${master}/vol/grow?count=1&replication=001`)
  t.equal(res.status, 200, res.text())
  // SeaweedFS counts the volume copies it made (here 2); a count of volumes (1) reads as well.
  const count = res.json().count
  t.ok(count === 1 || count === 2, `count ${count}`)
  const a = await assign('replication=001')
  t.equal((await locationsOf(a.fid)).length, 2, 'replication 001: two copies')
})

t.test("the master redirects writes (307, body and method kept) and deletes through a data server (DESIGN §5)", async (t) => {
  const a = await assign()
  const data = bytes(4_000, 6)
  const locations = await locationsOf(a.fid)
  const res = await call('POST', `${master}/${a.fid}`, filePart(data, 'via-master.png'))
  t.equal(res.status, 307, res.text())
  const location = new URL(String(res.headers.location))
  t.ok(locations.includes(location.host), `Location ${location.href} points at a replica`)
  t.equal(location.pathname, `/${a.fid}`)
  // What a client that follows a 307 does: the same method and body, to the new location.
  const put = await call('POST', location.href, filePart(data, 'via-master.png'))
  t.equal(put.status, 201, put.text())
  for (const where of locations) t.ok((await call('GET', `http://${where}/${a.fid}`)).body.equals(data), `${where} holds it`)

  const del = await call('DELETE', `${master}/${a.fid}`)
  t.equal(del.status, 202, del.text())
  t.same(del.json(), { size: data.length }, 'the data server\'s answer')
  for (const where of locations) t.equal((await call('GET', `http://${where}/${a.fid}`)).status, 404, `${where}: deleted`)
})

t.test('/dir/lookup of an unknown volume answers 404 with an error', async (t) => {
  for (const id of ['4000000', '4000000,01637037d6']) {
    const res = await call('GET', `${master}/dir/lookup?volumeId=${encodeURIComponent(id)}`)
    t.equal(res.status, 404, `lookup ${id}`)
    const body = res.json()
    t.type(body.error, 'string', `${id}: the answer has an error message`)
    t.ok(String(body.error).length > 0)
  }
})

t.test('/cluster/status: this master is the leader', async (t) => {
  const res = await call('GET', `${master}/cluster/status`)
  t.equal(res.status, 200)
  const s = res.json<{ IsLeader: boolean; Leader: string; Peers: unknown }>()
  t.equal(s.IsLeader, true)
  t.equal(s.Leader, cluster.master.address)
  t.ok(Array.isArray(s.Peers), 'Peers is a list')
})

t.test('/dir/status: the topology lists every data server, alive and holding volumes', async (t) => {
  const res = await call('GET', `${master}/dir/status`)
  t.equal(res.status, 200)
  type Node = { Url: string; PublicUrl: string; Volumes: number; Max: number; Free: number; Alive: boolean }
  const s = res.json<{ Version: string; Topology: { Max: number; Free: number; DataCenters: Array<{ Id: string; Racks: Array<{ Id: string; DataNodes: Node[] }> }> } }>()
  t.type(s.Version, 'string')
  t.type(s.Topology.Max, 'number')
  t.type(s.Topology.Free, 'number')
  t.ok(Array.isArray(s.Topology.DataCenters) && s.Topology.DataCenters.length >= 1)
  const nodes = new Map<string, Node>()
  for (const dc of s.Topology.DataCenters) {
    t.type(dc.Id, 'string')
    for (const rack of dc.Racks) {
      t.type(rack.Id, 'string')
      for (const node of rack.DataNodes) nodes.set(node.Url, node)
    }
  }
  t.same(new Set(nodes.keys()), dataServerAddresses, 'every data server, and only those')
  for (const [url, node] of nodes) {
    t.equal(node.Alive, true, `${url} is alive`)
    t.type(node.PublicUrl, 'string')
    t.type(node.Max, 'number')
    t.type(node.Free, 'number')
    t.ok(node.Volumes >= 1, `${url} holds volumes (${node.Volumes}): each volume has a replica on every server`)
  }
})

t.test('/vol/status answers the volumes', async (t) => {
  const res = await call('GET', `${master}/vol/status`)
  t.equal(res.status, 200)
  const s = res.json<{ Version: unknown; Volumes: unknown }>()
  t.type(s.Version, 'string')
  t.ok(s.Volumes !== undefined && s.Volumes !== null, 'Volumes is there')
})

t.test('a data server\'s /status lists its volumes in SeaweedFS\'s spelling', async (t) => {
  const a = await assign()
  const put = await call('POST', `http://${a.url}/${a.fid}`, filePart(bytes(1000, 3), 'x.bin'))
  t.equal(put.status, 201, put.text())
  const vid = Number(vidOf(a.fid))
  for (const where of await locationsOf(a.fid)) {
    const res = await call('GET', `http://${where}/status`)
    t.equal(res.status, 200)
    const s = res.json<{ Volumes: Array<{ Id: number; FileCount: number; ReadOnly: boolean }> }>()
    t.ok(Array.isArray(s.Volumes), `${where}: Volumes is a list`)
    const v = s.Volumes.find((x) => x.Id === vid)
    t.ok(v, `${where} lists volume ${vid}`)
    t.ok((v?.FileCount ?? 0) >= 1, `${where}: volume ${vid} counts the file`)
    t.equal(v?.ReadOnly, false)
  }
})

t.test('/vol/vacuum answers 200, by GET and by POST', async (t) => {
  const get = await call('GET', `${master}/vol/vacuum`)
  t.equal(get.status, 200, get.text())
  get.json()
  const post = await call('POST', `${master}/vol/vacuum?garbageThreshold=0.3`)
  t.equal(post.status, 200, post.text())
  post.json()
})

t.test('/metrics on the master answers Prometheus text', async (t) => {
  const res = await call('GET', `${master}/metrics`)
  t.equal(res.status, 200)
  t.match(res.text(), /^# (HELP|TYPE) /m)
})
