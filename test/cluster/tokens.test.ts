/**
 * Write tokens and the cluster secret, against a real cluster started with `--secret`: writes
 * and deletes need the HS256 token the master hands out for that fid (SeaweedFS-style), reads
 * need nothing, and the internal routes (heartbeats, replicated writes, volume creation) need
 * the cluster secret itself.
 */
import { createHmac } from 'node:crypto'
import t, { type Test } from 'tap'
import { Agent, FormData, request, type Dispatcher } from 'undici'
import { startCluster, type AssignResult, type Cluster } from '../helpers/cluster.js'

t.setTimeout(120_000)

const SECRET = 'tokens-test-secret-8c1f'

const dispatcher: Dispatcher = new Agent({ headersTimeout: 15_000, bodyTimeout: 15_000, connections: 8 })
t.teardown(() => dispatcher.destroy())

interface Answer {
  status: number
  text: string
  json(): Record<string, unknown>
}

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, opts: { body?: FormData | Buffer | string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await request(url, { dispatcher, method, body: opts.body, headers: opts.headers })
  const text = await res.body.text()
  return { status: res.statusCode, text, json: () => JSON.parse(text) as Record<string, unknown> }
}

function filePart(data: Buffer | string, filename: string): FormData {
  const form = new FormData()
  form.append('file', new Blob([data]), filename)
  return form
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** The claims of a JWT (its payload, base64url JSON); no signature check. */
function claimsOf(token: string): { fid?: unknown; exp?: unknown } {
  const parts = token.split('.')
  if (parts.length !== 3) throw new Error(`not a JWT: ${token}`)
  return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { fid?: unknown; exp?: unknown }
}

async function assignWithToken(cluster: Cluster, query = ''): Promise<AssignResult & { auth: string }> {
  const a = await cluster.assign(query)
  if (typeof a.auth !== 'string') throw new Error(`assign answered no auth token: ${JSON.stringify(a)}`)
  return a as AssignResult & { auth: string }
}

/** Every replica's host:port, from /dir/lookup. */
async function locationsOf(cluster: Cluster, fid: string): Promise<string[]> {
  const res = await call('GET', `${cluster.masterUrl}/dir/lookup?volumeId=${encodeURIComponent(fid)}`)
  if (res.status !== 200) throw new Error(`lookup ${fid} answered ${res.status}: ${res.text}`)
  return (res.json().locations as Array<{ publicUrl: string }>).map((l) => l.publicUrl)
}

/** An HS256 JWT with these claims, signed with secret, as any SeaweedFS-style signer makes it. */
function jwt(secret: string, claims: Record<string, unknown>): string {
  const input = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

const inSeconds = (s: number) => Math.floor(Date.now() / 1000) + s

function expectUnauthorized(t: Test, res: Answer, what: string): void {
  t.equal(res.status, 401, `${what}: 401 (${res.text})`)
  if (res.status === 401) t.equal(res.json().code, 'NS_ERR_UNAUTHORIZED', `${what}: NS_ERR_UNAUTHORIZED`)
}

t.test('with a secret: writes and deletes need the fid\'s token, reads need none', async (t) => {
  const cluster = await startCluster(t, { dataServers: 3, secret: SECRET })

  t.test('assign answers a token for the fid', async (t) => {
    const a = await assignWithToken(cluster)
    t.equal(a.auth.split('.').length, 3, 'a JWT: header.payload.signature')
    const header = JSON.parse(Buffer.from(a.auth.split('.')[0]!, 'base64url').toString('utf8')) as { alg?: string }
    t.equal(header.alg, 'HS256')
    const claims = claimsOf(a.auth)
    t.equal(claims.fid, a.fid, 'its fid claim is the assigned fid')
    t.type(claims.exp, 'number')
    t.ok((claims.exp as number) * 1000 > Date.now(), 'it expires in the future')
  })

  t.test('uploads: only with the token of that fid', async (t) => {
    const a = await assignWithToken(cluster)
    const other = await assignWithToken(cluster)
    const url = `http://${a.url}/${a.fid}`
    const data = Buffer.from('signed upload '.repeat(500))

    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt') }), 'no token')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(other.auth) }), "another fid's token")
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer('not-a-jwt') }), 'a malformed token')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer('a.b.c') }), 'three garbage parts')
    // Our payload under another token's signature: the signature does not cover it.
    const [h, , sig] = other.auth.split('.')
    const [, payload] = a.auth.split('.')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(`${h}.${payload}.${sig}`) }), 'a forged signature')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: { authorization: a.auth } }), 'the token without "Bearer "')

    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(jwt('another-secret', { fid: a.fid, exp: inSeconds(60) })) }), 'a token signed with another secret')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(jwt(SECRET, { fid: a.fid, exp: inSeconds(-5) })) }), 'a token that expired 5 s ago')
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(jwt(SECRET, { fid: a.fid })) }), 'a token without exp')
    const unsigned = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ fid: a.fid, exp: inSeconds(60) })).toString('base64url')}.`
    expectUnauthorized(t, await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(unsigned) }), 'an unsigned alg=none token')

    const locations = await locationsOf(cluster, a.fid)
    t.equal(locations.length, 3)
    for (const where of locations) {
      const res = await call('GET', `http://${where}/${a.fid}`)
      t.equal(res.status, 404, `${where}: a refused upload stored nothing`)
    }

    const put = await call('POST', url, { body: filePart(data, 'a.txt'), headers: bearer(a.auth) })
    t.equal(put.status, 201, `with its token: 201 (${put.text})`)
    t.match(put.json(), { name: 'a.txt', size: data.length })
    for (const where of locations) {
      const res = await call('GET', `http://${where}/${a.fid}`)
      t.equal(res.status, 200, `${where}: readable without a token`)
      t.equal(res.text, data.toString(), `${where}: the bytes, replicated with the secret`)
    }
  })

  t.test('tokens are plain HS256 JWTs: SeaweedFS clients send them as "BEARER <jwt>"; any holder of the key may sign', async (t) => {
    const a = await assignWithToken(cluster)
    const url = `http://${a.url}/${a.fid}`
    // SeaweedFS's Go client (operation.Upload, operation.Delete) spells the scheme in capitals;
    // auth schemes are case-insensitive (RFC 9110 §11.1).
    const put = await call('POST', url, { body: filePart('capital bearer', 'c.txt'), headers: { authorization: `BEARER ${a.auth}` } })
    t.equal(put.status, 201, `upload with "BEARER <auth>": ${put.text}`)
    const del = await call('DELETE', url, { headers: { authorization: `BEARER ${a.auth}` } })
    t.equal(del.status, 202, `delete with "BEARER <auth>": ${del.text}`)

    const b = await assignWithToken(cluster)
    const own = jwt(SECRET, { fid: b.fid, exp: inSeconds(60) })
    const put2 = await call('POST', `http://${b.url}/${b.fid}`, { body: filePart('self-signed', 'd.txt'), headers: bearer(own) })
    t.equal(put2.status, 201, `a token signed with the cluster key by another signer: ${put2.text}`)
  })

  t.test('one token covers every id of a count=N assign; ?jwt= works like the header', async (t) => {
    const a = await assignWithToken(cluster, 'count=2')
    t.equal(a.count, 2)
    const put1 = await call('PUT', `http://${a.url}/${a.fid}_1?jwt=${encodeURIComponent(a.auth)}`, { body: filePart('second file', 'b.txt') })
    t.equal(put1.status, 201, `<fid>_1 with ?jwt=: ${put1.text}`)
    const put0 = await call('PUT', `http://${a.url}/${a.fid}`, { body: filePart('first file', 'a.txt'), headers: bearer(a.auth) })
    t.equal(put0.status, 201, put0.text)
    t.equal((await call('GET', `http://${a.url}/${a.fid}_1`)).text, 'second file')
    t.equal((await call('GET', `http://${a.url}/${a.fid}`)).text, 'first file')
  })

  t.test('deletes: only with the token /dir/lookup?volumeId=<fid> answers', async (t) => {
    const a = await assignWithToken(cluster)
    const data = Buffer.from('to be deleted')
    const put = await call('POST', `http://${a.url}/${a.fid}`, { body: filePart(data, 'd.txt'), headers: bearer(a.auth) })
    t.equal(put.status, 201, put.text)

    const lookup = await call('GET', `${cluster.masterUrl}/dir/lookup?volumeId=${encodeURIComponent(a.fid)}`)
    t.equal(lookup.status, 200, lookup.text)
    const auth = lookup.json().auth
    t.type(auth, 'string', 'a lookup by fid answers a token')
    t.equal(claimsOf(String(auth)).fid, a.fid, 'for that fid')
    const byVid = await call('GET', `${cluster.masterUrl}/dir/lookup?volumeId=${a.fid.slice(0, a.fid.indexOf(','))}`)
    t.equal(byVid.json().auth, undefined, 'a lookup by volume id answers none')

    const locations = await locationsOf(cluster, a.fid)
    expectUnauthorized(t, await call('DELETE', `http://${a.url}/${a.fid}`), 'DELETE without a token')
    expectUnauthorized(t, await call('DELETE', `http://${a.url}/${a.fid}`, { headers: bearer('garbage') }), 'DELETE with a malformed token')
    for (const where of locations) t.equal((await call('GET', `http://${where}/${a.fid}`)).status, 200, `${where}: a refused delete deleted nothing`)

    const del = await call('DELETE', `http://${a.url}/${a.fid}`, { headers: bearer(String(auth)) })
    t.equal(del.status, 202, `DELETE with the lookup's token: ${del.text}`)
    t.same(del.json(), { size: data.length })
    for (const where of locations) t.equal((await call('GET', `http://${where}/${a.fid}`)).status, 404, `${where}: deleted everywhere`)
  })

  t.test('/submit needs no token: the master signs its own write', async (t) => {
    const res = await call('POST', `${cluster.masterUrl}/submit`, { body: filePart('submitted', 's.txt') })
    t.equal(res.status, 201, res.text)
    const s = res.json() as { fid: string; fileUrl: string }
    t.equal((await call('GET', `http://${s.fileUrl}`)).text, 'submitted')
    for (const where of await locationsOf(cluster, s.fid)) t.equal((await call('GET', `http://${where}/${s.fid}`)).text, 'submitted', `${where} holds a copy`)
  })

  t.test('a delete through the master needs the token too', async (t) => {
    const a = await assignWithToken(cluster)
    t.equal((await call('POST', `http://${a.url}/${a.fid}`, { body: filePart('x', 'x.txt'), headers: bearer(a.auth) })).status, 201)
    expectUnauthorized(t, await call('DELETE', `${cluster.masterUrl}/${a.fid}`), 'DELETE via the master without a token')
    const del = await call('DELETE', `${cluster.masterUrl}/${a.fid}`, { headers: bearer(a.auth) })
    t.equal(del.status, 202, `DELETE via the master with the token: ${del.text}`)
  })

  t.test('internal routes need the cluster secret', async (t) => {
    const a = await assignWithToken(cluster)
    const ds = `http://${a.url}`

    const heartbeat = await call('POST', `${cluster.masterUrl}/cluster/heartbeat`, { body: '{}', headers: { 'content-type': 'application/json' } })
    expectUnauthorized(t, heartbeat, 'POST /cluster/heartbeat without the secret')
    const heartbeatWrong = await call('POST', `${cluster.masterUrl}/cluster/heartbeat`, { body: '{}', headers: { 'content-type': 'application/json', ...bearer('not-the-secret') } })
    expectUnauthorized(t, heartbeatWrong, 'POST /cluster/heartbeat with a wrong secret')

    for (const route of ['/vol/grow?count=1', '/vol/vacuum']) {
      expectUnauthorized(t, await call('POST', `${cluster.masterUrl}${route}`), `POST ${route} on the master without the secret`)
    }
    const grown = await call('POST', `${cluster.masterUrl}/vol/grow?count=1&replication=000`, { headers: bearer(SECRET) })
    t.equal(grown.status, 200, `POST /vol/grow with the secret: 200 (${grown.text})`)
    const batch = await call('POST', `${ds}/admin/replicate`, { body: Buffer.alloc(0) })
    expectUnauthorized(t, batch, 'POST /admin/replicate without the secret')

    const volume = await call('POST', `${ds}/admin/assign_volume?volume=99`)
    expectUnauthorized(t, volume, 'POST /admin/assign_volume without the secret')
    const volumeWithToken = await call('POST', `${ds}/admin/assign_volume?volume=99`, { headers: bearer(a.auth) })
    expectUnauthorized(t, volumeWithToken, 'POST /admin/assign_volume with a write token')

    const data = Buffer.from('a replicated write')
    const replicate = `${ds}/${a.fid}?type=replicate`
    expectUnauthorized(t, await call('POST', replicate, { body: filePart(data, 'r.txt') }), 'a replicate write without the secret')
    expectUnauthorized(t, await call('POST', replicate, { body: filePart(data, 'r.txt'), headers: bearer(a.auth) }), 'a replicate write with a write token, not the secret')
    expectUnauthorized(t, await call('POST', replicate, { body: filePart(data, 'r.txt'), headers: bearer('not-the-secret') }), 'a replicate write with a wrong secret')
    t.equal((await call('GET', `${ds}/${a.fid}`)).status, 404, 'refused replicate writes stored nothing')

    const accepted = await call('POST', replicate, { body: filePart(data, 'r.txt'), headers: bearer(SECRET) })
    t.equal(accepted.status, 201, `a replicate write with the secret: 201 (${accepted.text})`)
    const got = await call('GET', `${ds}/${a.fid}`)
    t.equal(got.status, 200)
    t.equal(got.text, data.toString(), 'and it is stored on that server')
  })
})

t.test('an expired token is refused', async (t) => {
  // One data server: default replication 000. Tokens live one second.
  const cluster = await startCluster(t, { dataServers: 1, secret: SECRET, masterArgs: ['--token-ttl-seconds', '1'] })
  const a = await assignWithToken(cluster)
  const exp = claimsOf(a.auth).exp
  t.type(exp, 'number')
  t.ok((exp as number) * 1000 - Date.now() <= 2000, `the token lives about --token-ttl-seconds (exp ${exp}, now ${Date.now()})`)
  await cluster.waitFor('the token to expire', async () => Date.now() >= (exp as number) * 1000, 10_000)
  const res = await call('POST', `http://${a.url}/${a.fid}`, { body: filePart('too late', 'late.txt'), headers: bearer(a.auth) })
  expectUnauthorized(t, res, 'an upload with an expired token')
  t.equal((await call('GET', `http://${a.url}/${a.fid}`)).status, 404, 'nothing was stored')
})
