/**
 * The SDK's side of the wire, against scripted servers in this process: the answers a real
 * cluster gives only by accident, and the exact requests the client sends.
 *
 * - reads: a short body, bytes that do not match the ETag, a redirect, a 404 from a lagging
 *   copy, a stale cached location; a copy's bad answer is never returned as data;
 * - the master: 503 with Retry-After is honoured (and fails at once when it does not fit in
 *   the deadline), answers are bounded;
 * - uploads: the assign carries md5 and size, the upload Content-Type, Content-MD5, filename
 *   and the write token; NS_ERR_REPLICATION_FAILED gets a new fid, a timeout after the body
 *   was sent does not; a dedupOf link is an empty POST, and NS_ERR_DEDUP_MISS falls back to the
 *   whole file at the same fid; a server that reports other bytes than were sent is an error;
 * - deleteMany: one POST /delete per volume and per 1000 fids, results in input order, per-fid
 *   5xx sent again, 401s sent again with delete tokens from the master, the secret as Bearer;
 * - undelete: POST /admin/undelete?fid= with the secret;
 * - the caller's abort ends a call at once with its reason.
 */
import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { NeedleClient, isNeedleClientError, type NeedleClientOptions } from '../../src/index.js'
import { fakeServer, type FakeHandler, type FakeServer } from '../helpers/fake-server.js'
import { failure } from '../helpers/client.js'

t.setTimeout(60_000)

/** With this, copies are tried in the order the master lists them. */
const KEEP_ORDER = () => 0.999_999

const md5 = (data: Buffer | string) => createHash('md5').update(data).digest('hex')

/** A master that answers /dir/lookup from `volumes` (read on every request) and hands the rest to `rest`. */
async function fakeMaster(t: Test, volumes: Map<number, FakeServer[]>, rest: FakeHandler = (_req, res) => res.json(404, { error: 'no', code: 'NS_ERR_NOT_FOUND' }), auth?: (fid: string) => string): Promise<FakeServer> {
  return fakeServer(t, (req, res) => {
    if (req.path === '/dir/lookup') {
      const text = req.query.get('volumeId') ?? ''
      const vid = Number(text.split(',')[0])
      const servers = volumes.get(vid)
      if (!servers || servers.length === 0) return res.json(404, { error: `volume id ${vid} not found`, code: 'NS_ERR_VOLUME_NOT_FOUND' })
      const fidAuth = text.includes(',') && auth ? { auth: auth(text) } : {}
      return res.json(200, { volumeOrFileId: String(vid), volumeId: String(vid), locations: servers.map((s) => ({ url: s.host, publicUrl: s.host })), ...fidAuth })
    }
    return rest(req, res)
  })
}

/** A data server that serves `files` (fid → bytes) the way a real one does. */
function serving(files: Map<string, Buffer>): FakeHandler {
  return (req, res) => {
    const data = files.get(req.path.slice(1))
    if (!data) return res.json(404, { error: `${req.path.slice(1)} not found`, code: 'NS_ERR_NOT_FOUND' })
    res.send(200, req.method === 'HEAD' ? '' : data, { etag: `"${md5(data)}"`, 'content-type': 'image/png', 'content-length': String(data.length) })
  }
}

function clientFor(t: Test, master: FakeServer, o: Partial<NeedleClientOptions> = {}): NeedleClient {
  const client = new NeedleClient({ master: master.url, timeoutMs: 5000, retryBaseMs: 5, random: KEEP_ORDER, ...o })
  t.teardown(() => client.close())
  return client
}

const FID = '3,01637037d6'
const DATA = Buffer.from('the bytes of a small file, nothing more')

