/**
 * A plain GET or HEAD of a small file is answered by node's http server directly (serveFast);
 * every other request takes the fastify route. Both must answer alike: same status, headers and
 * bytes. A large needle (over --sync-read-bytes-max) and a conditional request take the fastify
 * route, so comparing them against a plain GET compares the two paths.
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { request } from 'undici'
import { createVolume, startDataServerProcess } from '../helpers/dataserver-process.js'
import { tempDir } from '../helpers/volume.js'

/** Headers that differ between any two answers (time of day, connection handling). */
const VOLATILE = new Set(['date', 'connection', 'keep-alive'])

function stable(headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !VOLATILE.has(k)).sort(([a], [b]) => a.localeCompare(b)))
}

t.test('the fast path and the fastify route answer alike', async (t) => {
  const dir = await tempDir(t)
  // Needles up to 8 KiB take the fast path; the 20 KiB file below takes the fastify route.
  const server = await startDataServerProcess(dir, { args: ['--sync-read-bytes-max', '8KiB'] })
  t.teardown(() => server.stop())
  await createVolume(server.url, 1)
  const cases = [
    { fid: '1,011234abcd', body: randomBytes(3000), type: 'image/png', path: '/1,011234abcd' },
    { fid: '1,021234abcd', body: randomBytes(3000), type: 'text/html', path: '/1/021234abcd/page.html' },
    { fid: '1,031234abcd', body: randomBytes(20_000), type: 'image/jpeg', path: '/1,031234abcd.jpg' },
  ]
  for (const c of cases) {
    const put = await request(`${server.url}/${c.fid}`, { method: 'POST', body: c.body, headers: { 'content-type': c.type } })
    t.equal(put.statusCode, 201, `stored ${c.fid}`)
    await put.body.dump()
  }
  for (const c of cases) {
    const plain = await request(`${server.url}${c.path}`)
    const plainBody = Buffer.from(await plain.body.arrayBuffer())
    // An If-None-Match that matches nothing forces the fastify route without changing the answer.
    const routed = await request(`${server.url}${c.path}`, { headers: { 'if-none-match': '"not-this-one"' } })
    const routedBody = Buffer.from(await routed.body.arrayBuffer())
    t.equal(plain.statusCode, 200, `${c.path}: 200`)
    t.equal(routed.statusCode, 200, `${c.path}: 200 through fastify`)
    t.same(stable(plain.headers), stable(routed.headers), `${c.path}: the same headers on both paths`)
    t.ok(plainBody.equals(c.body) && routedBody.equals(c.body), `${c.path}: the same bytes on both paths`)
    const head = await request(`${server.url}${c.path}`, { method: 'HEAD' })
    await head.body.dump()
    t.same(stable(head.headers), stable(plain.headers), `${c.path}: HEAD has the GET's headers`)
  }
  const missing = await request(`${server.url}/1,091234abcd`)
  t.equal(missing.statusCode, 404, 'a missing file falls through to the fastify route and its error body')
  t.same(await missing.body.json(), { error: 'file not found', code: 'NS_ERR_NOT_FOUND' })
  const metrics = await (await request(`${server.url}/metrics`)).body.text()
  const reads = /needlestore_http_requests_total\{op="read",status="200"\} (\d+)/.exec(metrics)
  t.equal(Number(reads?.[1]), 6, 'reads on both paths are counted in the metrics')
})
