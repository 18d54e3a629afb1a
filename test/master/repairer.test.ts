/**
 * The Repairer against scripted data servers: what it asks of the destination and of the other
 * copies, how the volume map changes after a copy, backoff after a failure, a copy dropped when
 * the replaced server comes back during it, and a replaced copy deleted when its server
 * reports it again (and remembered in the store).
 */
import t from 'tap'
import { createPeerAgent } from '../../src/common/peer.js'
import { Repairer, type RetiredStore } from '../../src/master/repair.js'
import { Topology, type Heartbeat, type VolumeReport } from '../../src/master/topology.js'
import type { Teardown } from '../helpers/cluster.js'
import { fakeServer, type FakeHandler, type FakeServer } from '../helpers/fake-server.js'

function report(id: number): VolumeReport {
  return { id, replication: '002', collection: '', size: 100, fileCount: 1, deleteCount: 0, garbageBytes: 0, readOnly: false, healthy: true }
}

function beat(s: FakeServer, volumes: VolumeReport[]): Heartbeat {
  return { url: s.host, publicUrl: s.host, dataCenter: 'dc1', rack: 'r1', volumesMax: 10, volumes }
}

async function setup(t: Teardown, destHandler: FakeHandler) {
  let now = 1_000_000
  const clock = { now: () => now, advance: (ms: number) => (now += ms) }
  const ok: FakeHandler = (_req, res) => res.json(200, {})
  const [a, b, c, d] = await Promise.all([fakeServer(t, ok), fakeServer(t, ok), fakeServer(t, ok), fakeServer(t, destHandler)])
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1 << 30, now: clock.now })
  for (const s of [a, b, c]) topo.heartbeat(beat(s, [report(1)]))
  topo.heartbeat(beat(d, []))
  clock.advance(1500)
  for (const s of [a, b]) topo.heartbeat(beat(s, [report(1)]))
  topo.heartbeat(beat(d, []))
  topo.sweep()
  const retired: Array<[number, string]> = []
  const store: RetiredStore = {
    retiredCopies: () => [],
    retireCopy: async (volume, url) => void retired.push([volume, url]),
    forgetRetired: async () => {},
  }
  const agent = createPeerAgent({ connections: 4 })
  t.teardown(() => agent.close())
  const logs: string[] = []
  const repairer = new Repairer(
    topo,
    agent,
    { repairAfterMs: 0, repairsMax: 2, copyTimeoutMs: 5000, peerTimeoutMs: 5000, secret: 's', log: (m) => logs.push(m), now: clock.now },
    () => true,
    store,
  )
  t.teardown(() => repairer.close())
  return { a, b, c, d, topo, clock, repairer, retired, logs }
}

t.test('a copy replaces the dead copy; the other copies learn the new list; the returning server drops its copy', async (t) => {
  const { a, b, c, d, topo, repairer, retired } = await setup(t, (_req, res) => res.json(201, { datBytes: 100, liveCount: 1 }))
  const { plan, results } = await repairer.runNow()
  t.same(plan.steps.map((s) => [s.volume, s.destinations, s.replaces]), [[1, [d.host], [c.host]]])
  t.same(results.map((r) => [r.volume, r.ok, r.copied]), [[1, true, [d.host]]])
  const copy = d.requests.find((r) => r.path === '/admin/volume/copy')!
  t.equal(copy.method, 'POST')
  t.equal(copy.query.get('volume'), '1')
  t.ok([a.host, b.host].includes(copy.query.get('from')!), 'from a live copy')
  t.equal(copy.query.get('replication'), '002')
  t.same(copy.query.get('locations')!.split(',').sort(), [a.host, b.host, d.host].sort(), 'the destination learns every copy')
  t.equal(copy.headers.authorization, 'Bearer s', 'with the secret')
  for (const s of [a, b]) {
    const peers = s.requests.find((r) => r.path === '/admin/volume/peers')
    t.same(peers?.query.get('locations')?.split(',').sort(), [a.host, b.host, d.host].sort(), `${s.host} learns the new list`)
  }
  t.same(topo.volume(1)!.nodes.map((n) => n.url).sort(), [a.host, b.host, d.host].sort(), 'the volume map names the new copy, not the dead one')
  t.equal(topo.unwritableReason(topo.volume(1)!), undefined, 'and the volume takes writes')
  t.same(retired, [[1, c.host]], 'the replaced copy is recorded')

  // The dead server comes back with its copy: left out of the map, and deleted there.
  const filtered = repairer.filterHeartbeat(beat(c, [report(1), report(9)]))
  t.same(filtered.volumes.map((v) => v.id), [9], 'its replaced copy is left out of the heartbeat')
  topo.heartbeat(filtered)
  t.notOk(topo.volume(1)!.nodes.some((n) => n.url === c.host), 'and never listed')
  await t.resolves(
    (async () => {
      for (let i = 0; i < 200 && !c.requests.some((r) => r.path === '/admin/volume/delete'); i++) await new Promise((r) => setTimeout(r, 10))
    })(),
  )
  t.equal(c.requests.find((r) => r.path === '/admin/volume/delete')?.query.get('volume'), '1', 'it is told to delete it')
  t.same(repairer.plan(true).steps.filter((s) => s.volume === 1), [], 'nothing left to repair in volume 1')
})

