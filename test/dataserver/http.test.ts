/**
 * The data server's HTTP API, in process: every route through fastify's inject() (no sockets).
 * Each test builds its own server over its own temporary directory and closes both.
 */
import { createHash } from 'node:crypto'
import type { Server } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { formatFid } from '../../src/common/fid.js'
import { signToken } from '../../src/common/token.js'
import { createDataServer, type DataServer } from '../../src/dataserver/server.js'
import type { DataServerInput } from '../../src/dataserver/options.js'

/** The structural part of a tap Test these helpers use. */
interface TestLike {
  teardown(fn: () => unknown): void
}

interface InjectOptions {
  readonly method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE'
  readonly url: string
  readonly payload?: Buffer | string
  readonly headers?: Record<string, string>
}

const VID = 3
const COOKIE = 0x637037d6
/** A fixed clock, so that Last-Modified is known in advance. */
const NOW = Date.UTC(2024, 0, 2, 3, 4, 5, 678)
const NOW_HTTP = 'Tue, 02 Jan 2024 03:04:05 GMT'

function fid(key: number, cookie = COOKIE, volumeId = VID): string {
  return formatFid({ volumeId, keyHi: 0, keyLo: key, cookie })
}

/** Deterministic bytes: 0, 1, 2, … wrapping at 256, offset by seed. */
function bytes(length: number, seed = 0): Buffer {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = (i + seed) & 0xff
  return b
}

function md5hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex')
}

interface Part {
  readonly name: string
  readonly filename?: string
  readonly contentType?: string
  readonly data: Buffer
}

/** A multipart/form-data body built by hand, so the test controls every byte. */
function multipart(parts: readonly Part[], boundary = '----needlestoreBoundary7MA4YWxkTrZu0gW'): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = []
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`
    if (p.filename !== undefined) head += `; filename="${p.filename}"`
    head += '\r\n'
    if (p.contentType !== undefined) head += `Content-Type: ${p.contentType}\r\n`
    head += '\r\n'
    chunks.push(Buffer.from(head, 'latin1'), p.data, Buffer.from('\r\n', 'latin1'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'))
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` }
}

async function setup(t: TestLike, input: Partial<DataServerInput> = {}, volumes: readonly number[] = [VID]): Promise<DataServer> {
  const dir = await mkdtemp(join(tmpdir(), 'needlestore-http-'))
  let server: DataServer | undefined
  t.teardown(async () => {
    await server?.close()
    await rm(dir, { recursive: true, force: true })
  })
  server = await createDataServer({ log: () => {}, now: () => NOW, ...input, dir })
  for (const id of volumes) {
    const res = await server.app.inject({
      method: 'POST',
      url: `/admin/assign_volume?volume=${id}&replication=000`,
      headers: input.secret === undefined ? {} : { authorization: `Bearer ${input.secret}` },
    })
    if (res.statusCode !== 201) throw new Error(`assign_volume ${id}: ${res.statusCode} ${res.body}`)
  }
  return server
}

function inject(server: DataServer, opts: InjectOptions) {
  return server.app.inject({ method: opts.method ?? 'GET', url: opts.url, payload: opts.payload, headers: opts.headers })
}

/** Uploads a raw body and checks the 201. */
async function put(t: Tap, server: DataServer, url: string, data: Buffer, headers: Record<string, string> = {}) {
  const res = await inject(server, { method: 'POST', url, payload: data, headers: { 'content-type': 'application/octet-stream', ...headers } })
  t.equal(res.statusCode, 201, `upload ${url}: ${res.body}`)
  return res
}

async function volumeStatus(server: DataServer, id = VID) {
  const res = await inject(server, { url: '/status' })
  const body = res.json() as { volumes: Array<{ id: number; size: number; fileCount: number; deleteCount: number; garbageRatio: number; replication: string; readOnly: boolean }> }
  const v = body.volumes.find((x) => x.id === id)
  if (!v) throw new Error(`volume ${id} is not in /status`)
  return v
}

