/**
 * The SDK against a real local cluster (a master and three data servers, replication 002):
 * every method of NeedleClient, through the package's entry point.
 *
 * - upload of a Buffer, a Node stream, an async iterable and a web stream, with a content type
 *   and a file name, reads back byte for byte through download, downloadStream, head and url;
 * - lookup by volume id (number and text) and by fid;
 * - delete, then every read answers NS_ERR_NOT_FOUND; a second delete still succeeds;
 * - uploadMany: every item's result at its index, errors included, and onResult for each;
 * - errors carry stable codes: a malformed fid, a missing file, a missing volume, a file over
 *   fileBytesMax (before any request), a bad option, a server's own refusal;
 * - the location cache: a hit until locationTtlMs passes on the client's clock, then a lookup;
 *   a cache of one volume forgets the least recently used.
 *
 * Dedup, batch delete and undelete are in routes.test.ts.
 */
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { NeedleClient, NeedleClientError, isNeedleClientError, type UploadResult } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { md5Hex, randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'
import { failure } from '../helpers/client.js'

t.setTimeout(180_000)

const SEED = Number(process.env.NEEDLESTORE_SDK_SEED ?? 0x5d4_0001)
const random = seededRandom(SEED)
t.comment(`seed ${SEED} (NEEDLESTORE_SDK_SEED replays the bodies)`)

const cluster = await startCluster(t, { dataServers: 3 })
const client = new NeedleClient({ master: cluster.masterUrl, timeoutMs: 15_000 })
t.teardown(() => client.close())
const addresses = new Set(cluster.dataServers.map((p) => p.address))

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk)
  return Buffer.concat(chunks)
}

/** The same key with another cookie: a fid that names no file. */
function otherCookie(fid: string): string {
  return `${fid.slice(0, -8)}${((parseInt(fid.slice(-8), 16) ^ 0x5a5a_5a5a) >>> 0).toString(16).padStart(8, '0')}`
}