t.test('a failed copy backs off; the operator may retry at once', async (t) => {
  let fail = true
  const { repairer, topo } = await setup(t, (_req, res) => (fail ? res.json(507, { error: 'the disk is full', code: 'NS_ERR_DISK_FULL' }) : res.json(201, {})))
  const first = await repairer.runNow()
  t.equal(first.results[0]?.ok, false)
  t.match(first.results[0]?.error, /507 to the copy of volume 1: the disk is full/)
  t.match(repairer.plan(false).waiting, [{ volume: 1, reason: /retrying in \d+ s after/ }], 'the timer waits')
  t.equal(repairer.plan(true).steps.length, 1, 'the operator does not')
  t.equal(topo.volume(1)!.nodes.length, 3, 'the volume map is unchanged')
  fail = false
  t.equal((await repairer.runNow()).results[0]?.ok, true)
})

t.test('a copy is dropped when the replaced server comes back during it', async (t) => {
  let back: (() => void) | undefined
  const { d, topo, repairer, retired } = await setup(t, (req, res) => {
    if (req.path === '/admin/volume/copy') back?.()
    res.json(req.path === '/admin/volume/copy' ? 201 : 200, {})
  })
  const c = topo.volume(1)!.nodes.find((n) => !n.alive)!
  back = () => topo.heartbeat({ url: c.url, publicUrl: c.url, dataCenter: 'dc1', rack: 'r1', volumesMax: 10, volumes: [report(1)] })
  const { results } = await repairer.runNow()
  t.equal(results[0]?.ok, false)
  t.match(results[0]?.error, /came back while volume 1 was copied/)
  t.ok(d.requests.some((r) => r.path === '/admin/volume/delete' && r.query.get('volume') === '1'), 'the new copy is deleted')
  t.same(retired, [], 'nothing is retired')
  t.notOk(topo.volume(1)!.nodes.some((n) => n.url === d.host), 'the volume map does not name the dropped copy')
})

t.test('the timer waits repairAfterMs before copying a volume with copies missing but none dead', async (t) => {
  let now = 1_000_000
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1 << 30, now: () => now })
  for (const url of ['a:1', 'b:1', 'c:1', 'd:1']) topo.heartbeat({ url, publicUrl: url, dataCenter: 'dc1', rack: 'r1', volumesMax: 10, volumes: url === 'a:1' ? [report(5)] : [] })
  const agent = createPeerAgent({ connections: 1 })
  t.teardown(() => agent.close())
  const repairer = new Repairer(topo, agent, { repairAfterMs: 10_000, repairsMax: 1, copyTimeoutMs: 1000, peerTimeoutMs: 1000, secret: undefined, log: () => {}, now: () => now }, () => true)
  t.match(repairer.plan(false).waiting, [{ volume: 5, reason: /1 of 3 copies reported for less than 10000 ms/ }], 'a growth being undone looks like this for a moment')
  t.same(repairer.plan(true).steps.map((s) => [s.volume, s.destinations.length]), [[5, 2]], 'the operator does not wait')
  now += 10_000
  t.same(repairer.plan(false).steps.map((s) => [s.volume, s.source, s.destinations.length]), [[5, 'a:1', 2]], 'the timer copies it after repairAfterMs')
})