/** Polls fn until it returns true, or fails after deadlineMs. */
async function waitFor(what: string, fn: () => Promise<boolean>, deadlineMs = 5000): Promise<void> {
  const end = Date.now() + deadlineMs
  for (;;) {
    if (await fn()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

type Tap = Pick<typeof t, 'equal' | 'same' | 'ok' | 'match'>

// -----------------------------------------------------------------------------------------------
// Uploads.

t.test('POST and PUT with a raw body answer 201 {name,size,eTag} and store the bytes', async (t) => {
  const server = await setup(t)
  const a = bytes(300)
  const res = await put(t, server, `/${fid(1)}`, a)
  t.match(res.json(), { name: '', size: 300, eTag: md5hex(a) })
  t.equal(res.headers.etag, `"${md5hex(a)}"`)

  const b = bytes(77, 5)
  const resPut = await inject(server, { method: 'PUT', url: `/${fid(2)}`, payload: b, headers: { 'content-type': 'application/octet-stream' } })
  t.equal(resPut.statusCode, 201)
  t.match(resPut.json(), { name: '', size: 77, eTag: md5hex(b) })

  const getA = await inject(server, { url: `/${fid(1)}` })
  t.equal(getA.statusCode, 200)
  t.same(getA.rawPayload, a)
  const getB = await inject(server, { url: `/${fid(2)}` })
  t.equal(getB.statusCode, 200)
  t.same(getB.rawPayload, b)
  t.equal(getB.headers['content-type'], 'application/octet-stream')

  const empty = await put(t, server, `/${fid(3)}`, Buffer.alloc(0))
  t.match(empty.json(), { size: 0, eTag: md5hex(Buffer.alloc(0)) })
  const getEmpty = await inject(server, { url: `/${fid(3)}` })
  t.equal(getEmpty.statusCode, 200)
  t.equal(getEmpty.rawPayload.length, 0)
})

t.test('a raw upload keeps its Content-Type and a file name from the path', async (t) => {
  const server = await setup(t)
  const data = Buffer.from('{"a":1}')
  await put(t, server, `/${fid(1)}`, data, { 'content-type': 'application/json; charset=utf-8' })
  const get = await inject(server, { url: `/${fid(1)}` })
  t.equal(get.headers['content-type'], 'application/json')

  const res = await put(t, server, `/${VID}/${fid(2).split(',')[1]}/photo.png`, bytes(10))
  t.equal(res.json().name, 'photo.png')
  const get2 = await inject(server, { url: `/${fid(2)}` })
  t.equal(get2.headers['content-type'], 'image/png', 'the stored name gives the type')
  t.match(get2.headers['content-disposition'], /^inline; filename="photo\.png"/)
})

t.test('multipart upload stores the file name and type, served back on GET', async (t) => {
  const server = await setup(t)
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), bytes(500)])
  const { body, contentType } = multipart([{ name: 'file', filename: 'a.png', contentType: 'image/png', data: png }])
  const res = await inject(server, { method: 'POST', url: `/${fid(1)}`, payload: body, headers: { 'content-type': contentType } })
  t.equal(res.statusCode, 201, res.body)
  t.match(res.json(), { name: 'a.png', size: png.length, eTag: md5hex(png) })

  const get = await inject(server, { url: `/${fid(1)}` })
  t.equal(get.statusCode, 200)
  t.same(get.rawPayload, png)
  t.equal(get.headers['content-type'], 'image/png')
  t.equal(get.headers['content-disposition'], `inline; filename="a.png"; filename*=UTF-8''a.png`)
  t.equal(get.headers.etag, `"${md5hex(png)}"`)
})

t.test('a multipart part without a filename is still the file', async (t) => {
  const server = await setup(t)
  const data = bytes(321, 9)
  const { body, contentType } = multipart([
    { name: 'file', data },
    { name: 'other', filename: 'b.txt', contentType: 'text/plain', data: Buffer.from('not the file') },
  ])
  const res = await inject(server, { method: 'PUT', url: `/${fid(1)}`, payload: body, headers: { 'content-type': contentType } })
  t.equal(res.statusCode, 201, res.body)
  t.match(res.json(), { name: '', size: data.length, eTag: md5hex(data) })
  const get = await inject(server, { url: `/${fid(1)}` })
  t.equal(get.statusCode, 200)
  t.same(get.rawPayload, data, 'the first part is stored, not the second')
})

t.test('a malformed multipart body answers 400 NS_ERR_BAD_REQUEST and writes nothing', async (t) => {
  const server = await setup(t)
  const before = await volumeStatus(server)
  const whole = multipart([{ name: 'file', filename: 'a.bin', contentType: 'application/octet-stream', data: bytes(200) }], 'xyzBoundary')
  const cases: Array<[string, string, Buffer | string]> = [
    ['no part', 'multipart/form-data; boundary=xyzBoundary', '--xyzBoundary--\r\n'],
    ['a body cut off before its closing boundary', whole.contentType, whole.body.subarray(0, whole.body.length - 40)],
    ['a Content-Type without a boundary', 'multipart/form-data', whole.body],
  ]
  for (const [what, contentType, payload] of cases) {
    const res = await inject(server, { method: 'POST', url: `/${fid(1)}`, payload, headers: { 'content-type': contentType } })
    t.equal(res.statusCode, 400, `${what}: ${res.body}`)
    t.equal(res.json().code, 'NS_ERR_BAD_REQUEST', `${what}: code`)
  }
  t.equal((await volumeStatus(server)).size, before.size, 'the volume did not grow')
  t.equal((await inject(server, { url: `/${fid(1)}` })).statusCode, 404)
})