/** Every way to read a file agrees with data. */
async function readsBack(t: Test, fid: string, data: Buffer, expect: { contentType: string; fileName?: string }): Promise<void> {
  const got = await client.download(fid)
  t.equal(got.length, data.length, `download ${fid}: ${data.length} bytes`)
  t.equal(sha256(got), sha256(data), `download ${fid}: the same bytes`)
  const streamed = await readAll(await client.downloadStream(fid))
  t.equal(sha256(streamed), sha256(data), `downloadStream ${fid}: the same bytes`)
  const info = await client.head(fid)
  t.equal(info.size, data.length, 'head: size')
  t.equal(info.contentType, expect.contentType, 'head: content type')
  t.equal(info.eTag, md5Hex(data), 'head: eTag is the MD5')
  t.equal(info.fileName, expect.fileName, 'head: file name')
  t.ok(info.lastModified instanceof Date && Math.abs(info.lastModified.getTime() - Date.now()) < 10 * 60_000, 'head: last modified is recent')
  const url = await client.url(fid)
  t.match(url, /^http:\/\/127\.0\.0\.1:[0-9]+\//, `url: ${url}`)
  t.ok(addresses.has(new URL(url).host), 'url: names one of the data servers')
  const res = await request(url)
  const viaUrl = Buffer.from(await res.body.arrayBuffer())
  t.equal(res.statusCode, 200, 'url: GET answers 200')
  t.equal(sha256(viaUrl), sha256(data), 'url: the same bytes')
}

function checkResult(t: Test, r: UploadResult, data: Buffer): void {
  t.match(r.fid, /^[0-9]+,[0-9a-f]{9,}$/, `fid ${r.fid}`)
  t.equal(r.size, data.length, 'size')
  t.equal(r.eTag, md5Hex(data), 'eTag is the MD5')
  t.equal(r.url, `http://${new URL(r.url).host}/${r.fid}`, 'url is the file at a data server')
  t.ok(addresses.has(new URL(r.url).host), 'url names one of the data servers')
}

t.test('the package entry point exports the client and its error', async (t) => {
  t.type(NeedleClient, 'function')
  t.type(NeedleClientError, 'function')
  const err = new NeedleClientError('NS_ERR_NOT_FOUND', 'x', { statusCode: 404 })
  t.ok(isNeedleClientError(err), 'the guard knows the error')
  t.ok(isNeedleClientError(Object.assign(new Error('y'), { name: 'NeedleClientError', code: 'NS_ERR_IO' })), 'and one from another copy of the package')
  t.notOk(isNeedleClientError(new Error('z')))
})

t.test('upload a Buffer, a Node stream, an async iterable and a web stream; each reads back byte for byte', async (t) => {
  const buffer = randomBody(random, 100_000)
  const r1 = await client.upload(buffer, { contentType: 'image/png', fileName: 'photo one.png' })
  checkResult(t, r1, buffer)
  t.equal(r1.deduplicated, false, 'a new file is not deduplicated')
  await readsBack(t, r1.fid, buffer, { contentType: 'image/png', fileName: 'photo one.png' })

  const streamed = randomBody(random, 300_000)
  const chunks = Array.from({ length: 10 }, (_, i) => streamed.subarray(i * 30_000, (i + 1) * 30_000))
  const r2 = await client.upload(Readable.from(chunks), { fileName: 'ünïcode.jpg' })
  checkResult(t, r2, streamed)
  await readsBack(t, r2.fid, streamed, { contentType: 'image/jpeg', fileName: 'ünïcode.jpg' })

  const iterated = randomBody(random, 70_001)
  async function* pieces(): AsyncIterable<Uint8Array> {
    for (let at = 0; at < iterated.length; at += 8192) yield new Uint8Array(iterated.subarray(at, at + 8192))
  }
  const r3 = await client.upload(pieces(), { contentType: 'application/x-thing' })
  checkResult(t, r3, iterated)
  await readsBack(t, r3.fid, iterated, { contentType: 'application/x-thing' })

  const web = randomBody(random, 5000)
  const r4 = await client.upload(Readable.toWeb(Readable.from([web])) as unknown as AsyncIterable<Uint8Array>)
  checkResult(t, r4, web)
  await readsBack(t, r4.fid, web, { contentType: 'application/octet-stream' })

  const empty = Buffer.alloc(0)
  const r5 = await client.upload(empty, { fileName: 'empty.txt' })
  checkResult(t, r5, empty)
  await readsBack(t, r5.fid, empty, { contentType: 'text/plain', fileName: 'empty.txt' })

  t.equal(new Set([r1.fid, r2.fid, r3.fid, r4.fid, r5.fid]).size, 5, 'five different fids')
})

t.test('lookup by volume id (number and text) and by fid names the three copies', async (t) => {
  const data = randomBody(random, 1000)
  const { fid } = await client.upload(data)
  const vid = Number(fid.slice(0, fid.indexOf(',')))
  for (const key of [vid, String(vid), fid]) {
    const locations = await client.lookup(key)
    t.equal(locations.length, 3, `lookup(${JSON.stringify(key)}): three copies`)
    t.same(new Set(locations.map((l) => l.publicUrl)), addresses, 'on the three data servers')
    for (const l of locations) t.type(l.url, 'string')
  }
  t.equal((await failure(client.lookup('x,1'))).code, 'NS_ERR_BAD_FID', 'a malformed fid')
  t.equal((await failure(client.lookup(0))).code, 'NS_ERR_BAD_REQUEST', 'volume id 0')
  const unknown = await failure(client.lookup(999_999))
  t.equal(unknown.code, 'NS_ERR_VOLUME_NOT_FOUND', `an unknown volume: ${unknown.message}`)
  t.equal(unknown.statusCode, 404, 'with the master\'s status')
})

t.test('delete: the file is gone from every read; deleting again succeeds (idempotent)', async (t) => {
  const data = randomBody(random, 12_345)
  const { fid } = await client.upload(data, { fileName: 'gone.bin' })
  t.same(await client.delete(fid), { size: 12_345 }, 'delete answers the size')
  for (const [name, read] of [
    ['download', () => client.download(fid)],
    ['downloadStream', () => client.downloadStream(fid)],
    ['head', () => client.head(fid)],
  ] as const) {
    const err = await failure(read())
    t.equal(err.code, 'NS_ERR_NOT_FOUND', `${name} after delete: ${err.message}`)
    t.equal(err.statusCode, 404, `${name}: status 404`)
    t.equal(err.fid, fid, `${name}: the error names the fid`)
    t.ok(err.message.includes(fid), `${name}: and so does its message`)
  }
  const again = await client.delete(fid)
  t.type(again.size, 'number', 'a second delete of the same fid succeeds')
})

t.test('errors carry stable codes', async (t) => {
  for (const bad of ['', 'nonsense', '3', '3,zz', '0,01637037d6', '3,01']) {
    const err = await failure(client.download(bad))
    t.equal(err.code, 'NS_ERR_BAD_FID', `download(${JSON.stringify(bad)}): ${err.message}`)
    t.equal(err.statusCode, undefined, 'found by the client: no status')
  }
  const { fid } = await client.upload(randomBody(random, 100))
  const wrongCookie = otherCookie(fid)
  const missing = await failure(client.download(wrongCookie))
  t.equal(missing.code, 'NS_ERR_NOT_FOUND', `a wrong cookie is a missing file: ${missing.message}`)
  t.equal(missing.statusCode, 404)
  const noVolume = await failure(client.download('999999,01637037d6'))
  t.equal(noVolume.code, 'NS_ERR_VOLUME_NOT_FOUND', `an unknown volume: ${noVolume.message}`)

  const small = new NeedleClient({ master: cluster.masterUrl, fileBytesMax: 1000 })
  t.teardown(() => small.close())
  const big = await failure(small.upload(Buffer.alloc(1001)))
  t.equal(big.code, 'NS_ERR_BODY_TOO_LARGE', `a Buffer over fileBytesMax: ${big.message}`)
  let pulled = 0
  const endless = new Readable({
    read() {
      pulled++
      this.push(Buffer.alloc(400))
    },
  })
  const bigStream = await failure(small.upload(endless))
  t.equal(bigStream.code, 'NS_ERR_BODY_TOO_LARGE', 'a stream over fileBytesMax')
  t.ok(endless.destroyed, 'the stream is destroyed, not read to its end')
  t.ok(pulled <= 10, `only ${pulled} chunks were pulled`)
  t.equal(small.stats.masterLookups, 0, 'no request was made')
  const tooBigToRead = await failure(small.download(fid.replace(/.*/, (await client.upload(Buffer.alloc(5000))).fid)))
  t.equal(tooBigToRead.code, 'NS_ERR_BODY_TOO_LARGE', `a download over fileBytesMax: ${tooBigToRead.message}`)

  const option = t.throws(() => new NeedleClient({ master: cluster.masterUrl, timeoutMs: -1 })) as unknown as NeedleClientError
  t.equal(option.code, 'NS_ERR_BAD_OPTION', `a bad option: ${option.message}`)
  t.match(option.message, /timeoutMs/, 'names the option')
  t.equal((t.throws(() => new NeedleClient({ master: 'ftp://x' })) as unknown as NeedleClientError).code, 'NS_ERR_BAD_OPTION', 'a bad master URL')

  const refused = await failure(client.upload(Buffer.from('x'), { collection: 'no spaces allowed' }))
  t.equal(refused.code, 'NS_ERR_BAD_REQUEST', `the master's refusal keeps its code: ${refused.message}`)
  t.equal(refused.statusCode, 400, 'and its status')
  t.equal((await failure(client.upload(Buffer.from('x'), { replication: 'abc' }))).code, 'NS_ERR_BAD_REQUEST', 'a malformed replication')

  const nowhere = new NeedleClient({ master: 'http://127.0.0.1:1', timeoutMs: 2000, retries: 1 })
  t.teardown(() => nowhere.close())
  const unreachable = await failure(nowhere.upload(Buffer.from('x')))
  t.equal(unreachable.code, 'NS_ERR_PEER_UNREACHABLE', `no master: ${unreachable.message}`)
  t.equal(unreachable.statusCode, undefined)
  t.equal(unreachable.attempts, 2, 'tried twice (retries: 1)')

  const closed = new NeedleClient({ master: cluster.masterUrl })
  await closed.close()
  await closed.close()
  t.equal((await failure(closed.download(fid))).code, 'NS_ERR_BAD_REQUEST', 'a closed client refuses calls')
})

t.test('uploadMany: a result or an error at each index, onResult for each', async (t) => {
  const small = new NeedleClient({ master: cluster.masterUrl, fileBytesMax: 64 * 1024 })
  t.teardown(() => small.close())
  const bodies = Array.from({ length: 24 }, (_, i) => (i === 7 ? Buffer.alloc(70_000) : randomBody(random, 1 + Math.floor(random() * 60_000))))
  const seen: number[] = []
  let inFlight = 0
  let inFlightMax = 0
  function* items() {
    for (const [i, data] of bodies.entries()) {
      inFlight++
      inFlightMax = Math.max(inFlightMax, inFlight)
      yield i % 3 === 0 ? { data: Readable.from([data]), fileName: `f${i}.bin` } : { data, contentType: 'text/plain' }
    }
  }
  const results = await small.uploadMany(items(), {
    concurrency: 4,
    onResult: (i) => {
      inFlight--
      seen.push(i)
    },
  })
  t.equal(results.length, bodies.length, 'one outcome per item')
  t.same([...seen].sort((a, b) => a - b), bodies.map((_, i) => i), 'onResult once for every index')
  t.ok(inFlightMax <= 4, `at most 4 items were pulled ahead of their results (saw ${inFlightMax})`)
  for (const [i, r] of results.entries()) {
    if (i === 7) {
      t.ok(isNeedleClientError(r) && r.code === 'NS_ERR_BODY_TOO_LARGE', 'the oversized item failed with its code; the others went on')
      continue
    }
    if (isNeedleClientError(r)) {
      t.fail(`item ${i}: ${r.message}`)
      continue
    }
    t.equal(r.size, bodies[i]!.length, `item ${i}: size`)
    t.equal(sha256(await client.download(r.fid)), sha256(bodies[i]!), `item ${i}: reads back`)
  }
})

t.test('the location cache: hits until locationTtlMs passes on the client clock, then asks the master', async (t) => {
  let nowMs = 1_000_000
  const cached = new NeedleClient({ master: cluster.masterUrl, locationTtlMs: 60_000, now: () => nowMs })
  t.teardown(() => cached.close())
  const data = randomBody(random, 2048)
  const { fid } = await client.upload(data)
  await cached.download(fid)
  t.equal(cached.stats.masterLookups, 1, 'the first read asks the master')
  await cached.download(fid)
  await cached.head(fid)
  await cached.url(fid)
  t.equal(cached.stats.masterLookups, 1, 'the next reads do not')
  t.equal(cached.stats.cacheHits, 3, 'they hit the cache')
  nowMs += 59_999
  await cached.download(fid)
  t.equal(cached.stats.masterLookups, 1, 'still fresh 1 ms before the TTL')
  nowMs += 1
  t.equal(sha256(await cached.download(fid)), sha256(data), 'a read once the entry expired')
  t.equal(cached.stats.masterLookups, 2, 'asked the master again')
  await cached.download(fid)
  t.equal(cached.stats.masterLookups, 2, 'and the refreshed entry serves the next read')

  const lru = new NeedleClient({ master: cluster.masterUrl, locationCacheMax: 1 })
  t.teardown(() => lru.close())
  const a = await client.upload(randomBody(random, 10), { replication: '000' })
  let b = await client.upload(randomBody(random, 10), { replication: '002' })
  for (let i = 0; b.fid.split(',')[0] === a.fid.split(',')[0] && i < 50; i++) b = await client.upload(randomBody(random, 10), { replication: '002' })
  await lru.download(a.fid)
  await lru.download(b.fid)
  await lru.download(a.fid)
  t.equal(lru.stats.masterLookups, 3, 'a cache of one volume forgets the least recently used')
})