t.test('reads: a short body or wrong bytes from one copy are never data; the next copy serves', async (t) => {
  const files = new Map([[FID, DATA]])
  const short = await fakeServer(t, (_req, res) => {
    res.raw.writeHead(200, { 'content-length': String(DATA.length), etag: `"${md5(DATA)}"` })
    res.raw.write(DATA.subarray(0, 10))
    setTimeout(() => res.raw.socket?.destroy(), 20)
  })
  const wrong = await fakeServer(t, (_req, res) => {
    const other = Buffer.from(DATA).fill(0x41, 0, 5)
    res.send(200, other, { etag: `"${md5(DATA)}"` })
  })
  const good = await fakeServer(t, serving(files))
  const volumes = new Map([[3, [short, wrong, good]]])
  const master = await fakeMaster(t, volumes)
  const client = clientFor(t, master)
  t.same(await client.download(FID), DATA, 'download returns the good copy\'s bytes')
  t.equal(short.requests.length, 1, 'after trying the copy that cut the body short')
  t.equal(wrong.requests.length, 1, 'and the copy whose bytes do not match the ETag')
  t.equal(client.stats.failovers, 2, 'two failovers')
  // A stream is handed out once a copy answers 200: failover happens before that, not after.
  const busy = await fakeServer(t, (_req, res) => res.json(503, { error: 'busy', code: 'NS_ERR_OVERLOADED' }))
  volumes.set(3, [busy, good])
  const stream = await clientFor(t, master).downloadStream(FID)
  const chunks: Buffer[] = []
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c)
  t.same(Buffer.concat(chunks), DATA, 'downloadStream fails over from a 503 before the stream is handed out')

  // One copy only: the bad answers become errors.
  volumes.set(3, [short])
  const cut = await failure(clientFor(t, master, { retries: 0 }).download(FID))
  t.ok(['NS_ERR_PEER_UNREACHABLE', 'NS_ERR_BAD_GATEWAY'].includes(cut.code), `a short body is an error: ${cut.message}`)
  volumes.set(3, [wrong])
  const bad = await failure(clientFor(t, master, { retries: 0 }).download(FID))
  t.equal(bad.code, 'NS_ERR_BAD_GATEWAY', `bytes that do not match the ETag are an error: ${bad.message}`)

  // A stream handed out errors when its bytes turn out short or wrong, rather than ending quietly.
  for (const [copy, what] of [
    [short, 'a body cut short'],
    [wrong, 'bytes that do not match the ETag'],
  ] as const) {
    volumes.set(3, [copy])
    const streamed = await clientFor(t, master, { retries: 0 }).downloadStream(FID)
    let streamError: unknown
    let got = 0
    try {
      for await (const chunk of streamed as AsyncIterable<Buffer>) got += chunk.length
    } catch (err) {
      streamError = err
    }
    t.ok(isNeedleClientError(streamError) && ['NS_ERR_PEER_UNREACHABLE', 'NS_ERR_BAD_GATEWAY'].includes(streamError.code), `downloadStream of ${what} errors (${(streamError as Error | undefined)?.message}) after ${got} bytes`)
  }
})

t.test('reads: a 404 from a lagging copy is checked against the others; a redirect means a stale copy', async (t) => {
  const files = new Map([[FID, DATA]])
  const lagging = await fakeServer(t, (_req, res) => res.json(404, { error: 'not found', code: 'NS_ERR_NOT_FOUND' }))
  const moved = await fakeServer(t, (req, res) => res.send(302, '', { location: `http://elsewhere${req.url}` }))
  const good = await fakeServer(t, serving(files))
  const volumes = new Map([[3, [lagging, moved, good]]])
  const master = await fakeMaster(t, volumes)
  const client = clientFor(t, master)
  t.same(await client.download(FID), DATA, 'the copy that has it serves')
  const info = await client.head(FID)
  t.same([info.size, info.contentType, info.eTag], [DATA.length, 'image/png', md5(DATA)], 'head too')

  volumes.set(3, [lagging, moved])
  const fresh = clientFor(t, master)
  const err = await failure(fresh.download(FID))
  t.equal(err.code, 'NS_ERR_NOT_FOUND', `no copy has it: ${err.message}`)
  t.equal(err.statusCode, 404)
  t.equal(err.attempts, 2, 'each copy asked once')
  const head = await failure(fresh.head(FID))
  t.equal(head.code, 'NS_ERR_NOT_FOUND', 'a HEAD 404 (no body) is NS_ERR_NOT_FOUND too')
})

t.test('reads: when the cached copies all fail, the location is asked again, once', async (t) => {
  const files = new Map([[FID, DATA]])
  const old = await fakeServer(t, (_req, res) => res.json(404, { error: 'volume 3 is not here', code: 'NS_ERR_VOLUME_NOT_FOUND' }))
  const now = await fakeServer(t, serving(files))
  const volumes = new Map([[3, [old]]])
  const master = await fakeMaster(t, volumes)
  const client = clientFor(t, master)
  t.equal((await client.lookup(3)).length, 1, 'the cache learns copy "old"')
  volumes.set(3, [now])
  t.same(await client.download(FID), DATA, 'the read still succeeds')
  t.equal(client.stats.masterLookups, 2, 'after one more lookup')
  t.equal(old.requests.length, 1, 'the stale copy was asked once')

  const down = await fakeServer(t, (_req, res) => res.json(503, { error: 'busy', code: 'NS_ERR_OVERLOADED' }))
  volumes.set(3, [down])
  const retrying = clientFor(t, master, { retries: 2 })
  const err = await failure(retrying.download(FID))
  t.equal(err.code, 'NS_ERR_OVERLOADED', `a copy that keeps answering 503: ${err.message}`)
  t.equal(err.statusCode, 503, 'the server\'s status')
  t.equal(down.requests.length, 3, 'asked 1 + retries times')
  t.equal(retrying.stats.masterLookups, 1, 'the location came from the master: no refresh')
})