// -----------------------------------------------------------------------------------------------
// Path forms.

t.test('the path forms /<fid>, /<vid>/<fid>, extensions, names and _d suffixes name the same files', async (t) => {
  const server = await setup(t)
  const one = bytes(40, 1)
  const two = bytes(41, 2)
  await put(t, server, `/${fid(1)}`, one)
  // `_1` means key + 1: this stores key 2.
  await put(t, server, `/${fid(1)}_1`, two)
  const keyCookie1 = fid(1).split(',')[1]!

  const forms: Array<[string, Buffer]> = [
    [`/${fid(1)}`, one],
    [`/${VID}/${keyCookie1}`, one],
    [`/${fid(1)}.jpg`, one],
    [`/${VID}/${keyCookie1}.jpg`, one],
    [`/${VID}/${keyCookie1}/name.jpg`, one],
    [`/${fid(1)}/name.jpg`, one],
    [`/${fid(1)}_0`, one],
    [`/${fid(2)}`, two],
    [`/${fid(1)}_1`, two],
    [`/${VID}/${keyCookie1}_1`, two],
    [`/${fid(1)}_1.jpg`, two],
    [`/${fid(2)}?download=1`, two],
  ]
  for (const [url, want] of forms) {
    const res = await inject(server, { url })
    t.equal(res.statusCode, 200, `GET ${url}`)
    t.same(res.rawPayload, want, `GET ${url} bytes`)
  }
  const ext = await inject(server, { url: `/${fid(1)}.jpg` })
  t.equal(ext.headers['content-type'], 'image/jpeg', 'the extension gives the type of a file stored without one')
  const named = await inject(server, { url: `/${VID}/${keyCookie1}/name.jpg` })
  t.equal(named.headers['content-type'], 'image/jpeg')
  t.match(named.headers['content-disposition'], /filename="name\.jpg"/)
  const plain = await inject(server, { url: `/${fid(1)}` })
  t.equal(plain.headers['content-disposition'], undefined, 'no name, no active content: no Content-Disposition')

  const del = await inject(server, { method: 'DELETE', url: `/${VID}/${keyCookie1}_1` })
  t.equal(del.statusCode, 202)
  t.same(del.json(), { size: two.length })
  t.equal((await inject(server, { url: `/${fid(2)}` })).statusCode, 404)
  t.equal((await inject(server, { url: `/${fid(1)}` })).statusCode, 200, 'key 1 is untouched')
})

// -----------------------------------------------------------------------------------------------
// Reads: headers, HEAD, active content, ranges, conditional requests.

t.test('GET and HEAD carry the caching and safety headers; HEAD has no body', async (t) => {
  const server = await setup(t)
  const data = bytes(1000, 3)
  await put(t, server, `/${fid(1)}`, data, { 'content-type': 'image/webp' })
  const get = await inject(server, { url: `/${fid(1)}` })
  t.equal(get.statusCode, 200)
  t.equal(get.headers['content-type'], 'image/webp')
  t.equal(get.headers.etag, `"${md5hex(data)}"`)
  t.equal(get.headers['last-modified'], NOW_HTTP)
  t.equal(get.headers['accept-ranges'], 'bytes')
  t.match(get.headers['cache-control'], /immutable/)
  t.match(get.headers['cache-control'], /max-age=\d{6,}/)
  t.equal(get.headers['x-content-type-options'], 'nosniff')
  t.equal(get.headers['content-length'], '1000')
  t.same(get.rawPayload, data)

  const head = await inject(server, { method: 'HEAD', url: `/${fid(1)}` })
  t.equal(head.statusCode, 200)
  t.equal(head.rawPayload.length, 0, 'HEAD has no body')
  t.equal(head.headers['content-length'], '1000', 'HEAD has the same Content-Length')
  for (const h of ['content-type', 'etag', 'last-modified', 'accept-ranges', 'cache-control', 'x-content-type-options']) {
    t.equal(head.headers[h], get.headers[h], `HEAD ${h}`)
  }
  const headMissing = await inject(server, { method: 'HEAD', url: `/${fid(99)}` })
  t.equal(headMissing.statusCode, 404)
})

