/**
 * The master's HTTP routes through app.inject(): parameter checks, errors and their codes,
 * readiness after a restart, heartbeat validation, redirects and status shapes. Growth on real
 * data servers is covered by the cluster tests.
 */
import t from 'tap'
import { createMaster, type Master } from '../../src/master/index.js'
import type { MasterInput } from '../../src/master/options.js'
import { tempDir, type Teardown } from '../helpers/volume.js'

async function master(t: Teardown, input: Partial<MasterInput> = {}, dir?: string): Promise<Master> {
  const m = await createMaster({ dir: dir ?? (await tempDir(t, 'ns-master-')), log: () => {}, ...input })
  t.teardown(() => m.close())
  return m
}

function heartbeat(url: string, volumes: object[] = [], over: object = {}) {
  return { url, publicUrl: url, dataCenter: 'dc1', rack: 'r1', volumesMax: 8, volumes, ...over }
}

function volume(id: number, over: object = {}) {
  return { id, replication: '000', collection: '', size: 64, fileCount: 0, deleteCount: 0, garbageBytes: 0, readOnly: false, healthy: true, ...over }
}

async function beat(m: Master, body: object) {
  return m.app.inject({ method: 'POST', url: '/cluster/heartbeat', payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
}

t.test('assign refuses bad parameters with 400 and a stable code', async (t) => {
  const m = await master(t)
  await beat(m, heartbeat('127.0.0.1:1', [volume(1)]))
  for (const query of ['count=0', 'count=-1', 'count=abc', 'count=1.5', 'count=10001', 'replication=2', 'replication=abcd', 'collection=a%20b', `collection=${'x'.repeat(25)}`, 'ttl=3d']) {
    const res = await m.app.inject({ url: `/dir/assign?${query}` })
    t.equal(res.statusCode, 400, query)
    t.match(res.json(), { code: /^NS_ERR_BAD_(REQUEST|OPTION)$/, error: String })
  }
  const ok = await m.app.inject({ url: '/dir/assign?count=3' })
  t.equal(ok.statusCode, 200)
  t.match(ok.json(), { fid: /^1,[0-9a-f]{9,}$/, url: '127.0.0.1:1', publicUrl: '127.0.0.1:1', count: 3 })
  t.notOk('auth' in ok.json(), 'no token without a secret')
})

t.test('with no server to grow on, assign answers 503 NS_ERR_NO_WRITABLE_VOLUME saying what is missing', async (t) => {
  const m = await master(t)
  const none = await m.app.inject({ url: '/dir/assign' })
  t.equal(none.statusCode, 503)
  t.equal(none.json().code, 'NS_ERR_NO_WRITABLE_VOLUME')
  t.ok(none.headers['retry-after'], 'Retry-After')
  await beat(m, heartbeat('127.0.0.1:1'))
  const three = await m.app.inject({ url: '/dir/assign?replication=002' })
  t.equal(three.statusCode, 503)
  t.match(three.json().error, /3 servers in one rack.*1 live data servers/)
})

t.test('keys are fresh across assigns; the volume map takes every copy into account', async (t) => {
  const m = await master(t)
  await beat(m, heartbeat('127.0.0.1:1', [volume(3, { replication: '001' })]))
  t.equal((await m.app.inject({ url: '/dir/assign?replication=001' })).statusCode, 503, 'one of two copies: not writable, and nowhere to grow')
  await beat(m, heartbeat('127.0.0.1:2', [volume(3, { replication: '001' })]))
  const keys = new Set<string>()
  for (let i = 0; i < 50; i++) {
    const res = await m.app.inject({ url: '/dir/assign?replication=001' })
    t.equal(res.statusCode, 200)
    const fid = res.json().fid as string
    t.ok(fid.startsWith('3,'))
    keys.add(fid.slice(2, -8))
  }
  t.equal(keys.size, 50, 'every key is new')
  const lookup = await m.app.inject({ url: '/dir/lookup?volumeId=3' })
  t.same(lookup.json().locations.map((l: { url: string }) => l.url).sort(), ['127.0.0.1:1', '127.0.0.1:2'])
})

t.test('lookup and redirects: 400 for malformed ids, 404 for unknown volumes', async (t) => {
  const m = await master(t)
  await beat(m, heartbeat('127.0.0.1:1', [volume(4)]))
  t.equal((await m.app.inject({ url: '/dir/lookup' })).statusCode, 400)
  t.equal((await m.app.inject({ url: '/dir/lookup?volumeId=x' })).json().code, 'NS_ERR_BAD_FID')
  const unknown = await m.app.inject({ url: '/dir/lookup?volumeId=9' })
  t.equal(unknown.statusCode, 404)
  t.match(unknown.json(), { volumeOrFileId: '9', error: /not found/ })
  const byFid = await m.app.inject({ url: '/dir/lookup?volumeId=4,01637037d6' })
  t.match(byFid.json(), { volumeOrFileId: '4', volumeId: '4', locations: [{ url: '127.0.0.1:1' }] })

  const get = await m.app.inject({ url: '/4,01637037d6.jpg' })
  t.equal(get.statusCode, 302)
  t.equal(get.headers.location, 'http://127.0.0.1:1/4,01637037d6.jpg')
  const post = await m.app.inject({ method: 'POST', url: '/4,01637037d6', payload: 'x' })
  t.equal(post.statusCode, 307)
  t.equal((await m.app.inject({ url: '/9,01637037d6' })).statusCode, 404)
  t.equal((await m.app.inject({ url: '/nonsense' })).statusCode, 400)
})

t.test('a heartbeat is checked field by field; a bad one changes nothing', async (t) => {
  const m = await master(t)
  const bad: object[] = [
    {},
    heartbeat(''),
    heartbeat('h:1', [volume(0)]),
    heartbeat('h:1', [volume(1, { replication: '12' })]),
    heartbeat('h:1', [volume(1, { size: -1 })]),
    heartbeat('h:1', 'nope' as unknown as object[]),
    heartbeat('h:1', [], { volumesMax: 1.5 }),
  ]
  for (const body of bad) t.equal((await beat(m, body)).statusCode, 400, JSON.stringify(body).slice(0, 80))
  const garbage = await m.app.inject({ method: 'POST', url: '/cluster/heartbeat', payload: 'not json' })
  t.equal(garbage.statusCode, 400)
  t.equal(m.topology.nodes().length, 0, 'no server was registered')
  const good = await beat(m, heartbeat('h:1', [volume(1)]))
  t.equal(good.statusCode, 200)
  t.same(good.json().peers, { 1: [] })
})

t.test('after a restart, assign answers 503 NS_ERR_NOT_READY with Retry-After until every known server reported', async (t) => {
  const dir = await tempDir(t, 'ns-master-')
  let now = 1_000_000
  const first = await createMaster({ dir, log: () => {}, now: () => now, deadAfterMs: 5000 })
  await beat(first, heartbeat('127.0.0.1:1', [volume(1)]))
  await beat(first, heartbeat('127.0.0.1:2', [volume(2)]))
  await first.close()

  const m = await master(t, { now: () => now, deadAfterMs: 5000 }, dir)
  const early = await m.app.inject({ url: '/dir/assign' })
  t.equal(early.statusCode, 503)
  t.equal(early.json().code, 'NS_ERR_NOT_READY')
  t.equal(early.headers['retry-after'], '5')
  t.equal((await m.app.inject({ url: '/dir/lookup?volumeId=2' })).json().code, 'NS_ERR_NOT_READY', 'an unreported volume is not yet unknown')
  await beat(m, heartbeat('127.0.0.1:1', [volume(1)]))
  t.equal((await m.app.inject({ url: '/dir/assign' })).statusCode, 503, 'one of two known servers reported')
  await beat(m, heartbeat('127.0.0.1:2', [volume(2)]))
  t.equal((await m.app.inject({ url: '/dir/assign' })).statusCode, 200, 'both reported')

  // A server that never comes back delays readiness by deadAfterMs at most.
  await m.close()
  const late = await master(t, { now: () => now, deadAfterMs: 5000 }, dir)
  await beat(late, heartbeat('127.0.0.1:1', [volume(1)]))
  t.equal((await late.app.inject({ url: '/dir/assign' })).statusCode, 503)
  now += 5000
  t.equal((await late.app.inject({ url: '/dir/assign' })).statusCode, 200, 'ready once deadAfterMs has passed')
})

t.test('status routes answer in SeaweedFS shapes', async (t) => {
  const m = await master(t)
  await beat(m, heartbeat('127.0.0.1:1', [volume(1, { garbageBytes: 32 })]))
  t.match((await m.app.inject({ url: '/dir/status' })).json(), { Topology: { Max: 8, Free: 7, DataCenters: [{ Id: 'dc1', Racks: [{ Id: 'r1', DataNodes: [{ Url: '127.0.0.1:1', Volumes: 1, Alive: true }] }] }] } })
  t.match((await m.app.inject({ url: '/vol/status' })).json(), { Volumes: [{ Id: 1, ReplicaPlacement: '000', Writable: true, GarbageRatio: 0.5 }] })
  t.match((await m.app.inject({ url: '/cluster/status' })).json(), { IsLeader: true, Peers: [] })
  const vacuum = await m.app.inject({ url: '/vol/vacuum?garbageThreshold=0.4' })
  t.match(vacuum.json(), { overThreshold: [1], compacting: [1] }, 'vacuum starts compacting the volume over the threshold on its copies')
  t.equal((await m.app.inject({ url: '/vol/vacuum?garbageThreshold=2' })).statusCode, 400)
  const dashboard = await m.app.inject({ url: '/' })
  t.equal(dashboard.statusCode, 200)
  t.match(dashboard.headers['content-type'], /text\/html/)
  t.match(dashboard.body, /127\.0\.0\.1:1/)
  const metrics = await m.app.inject({ url: '/metrics' })
  t.match(metrics.body, /needlestore_master_data_servers\{state="alive"\} 1/)
  t.match(metrics.body, /needlestore_master_http_requests_total\{op="heartbeat",status="200"\}/)
})