t.test('the master: Retry-After is honoured, within the deadline; answers are bounded', async (t) => {
  let notReady = 1
  const master = await fakeServer(t, (req, res) => {
    if (req.path === '/dir/status' && notReady-- > 0) return res.json(503, { error: 'learning the cluster', code: 'NS_ERR_NOT_READY' }, { 'retry-after': '1' })
    if (req.path === '/dir/status') return res.json(200, { Topology: {} })
    if (req.path === '/vol/status') return res.send(200, `{"x":"${'y'.repeat(2 * 1024 * 1024)}"}`, { 'content-type': 'application/json' })
    res.json(404, {})
  })
  const client = clientFor(t, master)
  const started = Date.now()
  t.same(await client.clusterStatus(), { Topology: {} }, 'clusterStatus succeeds after the 503')
  t.ok(Date.now() - started >= 990, `after waiting the second Retry-After asked (${Date.now() - started} ms)`)
  notReady = 1
  const quick = Date.now()
  const err = await failure(client.clusterStatus({ timeoutMs: 500 }))
  t.equal(err.code, 'NS_ERR_NOT_READY', 'a Retry-After beyond the deadline ends the call with the server\'s answer')
  t.equal(err.retryAfterMs, 1000, 'which carries the wait asked for')
  t.ok(Date.now() - quick < 400, 'at once')
  const big = await failure(client.volumeStatus())
  t.equal(big.code, 'NS_ERR_BAD_GATEWAY', `a 2 MiB JSON answer is refused: ${big.message}`)
})

t.test('uploads: the requests; a replication failure gets a new fid; a timeout after sending does not', async (t) => {
  const fids = ['5,0a11111111', '5,0b22222222', '5,0c33333333']
  let assigned = 0
  const ds = await fakeServer(t, (req, res) => {
    if (req.path === `/${fids[0]}`) return res.json(503, { error: 'a replica failed', code: 'NS_ERR_REPLICATION_FAILED' })
    if (req.path === `/${fids[2]}`) return res.hang()
    res.json(201, { name: req.query.get('filename') ?? '', size: req.body.length, eTag: md5(req.body), mime: req.headers['content-type'] })
  })
  const master = await fakeServer(t, (req, res) => {
    if (req.path !== '/dir/assign') return res.json(404, {})
    const fid = fids[assigned++]!
    res.json(200, { fid, url: ds.host, publicUrl: ds.host, count: 1, auth: `token-for-${fid}` })
  })
  const client = clientFor(t, master)
  const data = Buffer.from('upload me')
  const r = await client.upload(data, { fileName: 'a b.jpg', collection: 'pics', replication: '002' })
  t.same(r, { fid: fids[1], url: `http://${ds.host}/${fids[1]}`, size: data.length, eTag: md5(data), deduplicated: false }, 'stored at the second fid')
  t.equal(master.requests.length, 2, 'two assigns: the replication failure got a new fid')
  const a = master.requests[0]!
  t.equal(a.method, 'POST', 'assign is a POST')
  t.same(Object.fromEntries(a.query), { count: '1', replication: '002', collection: 'pics', md5: md5(data), size: String(data.length) }, 'assign carries count, layout, md5 and size')
  const up = ds.requests[1]!
  t.equal(up.method, 'POST')
  t.equal(up.query.get('filename'), 'a b.jpg', 'the file name')
  t.equal(up.headers['content-type'], 'image/jpeg', 'the type, from the name')
  t.equal(up.headers['content-md5'], createHash('md5').update(data).digest('base64'), 'Content-MD5')
  t.equal(up.headers.authorization, `Bearer token-for-${fids[1]}`, 'the write token of this fid')
  t.same(up.body, data, 'the raw bytes')

  const slow = clientFor(t, master, { timeoutMs: 700 })
  const err = await failure(slow.upload(data))
  t.equal(err.code, 'NS_ERR_PEER_UNREACHABLE', `a data server that never answers: ${err.message}`)
  t.ok(err.message.includes(fids[2]!), 'the error names the fid')
  t.equal(master.requests.length, 3, 'no new fid after the body was sent')

  // A connection that never opens stored nothing: a new fid is safe.
  let refusedOnce = false
  const closedPort = await fakeServer(t, () => {})
  const closedHost = closedPort.host
  await closedPort.close()
  const master2 = await fakeServer(t, (_req, res) => {
    const host = refusedOnce ? ds.host : closedHost
    refusedOnce = true
    res.json(200, { fid: fids[1], url: host, publicUrl: host, count: 1 })
  })
  const r2 = await clientFor(t, master2).upload(data)
  t.equal(r2.fid, fids[1], 'a refused connection gets a new fid')
  t.equal(master2.requests.length, 2)

  const liar = await fakeServer(t, (_req, res) => res.json(201, { size: 3, eTag: md5('abc') }))
  const master3 = await fakeServer(t, (_req, res) => res.json(200, { fid: fids[1], url: liar.host, count: 1 }))
  const lie = await failure(clientFor(t, master3).upload(data))
  t.equal(lie.code, 'NS_ERR_BAD_GATEWAY', `a server that reports other bytes than were sent: ${lie.message}`)
})