t.test('HTML and SVG uploads are served as attachments, never inline', async (t) => {
  const server = await setup(t)
  await put(t, server, `/${fid(1)}`, Buffer.from('<script>alert(1)</script>'), { 'content-type': 'text/html' })
  const svg = multipart([{ name: 'file', filename: 'x.svg', contentType: 'image/svg+xml', data: Buffer.from('<svg onload="alert(1)"/>') }])
  const res = await inject(server, { method: 'POST', url: `/${fid(2)}`, payload: svg.body, headers: { 'content-type': svg.contentType } })
  t.equal(res.statusCode, 201)
  // A file stored without a type but named .html in the path is active content too.
  await put(t, server, `/${fid(3)}/page.html`, Buffer.from('<h1>hi</h1>'), { 'content-type': 'application/octet-stream' })

  const html = await inject(server, { url: `/${fid(1)}` })
  t.equal(html.headers['content-type'], 'text/html')
  t.match(html.headers['content-disposition'], /^attachment(;|$)/)
  t.equal(html.headers['x-content-type-options'], 'nosniff')
  const svgGet = await inject(server, { url: `/${fid(2)}` })
  t.equal(svgGet.headers['content-type'], 'image/svg+xml')
  t.match(svgGet.headers['content-disposition'], /^attachment; filename="x\.svg"/)
  const page = await inject(server, { url: `/${fid(3)}` })
  t.match(page.headers['content-disposition'], /^attachment; filename="page\.html"/)
  const svgHead = await inject(server, { method: 'HEAD', url: `/${fid(2)}` })
  t.match(svgHead.headers['content-disposition'], /^attachment/)
})

t.test('Range requests answer 206 with exact bytes, or 416 with the size', async (t) => {
  const server = await setup(t)
  const data = bytes(100, 17)
  await put(t, server, `/${fid(1)}`, data)
  const cases: Array<[string, number, number]> = [
    ['bytes=0-9', 0, 9],
    ['bytes=-5', 95, 99],
    ['bytes=10-', 10, 99],
    ['bytes=90-1000', 90, 99],
    ['bytes=99-99', 99, 99],
  ]
  for (const [range, start, end] of cases) {
    const res = await inject(server, { url: `/${fid(1)}`, headers: { range } })
    t.equal(res.statusCode, 206, range)
    t.equal(res.headers['content-range'], `bytes ${start}-${end}/100`, `${range} Content-Range`)
    t.equal(res.headers['content-length'], String(end - start + 1), `${range} Content-Length`)
    t.same(res.rawPayload, data.subarray(start, end + 1), `${range} bytes`)
  }
  for (const range of ['bytes=100-', 'bytes=200-300']) {
    const res = await inject(server, { url: `/${fid(1)}`, headers: { range } })
    t.equal(res.statusCode, 416, range)
    t.equal(res.headers['content-range'], 'bytes */100', `${range} Content-Range`)
    t.equal(res.json().code, 'NS_ERR_RANGE_NOT_SATISFIABLE')
  }
  const stale = await inject(server, { url: `/${fid(1)}`, headers: { range: 'bytes=0-9', 'if-range': '"not-the-etag"' } })
  t.equal(stale.statusCode, 200, 'If-Range with another ETag answers the whole file')
  t.equal(stale.rawPayload.length, 100)
})

t.test('If-None-Match and If-Modified-Since answer 304 without a body', async (t) => {
  const server = await setup(t)
  const data = bytes(64)
  await put(t, server, `/${fid(1)}`, data)
  const etag = `"${md5hex(data)}"`

  const inm = await inject(server, { url: `/${fid(1)}`, headers: { 'if-none-match': etag } })
  t.equal(inm.statusCode, 304)
  t.equal(inm.rawPayload.length, 0)
  t.equal(inm.headers.etag, etag)
  const inmList = await inject(server, { url: `/${fid(1)}`, headers: { 'if-none-match': `"other", W/${etag}` } })
  t.equal(inmList.statusCode, 304, 'a list and a weak tag match too')
  const inmOther = await inject(server, { url: `/${fid(1)}`, headers: { 'if-none-match': '"other"' } })
  t.equal(inmOther.statusCode, 200)
  t.same(inmOther.rawPayload, data)

  const ims = await inject(server, { url: `/${fid(1)}`, headers: { 'if-modified-since': NOW_HTTP } })
  t.equal(ims.statusCode, 304)
  t.equal(ims.rawPayload.length, 0)
  const earlier = new Date(NOW - 3_600_000).toUTCString()
  const imsEarlier = await inject(server, { url: `/${fid(1)}`, headers: { 'if-modified-since': earlier } })
  t.equal(imsEarlier.statusCode, 200)
  t.same(imsEarlier.rawPayload, data)
  const both = await inject(server, { url: `/${fid(1)}`, headers: { 'if-none-match': '"other"', 'if-modified-since': NOW_HTTP } })
  t.equal(both.statusCode, 200, 'If-None-Match wins over If-Modified-Since')
})

