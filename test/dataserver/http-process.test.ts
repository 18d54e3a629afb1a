/**
 * The data server as a real process over real sockets: a round trip through the CLI, the limits
 * that only a socket can show (header size, request and header timeouts), a clean SIGTERM and a
 * restart on the same directory.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t from 'tap'
import { Agent, request, type Dispatcher } from 'undici'
import { formatFid } from '../../src/common/fid.js'
import { createVolume, startDataServerProcess, type DataServerProcess, type StartOptions } from '../helpers/dataserver-process.js'
import { tempDir } from '../helpers/volume.js'

interface TestLike {
  teardown(fn: () => unknown): void
}

// Each test spawns one or two processes; the timeout test waits up to 5 s twice.
t.setTimeout(60_000)

const VID = 1
const COOKIE = 0x5eed1234

function fid(key: number, cookie = COOKIE): string {
  return formatFid({ volumeId: VID, keyHi: 0, keyLo: key, cookie })
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** An undici agent of the test's own, closed (and its sockets destroyed) in teardown. */
function agent(t: TestLike): Dispatcher {
  const a = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000, connections: 4 })
  t.teardown(() => a.destroy())
  return a
}

/**
 * Starts a server process whose teardown kills it if the test has not stopped it. tap runs
 * teardowns last in, first out, so the process is gone before its directory is removed.
 */
async function startIn(t: TestLike, dir: string, opts?: StartOptions): Promise<DataServerProcess> {
  const proc = await startDataServerProcess(dir, opts)
  t.teardown(async () => {
    if (!proc.exited()) await proc.kill9()
  })
  return proc
}

async function get(dispatcher: Dispatcher, url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { dispatcher, headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

async function upload(dispatcher: Dispatcher, url: string, body: Buffer | Readable, headers: Record<string, string> = {}) {
  const res = await request(url, { dispatcher, method: 'POST', body, headers: { 'content-type': 'application/octet-stream', ...headers } })
  const text = await res.body.text()
  return { status: res.statusCode, text, json: () => JSON.parse(text) as Record<string, unknown> }
}

/**
 * Sends raw bytes on a new socket and collects what comes back until the server closes the
 * connection or deadlineMs passes; the socket is destroyed either way.
 */
function rawExchange(url: string, payload: string | Buffer, deadlineMs: number): Promise<{ closed: boolean; elapsedMs: number; response: string }> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const started = Date.now()
    let response = ''
    let settled = false
    const socket: Socket = connect({ host: hostname, port: Number(port) }, () => socket.write(payload))
    const finish = (closed: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ closed, elapsedMs: Date.now() - started, response })
    }
    const timer = setTimeout(() => finish(false), deadlineMs)
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      response += chunk
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset is the server cutting the connection; anything else is a failure of the test.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true)
      else if (!settled) {
        settled = true
        clearTimeout(timer)
        reject(err)
      }
    })
  })
}