t.test('uploads: a dedupOf link is an empty POST; a dedup miss sends the whole file to the same fid', async (t) => {
  const fid = '7,0d44444444'
  let miss = false
  const ds = await fakeServer(t, (req, res) => {
    if (req.query.has('dedupOf')) {
      if (miss) return res.json(409, { error: 'the stored copy is gone', code: 'NS_ERR_DEDUP_MISS' })
      return res.json(201, { name: req.query.get('filename') ?? '', size: 4096, eTag: req.query.get('md5'), mime: '', deduplicated: true })
    }
    res.json(201, { name: '', size: req.body.length, eTag: md5(req.body), mime: '', deduplicated: false })
  })
  const master = await fakeServer(t, (req, res) => {
    const dedup = req.query.has('md5') ? { dedupOf: 'sealed:opaque-reference' } : {}
    res.json(200, { fid, url: ds.host, publicUrl: ds.host, count: 1, auth: 'tok', ...dedup })
  })
  const client = clientFor(t, master)
  const data = Buffer.alloc(4096, 7)
  const linked = await client.upload(data, { fileName: 'same.bin', contentType: 'application/x-same' })
  t.same(linked, { fid, url: `http://${ds.host}/${fid}`, size: 4096, eTag: md5(data), deduplicated: true }, 'a link')
  const link = ds.requests[0]!
  t.equal(link.body.length, 0, 'with an empty body')
  t.same(Object.fromEntries(link.query), { dedupOf: 'sealed:opaque-reference', md5: md5(data), filename: 'same.bin' }, 'naming the stored copy (opaque), the MD5 and the name')
  t.equal(link.headers['content-type'], 'application/x-same', 'the type in Content-Type')
  t.equal(link.headers.authorization, 'Bearer tok', 'and the write token')

  miss = true
  const full = await client.upload(data)
  t.equal(full.deduplicated, false, 'after a dedup miss the file is stored whole')
  t.equal(full.fid, fid, 'at the same fid')
  const [missed, whole] = ds.requests.slice(1)
  t.ok(missed!.query.has('dedupOf'), 'the link was tried first')
  t.same(whole!.body, data, 'then the whole file')
  t.equal(whole!.headers.authorization, 'Bearer tok', 'with the same token')
  t.equal(master.requests.length, 2, 'no new assign for it')
  t.equal(client.stats.dedupMisses, 1)

  await client.upload(data, { dedup: false })
  const plain = master.requests[2]!
  t.notOk(plain.query.has('md5') || plain.query.has('size'), 'dedup:false sends no md5 or size to assign')
})