// -----------------------------------------------------------------------------------------------
// Errors.

t.test('a wrong cookie answers exactly like a missing file', async (t) => {
  const server = await setup(t)
  await put(t, server, `/${fid(1)}`, bytes(10))
  const wrong = await inject(server, { url: `/${fid(1, COOKIE ^ 1)}` })
  const missing = await inject(server, { url: `/${fid(2)}` })
  t.equal(wrong.statusCode, 404)
  t.equal(missing.statusCode, 404)
  t.equal(wrong.json().code, 'NS_ERR_NOT_FOUND')
  t.same(wrong.json(), missing.json(), 'same body')
  t.equal(wrong.headers['content-type'], missing.headers['content-type'])
  const wrongHead = await inject(server, { method: 'HEAD', url: `/${fid(1, COOKIE ^ 1)}` })
  t.equal(wrongHead.statusCode, 404)
})

t.test('malformed file ids answer 400 NS_ERR_BAD_FID', async (t) => {
  const server = await setup(t)
  for (const path of ['/abc', '/3,zz', '/3,0163', '/0,01637037d6', '/3,01637037zz', '/3,01637037d6_x', '/a/b/c/d', '/99999999999,01637037d6']) {
    for (const method of ['GET', 'POST', 'DELETE'] as const) {
      const res = await inject(server, { method, url: path, payload: method === 'POST' ? Buffer.from('x') : undefined, headers: method === 'POST' ? { 'content-type': 'application/octet-stream' } : {} })
      t.equal(res.statusCode, 400, `${method} ${path}`)
      t.equal(res.json().code, 'NS_ERR_BAD_FID', `${method} ${path} code`)
    }
  }
})

t.test('an unknown volume answers 404 NS_ERR_VOLUME_NOT_FOUND', async (t) => {
  const server = await setup(t)
  for (const method of ['GET', 'HEAD', 'POST', 'DELETE'] as const) {
    const res = await inject(server, { method, url: `/${fid(1, COOKIE, 77)}`, payload: method === 'POST' ? Buffer.from('x') : undefined, headers: method === 'POST' ? { 'content-type': 'application/octet-stream' } : {} })
    t.equal(res.statusCode, 404, method)
    if (method !== 'HEAD') t.equal(res.json().code, 'NS_ERR_VOLUME_NOT_FOUND', `${method} code`)
  }
})