t.test('upload, download and delete through a spawned data server', async (t) => {
  const dir = await tempDir(t)
  const proc = await startIn(t, dir)
  const d = agent(t)
  t.match(proc.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  await createVolume(proc.url, VID)

  const data = randomBytes(20_000)
  const up = await upload(d, `${proc.url}/${fid(1)}`, data)
  t.equal(up.status, 201, up.text)
  t.match(up.json(), { size: data.length, eTag: createHash('md5').update(data).digest('hex') })

  const down = await get(d, `${proc.url}/${fid(1)}`)
  t.equal(down.status, 200)
  t.equal(sha256(down.body), sha256(data))
  t.equal(down.headers['content-length'], String(data.length))
  t.equal(down.headers['x-content-type-options'], 'nosniff')
  const part = await get(d, `${proc.url}/${fid(1)}`, { range: 'bytes=100-199' })
  t.equal(part.status, 206)
  t.same(part.body, data.subarray(100, 200))

  // A streamed (chunked) upload of a whole file.
  const streamed = randomBytes(70_000)
  const up2 = await upload(d, `${proc.url}/${fid(2)}`, Readable.from([streamed.subarray(0, 30_000), streamed.subarray(30_000)]))
  t.equal(up2.status, 201, up2.text)
  t.equal(sha256((await get(d, `${proc.url}/${fid(2)}`)).body), sha256(streamed))

  const del = await request(`${proc.url}/${fid(1)}`, { dispatcher: d, method: 'DELETE' })
  t.equal(del.statusCode, 202)
  t.same(await del.body.json(), { size: data.length })
  t.equal((await get(d, `${proc.url}/${fid(1)}`)).status, 404)
  t.equal((await get(d, `${proc.url}/${fid(2)}`)).status, 200)

  const status = JSON.parse((await get(d, `${proc.url}/status`)).body.toString())
  t.match(status.volumes[0], { id: VID, fileCount: 1, deleteCount: 1 })
  t.match(status.url, proc.url)

  const stopped = await proc.stop()
  t.same(stopped, { code: 0, signal: null })
})

t.test('a 64 KiB request header answers 431 and stores nothing', async (t) => {
  const dir = await tempDir(t)
  const proc = await startIn(t, dir)
  const d = agent(t)
  await createVolume(proc.url, VID)

  const res = await request(`${proc.url}/${fid(1)}`, {
    dispatcher: d,
    method: 'POST',
    body: Buffer.from('hello'),
    headers: { 'content-type': 'application/octet-stream', 'x-padding': 'a'.repeat(64 * 1024) },
  })
  t.equal(res.statusCode, 431)
  await res.body.dump()
  t.equal((await get(d, `${proc.url}/${fid(1)}`)).status, 404, 'nothing stored')
  const ok = await upload(d, `${proc.url}/${fid(1)}`, Buffer.from('hello'), { 'x-padding': 'a'.repeat(4 * 1024) })
  t.equal(ok.status, 201, 'a request under the limit is served')
  await proc.stop()
})

t.test('a chunked body over --file-bytes-max answers 413 and stores nothing', async (t) => {
  const dir = await tempDir(t)
  const proc = await startIn(t, dir, { args: ['--file-bytes-max', '64KiB'] })
  const d = agent(t)
  await createVolume(proc.url, VID)
  const chunks = Array.from({ length: 10 }, () => randomBytes(10_000))
  const res = await upload(d, `${proc.url}/${fid(1)}`, Readable.from(chunks))
  t.equal(res.status, 413, res.text)
  t.equal(res.json().code, 'NS_ERR_BODY_TOO_LARGE')
  t.equal((await get(d, `${proc.url}/${fid(1)}`)).status, 404, 'nothing stored')
  const status = JSON.parse((await get(d, `${proc.url}/status`)).body.toString())
  t.equal(status.volumes[0].fileCount, 0)
  await proc.stop()
})

t.test('a request whose body never completes is cut off by the request timeout', async (t) => {
  const dir = await tempDir(t)
  const proc = await startIn(t, dir, { args: ['--request-timeout-ms', '1000', '--headers-timeout-ms', '500'] })
  const d = agent(t)
  await createVolume(proc.url, VID)
  const sizeBefore = JSON.parse((await get(d, `${proc.url}/status`)).body.toString()).volumes[0].size as number

  const host = new URL(proc.url).host
  const head = `POST /${fid(1)} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n`
  // The server must give up on the request within a few seconds of the 1 s timeout.
  const slowBody = await rawExchange(proc.url, head + 'x'.repeat(100), 5000)
  t.ok(
    slowBody.closed || /^HTTP\/1\.1 408 /.test(slowBody.response),
    `the server answered 408 or closed the connection (after ${slowBody.elapsedMs} ms; response ${JSON.stringify(slowBody.response.slice(0, 60))})`,
  )
  t.ok(slowBody.elapsedMs >= 900, `not before the timeout (${slowBody.elapsedMs} ms)`)
  if (slowBody.response !== '') t.match(slowBody.response, /^HTTP\/1\.1 408 /, 'an answer, if any, is 408')

  const slowHeaders = await rawExchange(proc.url, `GET /status HTTP/1.1\r\nHost: ${host}\r\nX-Slow: `, 5000)
  t.ok(slowHeaders.closed, `headers that never end are cut off too (after ${slowHeaders.elapsedMs} ms)`)

  t.equal((await get(d, `${proc.url}/${fid(1)}`)).status, 404, 'nothing stored')
  const status = JSON.parse((await get(d, `${proc.url}/status`)).body.toString())
  t.equal(status.volumes[0].size, sizeBefore, 'the volume did not grow')
  await proc.stop()
})

t.test('SIGTERM exits 0 and releases the lock; a restart serves the same files', async (t) => {
  const dir = await tempDir(t)
  const first = await startIn(t, dir)
  const d = agent(t)
  await createVolume(first.url, VID)
  t.equal((await readFile(join(dir, 'LOCK'), 'utf8')).trim(), String(first.pid), 'the LOCK names the owner')

  // A second process on the same directory is refused while the first one lives.
  const intruder = startDataServerProcess(dir).then(async (p) => {
    await p.kill9()
    throw new Error('a second process started on a locked directory')
  })
  await t.rejects(intruder, /in use by process/)

  const files = new Map<string, Buffer>()
  for (let key = 1; key <= 20; key++) {
    const data = randomBytes(1 + ((key * 7919) % 30_000))
    const res = await upload(d, `${first.url}/${fid(key)}`, data)
    t.equal(res.status, 201)
    files.set(fid(key), data)
  }
  const delRes = await request(`${first.url}/${fid(20)}`, { dispatcher: d, method: 'DELETE' })
  t.equal(delRes.statusCode, 202)
  await delRes.body.dump()
  files.delete(fid(20))

  const exit = await first.stop()
  t.same(exit, { code: 0, signal: null }, 'SIGTERM exits with code 0')
  t.notOk(existsSync(join(dir, 'LOCK')), 'the LOCK is released')

  const second = await startIn(t, dir)
  t.not(second.url, '', 'restarted')
  for (const [id, data] of files) {
    const res = await get(d, `${second.url}/${id}`)
    t.equal(res.status, 200, `${id} after restart`)
    t.equal(sha256(res.body), sha256(data), `${id} bytes after restart`)
  }
  t.equal((await get(d, `${second.url}/${fid(20)}`)).status, 404, 'the deleted file stays deleted')
  const status = JSON.parse((await get(d, `${second.url}/status`)).body.toString())
  t.match(status.volumes[0], { id: VID, fileCount: 19, deleteCount: 1 })
  t.same(await second.stop(), { code: 0, signal: null })
})