t.test('deleteMany: per volume and per 1000 fids, in input order, per-fid 5xx again, tokens for 401s', async (t) => {
  const tokensAsked: string[] = []
  const flaky = new Set(['4,0100000001'])
  const handler: FakeHandler = (req, res) => {
    if (req.path !== '/delete') return res.json(404, {})
    const { fids } = JSON.parse(req.body.toString('utf8')) as { fids: Array<string | { fid: string; jwt: string }> }
    const secured = req.headers.authorization === 'Bearer s3cret'
    res.json(200, {
      results: fids.map((item) => {
        const fid = typeof item === 'string' ? item : item.fid
        if (flaky.delete(fid)) return { fid, status: 503, code: 'NS_ERR_REPLICATION_FAILED', error: 'a replica failed' }
        if (fid.startsWith('6,') && !secured && typeof item === 'string') return { fid, status: 401, code: 'NS_ERR_UNAUTHORIZED', error: 'token needed' }
        if (typeof item !== 'string' && item.jwt !== `jwt-${fid}`) return { fid, status: 401, code: 'NS_ERR_UNAUTHORIZED', error: 'bad token' }
        return { fid, status: 202, size: 10 }
      }),
    })
  }
  const a = await fakeServer(t, handler)
  const b = await fakeServer(t, handler)
  const volumes = new Map([
    [4, [a]],
    [6, [b]],
  ])
  const master = await fakeMaster(t, volumes, undefined, (fid) => {
    tokensAsked.push(fid)
    return `jwt-${fid}`
  })
  const client = clientFor(t, master)
  const fids = ['4,0100000001', 'nope', '6,0200000002', '4,0300000003', '9,0400000004', '6,0500000005']
  const results = await client.deleteMany(fids)
  t.same(
    results.map((r) => [r.fid, r.ok, r.code]),
    [
      ['4,0100000001', true, undefined],
      ['nope', false, 'NS_ERR_BAD_FID'],
      ['6,0200000002', true, undefined],
      ['4,0300000003', true, undefined],
      ['9,0400000004', false, 'NS_ERR_VOLUME_NOT_FOUND'],
      ['6,0500000005', true, undefined],
    ],
    'each fid has its result, in input order',
  )
  t.same(results[0], { fid: '4,0100000001', ok: true, size: 10 }, 'with the size')
  t.same(a.requests.map((r) => r.path), ['/delete', '/delete'], 'volume 4: one batch, then the fid that failed with a 5xx again')
  t.same(tokensAsked.sort(), ['6,0200000002', '6,0500000005'], 'the 401s got delete tokens from the master')
  t.same(JSON.parse(b.requests[1]!.body.toString()).fids, [{ fid: '6,0200000002', jwt: 'jwt-6,0200000002' }, { fid: '6,0500000005', jwt: 'jwt-6,0500000005' }], 'and were sent again with them')

  const admin = clientFor(t, master, { secret: 's3cret' })
  const many = Array.from({ length: 2500 }, (_, i) => `4,${(0x1000 + i).toString(16)}00000001`)
  const before = a.requests.length
  const out = await admin.deleteMany(many)
  t.ok(out.every((r, i) => r.ok && r.fid === many[i]), '2500 fids deleted, in order')
  const sent = a.requests.slice(before)
  t.same(sent.map((r) => JSON.parse(r.body.toString()).fids.length).sort((x: number, y: number) => y - x), [1000, 1000, 500], 'in batches of at most 1000')
  t.ok(sent.every((r) => r.headers.authorization === 'Bearer s3cret'), 'with the secret as Bearer')
  const smaller = clientFor(t, master, { secret: 's3cret', deleteBatchMax: 300 })
  const from = a.requests.length
  t.ok((await smaller.deleteMany(many.slice(0, 700))).every((r) => r.ok), 'deleteBatchMax 300: 700 fids deleted')
  t.same(a.requests.slice(from).map((r) => JSON.parse(r.body.toString()).fids.length).sort((x: number, y: number) => y - x), [300, 300, 100], 'in batches of at most 300')
})

t.test('undelete: POST /admin/undelete?fid= with the secret, at a live copy', async (t) => {
  const down = await fakeServer(t, (_req, res) => res.json(503, { error: 'closing', code: 'NS_ERR_VOLUME_CLOSED' }))
  const up = await fakeServer(t, (req, res) => res.json(200, { fid: req.query.get('fid'), size: 77, undeleted: true }))
  const master = await fakeMaster(t, new Map([[3, [down, up]]]))
  const client = clientFor(t, master, { secret: 'k' })
  t.same(await client.undelete(FID), { size: 77, undeleted: true })
  const req = up.requests[0]!
  t.same([req.method, req.path, req.query.get('fid'), req.headers.authorization], ['POST', '/admin/undelete', FID, 'Bearer k'], 'the request')
  t.equal(down.requests.length, 1, 'after the copy that answered 503')
})

t.test('the caller\'s abort ends a call at once with its reason', async (t) => {
  const hung = await fakeServer(t, (_req, res) => res.hang())
  const master = await fakeMaster(t, new Map([[3, [hung]]]))
  const client = clientFor(t, master, { timeoutMs: 30_000 })
  const controller = new AbortController()
  const started = Date.now()
  setTimeout(() => controller.abort(new Error('stop now')), 100)
  await t.rejects(client.download(FID, { signal: controller.signal }), { message: 'stop now' }, 'the reason is the rejection')
  t.ok(Date.now() - started < 2000, `within ${Date.now() - started} ms`)
})