t.test('a body over fileBytesMax answers 413 and writes nothing, raw or multipart', async (t) => {
  const server = await setup(t, { fileBytesMax: 1024 })
  const before = await volumeStatus(server)

  const raw = await inject(server, { method: 'POST', url: `/${fid(1)}`, payload: bytes(1025), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(raw.statusCode, 413)
  t.equal(raw.json().code, 'NS_ERR_BODY_TOO_LARGE')
  const rawPut = await inject(server, { method: 'PUT', url: `/${fid(1)}`, payload: bytes(5000), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(rawPut.statusCode, 413)
  t.equal(rawPut.json().code, 'NS_ERR_BODY_TOO_LARGE')

  const mp = multipart([{ name: 'file', filename: 'big.bin', contentType: 'application/octet-stream', data: bytes(1025) }])
  const multi = await inject(server, { method: 'POST', url: `/${fid(2)}`, payload: mp.body, headers: { 'content-type': mp.contentType } })
  t.equal(multi.statusCode, 413, multi.body)
  t.equal(multi.json().code, 'NS_ERR_BODY_TOO_LARGE')
  const mpNoName = multipart([{ name: 'file', data: bytes(4096) }])
  const multi2 = await inject(server, { method: 'POST', url: `/${fid(3)}`, payload: mpNoName.body, headers: { 'content-type': mpNoName.contentType } })
  t.equal(multi2.statusCode, 413, multi2.body)
  t.equal(multi2.json().code, 'NS_ERR_BODY_TOO_LARGE')

  const after = await volumeStatus(server)
  t.equal(after.size, before.size, 'the volume did not grow')
  t.equal(after.fileCount, 0)
  for (const key of [1, 2, 3]) t.equal((await inject(server, { url: `/${fid(key)}` })).statusCode, 404, `key ${key} was not stored`)

  // Exactly the limit is accepted, raw and multipart (the multipart body itself is larger).
  await put(t, server, `/${fid(4)}`, bytes(1024))
  const exact = multipart([{ name: 'file', filename: 'exact.bin', contentType: 'application/octet-stream', data: bytes(1024, 1) }])
  const exactRes = await inject(server, { method: 'POST', url: `/${fid(5)}`, payload: exact.body, headers: { 'content-type': exact.contentType } })
  t.equal(exactRes.statusCode, 201, exactRes.body)
  t.same((await inject(server, { url: `/${fid(5)}` })).rawPayload, bytes(1024, 1))
})

t.test('overwriting needs the same cookie: another cookie answers 409 NS_ERR_COOKIE_MISMATCH', async (t) => {
  const server = await setup(t)
  const first = bytes(200, 1)
  await put(t, server, `/${fid(7)}`, first)
  const sizeBefore = (await volumeStatus(server)).size

  const other = await inject(server, { method: 'POST', url: `/${fid(7, 0x11223344)}`, payload: bytes(10), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(other.statusCode, 409)
  t.equal(other.json().code, 'NS_ERR_COOKIE_MISMATCH')
  t.equal((await volumeStatus(server)).size, sizeBefore, 'nothing written')
  t.same((await inject(server, { url: `/${fid(7)}` })).rawPayload, first, 'the file is unchanged')

  const second = bytes(300, 2)
  await put(t, server, `/${fid(7)}`, second)
  const get = await inject(server, { url: `/${fid(7)}` })
  t.same(get.rawPayload, second, 'the newest needle wins')
  const status = await volumeStatus(server)
  t.equal(status.fileCount, 1)
  t.ok(status.garbageRatio > 0, 'the replaced needle is garbage')
})

t.test('DELETE answers 202 {size}, is idempotent, and the file is gone', async (t) => {
  const server = await setup(t)
  await put(t, server, `/${fid(8)}`, bytes(100))
  const wrongCookie = await inject(server, { method: 'DELETE', url: `/${fid(8, COOKIE ^ 0xff)}` })
  t.equal(wrongCookie.statusCode, 202)
  t.same(wrongCookie.json(), { size: 0 }, 'a wrong cookie deletes nothing and answers like a missing file')
  t.equal((await inject(server, { url: `/${fid(8)}` })).statusCode, 200, 'still there')

  const del = await inject(server, { method: 'DELETE', url: `/${fid(8)}` })
  t.equal(del.statusCode, 202)
  t.same(del.json(), { size: 100 })
  const again = await inject(server, { method: 'DELETE', url: `/${fid(8)}` })
  t.equal(again.statusCode, 202)
  t.same(again.json(), { size: 100 }, 'a second delete answers the same size')
  const get = await inject(server, { url: `/${fid(8)}` })
  t.equal(get.statusCode, 404)
  t.equal(get.json().code, 'NS_ERR_NOT_FOUND')

  const never = await inject(server, { method: 'DELETE', url: `/${fid(9)}` })
  t.equal(never.statusCode, 202)
  t.same(never.json(), { size: 0 })
  const status = await volumeStatus(server)
  t.equal(status.fileCount, 0)
  t.equal(status.deleteCount, 1)
})

t.test('a Content-MD5 that does not match the body answers 400 and writes nothing', async (t) => {
  const server = await setup(t)
  const data = bytes(50)
  const before = (await volumeStatus(server)).size
  const bad = await inject(server, {
    method: 'POST',
    url: `/${fid(1)}`,
    payload: data,
    headers: { 'content-type': 'application/octet-stream', 'content-md5': createHash('md5').update('other').digest('base64') },
  })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().code, 'NS_ERR_BAD_REQUEST')
  t.equal((await volumeStatus(server)).size, before)
  t.equal((await inject(server, { url: `/${fid(1)}` })).statusCode, 404)
  await put(t, server, `/${fid(1)}`, data, { 'content-md5': createHash('md5').update(data).digest('base64') })
})

// -----------------------------------------------------------------------------------------------
// Status and metrics.

t.test('GET /status lists each volume with counts, size and garbage ratio', async (t) => {
  const server = await setup(t, {}, [VID, 4])
  const empty = await volumeStatus(server)
  t.equal(empty.fileCount, 0)
  t.equal(empty.deleteCount, 0)
  t.equal(empty.garbageRatio, 0)
  await put(t, server, `/${fid(1)}`, bytes(1000))
  await put(t, server, `/${fid(2)}`, bytes(1000))
  await inject(server, { method: 'DELETE', url: `/${fid(1)}` })

  const res = await inject(server, { url: '/status' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.match(body, { Version: String, dataCenter: 'dc1', rack: 'rack1', volumesMax: Number })
  t.same(body.volumes.map((v: { id: number }) => v.id), [VID, 4])
  const v = body.volumes[0]
  t.match(v, { id: VID, replication: '000', readOnly: false, fileCount: 1, deleteCount: 1, size: Number, garbageRatio: Number })
  t.ok(v.size > empty.size + 2000, `size ${v.size} counts both files`)
  t.ok(v.garbageRatio > 0.4 && v.garbageRatio < 0.7, `garbageRatio ${v.garbageRatio} is about one half`)
  t.match(body.volumes[1], { id: 4, fileCount: 0, deleteCount: 0, garbageRatio: 0 })
  t.match(body.Volumes[0], { Id: VID, Size: v.size, DeleteCount: 1 })
})

t.test('GET /metrics counts requests by op and status, and needles', async (t) => {
  const server = await setup(t)
  await put(t, server, `/${fid(1)}`, bytes(10))
  await put(t, server, `/${fid(2)}`, bytes(10))
  await inject(server, { url: `/${fid(1)}` })
  await inject(server, { url: `/${fid(3)}` })
  await inject(server, { method: 'DELETE', url: `/${fid(2)}` })

  let text = ''
  await waitFor('the delete to be counted', async () => {
    const res = await inject(server, { url: '/metrics' })
    t.equal(res.statusCode, 200)
    text = res.body
    return /needlestore_http_requests_total\{op="delete",status="202"\} 1\b/.test(text)
  })
  t.match(text, /# TYPE needlestore_http_requests_total counter/)
  t.match(text, /needlestore_http_requests_total\{op="write",status="201"\} 2\b/)
  t.match(text, /needlestore_http_requests_total\{op="read",status="200"\} 1\b/)
  t.match(text, /needlestore_http_requests_total\{op="read",status="404"\} 1\b/)
  t.match(text, /needlestore_needles\{state="live"\} 1\b/)
  t.match(text, /needlestore_needles\{state="deleted"\} 1\b/)
  t.match(text, /needlestore_http_request_duration_seconds_bucket\{/)
})

// -----------------------------------------------------------------------------------------------
// Admin routes.

t.test('POST /admin/assign_volume creates a volume; a duplicate or a bad parameter is refused', async (t) => {
  const server = await setup(t, {}, [])
  const res = await inject(server, { method: 'POST', url: '/admin/assign_volume?volume=5&replication=002' })
  t.equal(res.statusCode, 201)
  t.match(res.json(), { volume: 5, replication: '002' })
  t.match(await volumeStatus(server, 5), { id: 5, replication: '002', fileCount: 0 })
  // Three copies are asked for and this lone server knows no others: it takes no writes.
  const unplaced = await inject(server, { method: 'POST', url: `/${fid(1, COOKIE, 5)}`, payload: bytes(3), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(unplaced.statusCode, 503)
  t.equal(unplaced.json().code, 'NS_ERR_VOLUME_UNAVAILABLE')
  await inject(server, { method: 'POST', url: '/admin/assign_volume?volume=7&replication=000' })
  await put(t, server, `/${fid(1, COOKIE, 7)}`, bytes(3))

  const dup = await inject(server, { method: 'POST', url: '/admin/assign_volume?volume=5&replication=002' })
  t.equal(dup.statusCode, 409)
  t.equal(dup.json().code, 'NS_ERR_VOLUME_EXISTS')
  t.equal((await volumeStatus(server, 5)).replication, '002', 'the existing volume is untouched')

  for (const query of ['volume=6&replication=2', 'volume=6&replication=abc', 'volume=6&replication=0001', 'volume=0', 'volume=x', 'replication=000']) {
    const bad = await inject(server, { method: 'POST', url: `/admin/assign_volume?${query}` })
    t.equal(bad.statusCode, 400, query)
  }
  const status = (await inject(server, { url: '/status' })).json()
  t.same(status.volumes.map((v: { id: number }) => v.id), [5, 7], 'no volume was created by the bad requests')
})

t.test('with a secret, admin routes need Authorization: Bearer <secret>', async (t) => {
  const secret = 's3cret'
  const server = await setup(t, { secret })
  const routes: Array<[InjectOptions['method'], string]> = [
    ['POST', '/admin/assign_volume?volume=5&replication=000'],
    ['GET', '/admin/volumes'],
    ['POST', `/admin/volume/readonly?volume=${VID}`],
  ]
  for (const [method, url] of routes) {
    const refused: Array<Record<string, string>> = [{}, { authorization: 'Bearer wrong' }, { authorization: 'Bearer ' }, { authorization: secret }, { authorization: `Basic ${secret}` }]
    for (const headers of refused) {
      const res = await inject(server, { method, url, headers })
      t.equal(res.statusCode, 401, `${method} ${url} ${JSON.stringify(headers)}`)
      t.equal(res.json().code, 'NS_ERR_UNAUTHORIZED')
    }
  }
  t.equal((await volumeStatus(server)).readOnly, false, 'the refused readonly call changed nothing')
  const listed = (await inject(server, { url: '/status' })).json()
  t.same(listed.volumes.map((v: { id: number }) => v.id), [VID], 'the refused assign created nothing')

  const auth = { authorization: `Bearer ${secret}` }
  const created = await inject(server, { method: 'POST', url: '/admin/assign_volume?volume=5&replication=000', headers: auth })
  t.equal(created.statusCode, 201)
  const volumes = await inject(server, { url: '/admin/volumes', headers: auth })
  t.equal(volumes.statusCode, 200)
  t.same(volumes.json().volumes.map((v: { id: number }) => v.id), [VID, 5])
  // File routes are not admin routes: with a secret, writes need a token the master signed.
  const unsigned = await inject(server, { method: 'POST', url: `/${fid(1, COOKIE, 5)}`, payload: bytes(5), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(unsigned.statusCode, 401)
  t.equal(unsigned.json().code, 'NS_ERR_UNAUTHORIZED')
  const token = signToken(secret, fid(1, COOKIE, 5), 60)
  const signed = await inject(server, { method: 'POST', url: `/${fid(1, COOKIE, 5)}`, payload: bytes(5), headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${token}` } })
  t.equal(signed.statusCode, 201)
})

t.test('a read-only volume refuses writes with 409 and still serves reads', async (t) => {
  const server = await setup(t)
  const data = bytes(123)
  await put(t, server, `/${fid(1)}`, data)
  const ro = await inject(server, { method: 'POST', url: `/admin/volume/readonly?volume=${VID}` })
  t.equal(ro.statusCode, 200)
  t.match(ro.json(), { volume: VID, readOnly: true })
  t.equal((await volumeStatus(server)).readOnly, true)
  const size = (await volumeStatus(server)).size

  const write = await inject(server, { method: 'POST', url: `/${fid(2)}`, payload: bytes(5), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(write.statusCode, 409)
  t.equal(write.json().code, 'NS_ERR_VOLUME_READ_ONLY')
  const overwrite = await inject(server, { method: 'PUT', url: `/${fid(1)}`, payload: bytes(5), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(overwrite.statusCode, 409)
  t.equal(overwrite.json().code, 'NS_ERR_VOLUME_READ_ONLY')
  const del = await inject(server, { method: 'DELETE', url: `/${fid(1)}` })
  t.equal(del.statusCode, 409)
  t.equal(del.json().code, 'NS_ERR_VOLUME_READ_ONLY')
  t.equal((await volumeStatus(server)).size, size, 'nothing appended')

  const get = await inject(server, { url: `/${fid(1)}` })
  t.equal(get.statusCode, 200)
  t.same(get.rawPayload, data)
  t.equal((await inject(server, { method: 'HEAD', url: `/${fid(1)}` })).statusCode, 200)

  const rw = await inject(server, { method: 'POST', url: `/admin/volume/readonly?volume=${VID}&readOnly=false` })
  t.match(rw.json(), { volume: VID, readOnly: false })
  await put(t, server, `/${fid(2)}`, bytes(5))
  const unknown = await inject(server, { method: 'POST', url: '/admin/volume/readonly?volume=77' })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.json().code, 'NS_ERR_VOLUME_NOT_FOUND')
})

t.test('the node http server carries the configured limits and timeouts', async (t) => {
  const server = await setup(t, { headerBytesMax: 8192, headersTimeoutMs: 1500, requestTimeoutMs: 2500, keepAliveTimeoutMs: 7000 }, [])
  // maxHeaderSize and connectionsCheckingInterval are set on every http.Server but missing from
  // @types/node 20.
  const http = server.app.server as Server & { maxHeaderSize?: number; connectionsCheckingInterval?: number }
  t.equal(http.maxHeaderSize, 8192, 'maxHeaderSize')
  t.equal(http.headersTimeout, 1500, 'headersTimeout')
  t.equal(http.requestTimeout, 2500, 'requestTimeout')
  t.equal(http.keepAliveTimeout, 7000, 'keepAliveTimeout (keepAliveTimeoutMs)')
  // Node enforces headersTimeout and requestTimeout only when it sweeps its connections, every
  // connectionsCheckingInterval (30 s by default); a slower sweep makes the timeouts meaningless.
  t.ok(
    (http.connectionsCheckingInterval ?? Infinity) <= 1500,
    `connectionsCheckingInterval ${http.connectionsCheckingInterval} ms is at most the shortest timeout (1500 ms)`,
  )
})

t.test('a raw body labelled as a form (curl --data-binary) stores no content type', async (t) => {
  const server = await setup(t)
  await put(t, server, '/3,0f1234abcd', bytes(500), { 'content-type': 'application/x-www-form-urlencoded' })
  const res = await inject(server, { url: '/3,0f1234abcd.png' })
  t.equal(res.headers['content-type'], 'image/png', 'the type comes from the extension asked for, not the form label')
})
