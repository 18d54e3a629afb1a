/**
 * The repair planner over a Topology fed with heartbeats: which volumes it repairs, from where,
 * to where (placement with the live copies, emptiest first), and which it leaves waiting or
 * blocked, and why.
 */
import t from 'tap'
import { Topology, type Heartbeat, type VolumeReport } from '../../src/master/topology.js'
import { planRepairs, satisfiesPlacement } from '../../src/master/repair.js'
import { parsePlacement } from '../../src/common/placement.js'

function clock() {
  let now = 1_000_000
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

function server(url: string, dataCenter: string, rack: string, volumes: VolumeReport[] = [], volumesMax = 10): Heartbeat {
  return { url, publicUrl: url, dataCenter, rack, volumesMax, volumes }
}

function report(id: number, replication: string, over: Partial<VolumeReport> = {}): VolumeReport {
  return { id, replication, collection: '', size: 100, fileCount: 1, deleteCount: 0, garbageBytes: 0, readOnly: false, healthy: true, ...over }
}

type Layout = ReadonlyArray<readonly [url: string, dc: string, rack: string, volumes: VolumeReport[], volumesMax?: number]>

/** A topology with the servers of layout, then every server in `dead` silent until marked dead. */
function topologyOf(layout: Layout, dead: readonly string[]) {
  const c = clock()
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1 << 30, now: c.now })
  for (const [url, dc, rack, volumes, max] of layout) topo.heartbeat(server(url, dc, rack, volumes, max))
  c.advance(1500)
  for (const [url, dc, rack, volumes, max] of layout) if (!dead.includes(url)) topo.heartbeat(server(url, dc, rack, volumes, max))
  topo.sweep()
  return { topo, c }
}

t.test('satisfiesPlacement', async (t) => {
  const n = (url: string, dataCenter: string, rack: string) => ({ url, dataCenter, rack })
  t.ok(satisfiesPlacement(parsePlacement('002'), [n('a', 'd1', 'r1'), n('b', 'd1', 'r1'), n('c', 'd1', 'r1')]))
  t.notOk(satisfiesPlacement(parsePlacement('002'), [n('a', 'd1', 'r1'), n('b', 'd1', 'r1'), n('c', 'd1', 'r2')]), '002 wants one rack')
  t.notOk(satisfiesPlacement(parsePlacement('002'), [n('a', 'd1', 'r1'), n('a', 'd1', 'r1'), n('c', 'd1', 'r1')]), 'one server twice')
  t.ok(satisfiesPlacement(parsePlacement('011'), [n('a', 'd1', 'r2'), n('b', 'd1', 'r1'), n('c', 'd1', 'r1')]), '011: any server may be the first')
  t.notOk(satisfiesPlacement(parsePlacement('020'), [n('a', 'd1', 'r1'), n('b', 'd1', 'r2'), n('c', 'd1', 'r2')]), '020: two other racks, not one twice')
  t.ok(satisfiesPlacement(parsePlacement('110'), [n('a', 'd1', 'r1'), n('b', 'd1', 'r2'), n('c', 'd2', 'r9')]))
  t.notOk(satisfiesPlacement(parsePlacement('100'), [n('a', 'd1', 'r1'), n('b', 'd1', 'r1')]))
})

t.test('a dead copy of a 002 volume goes to the emptiest live server of the rack', async (t) => {
  const v1 = report(1, '002')
  const { topo } = topologyOf(
    [
      ['a', 'dc1', 'r1', [v1]],
      ['b', 'dc1', 'r1', [v1]],
      ['c', 'dc1', 'r1', [v1]],
      ['busy', 'dc1', 'r1', [report(7, '000'), report(8, '000')]],
      ['idle', 'dc1', 'r1', []],
      ['other-rack', 'dc1', 'r2', []],
    ],
    ['c'],
  )
  const plan = planRepairs(topo, { repairAfterMs: 0, complete: true })
  t.same(plan.steps, [{ volume: 1, replication: '002', collection: '', source: plan.steps[0]?.source, destinations: ['idle'], replaces: ['c'] }])
  t.ok(['a', 'b'].includes(plan.steps[0]!.source), 'the source is a live copy')
  t.same(plan.blocked, [])
  t.same(plan.waiting, [])
})

t.test('010 and 100: the new copy keeps the racks and data centers apart', async (t) => {
  const r = report(1, '010')
  const d = report(2, '100')
  const { topo } = topologyOf(
    [
      ['a', 'dc1', 'r1', [r, d]],
      ['b', 'dc1', 'r2', [r]],
      ['x', 'dc2', 'r1', [d]],
      ['a2', 'dc1', 'r1', []],
      ['b2', 'dc1', 'r2', [], 20],
      ['x2', 'dc2', 'r5', []],
    ],
    ['b', 'x'],
  )
  const plan = planRepairs(topo, { repairAfterMs: 0, complete: true })
  const byVolume = new Map(plan.steps.map((s) => [s.volume, s]))
  t.same(byVolume.get(1)?.destinations, ['b2'], '010: a server in the other rack, not the emptier one beside a')
  t.same(byVolume.get(2)?.destinations, ['x2'], '100: a server in the other data center')
})

t.test('waiting and blocked volumes, and a plan that spreads copies', async (t) => {
  const { topo, c } = topologyOf(
    [
      ['a', 'dc1', 'r1', [report(1, '001'), report(2, '001'), report(3, '001', { healthy: false })]],
      ['b', 'dc1', 'r1', [report(1, '001'), report(2, '001'), report(3, '001'), report(4, '000')]],
      ['c', 'dc1', 'r1', [], 1],
      ['d', 'dc1', 'r1', [], 1],
    ],
    ['b'],
  )
  const early = planRepairs(topo, { repairAfterMs: 60_000, complete: true })
  t.same(early.steps, [], 'nothing before the grace period')
  t.same(early.waiting.map((w) => w.volume), [1, 2, 3])
  t.match(early.waiting[0]!.reason, /dead for less than 60000 ms/)
  t.same(early.blocked.map((b) => b.volume), [4], 'a volume whose only copy is dead is blocked')

  c.advance(60_000)
  const plan = planRepairs(topo, { repairAfterMs: 60_000, complete: true })
  t.same(plan.steps.map((s) => [s.volume, s.destinations.length]), [[1, 1], [2, 1]])
  t.not(plan.steps[0]!.destinations[0], plan.steps[1]!.destinations[0], 'two servers with one free slot each take one volume each')
  t.same(plan.waiting.map((w) => [w.volume, w.reason]), [[3, 'every live copy is reconciling a failed write']])

  const skipped = planRepairs(topo, { repairAfterMs: 0, complete: true, skip: new Map([[1, 'a repair is running']]) })
  t.same(skipped.waiting.find((w) => w.volume === 1)?.reason, 'a repair is running')
  const excluded = planRepairs(topo, { repairAfterMs: 0, complete: true, excluded: (_id, n) => n.url === 'c' || n.url === 'd' })
  t.same(excluded.blocked.map((b) => b.volume).sort(), [1, 2, 4], 'no server may take the copies')
  t.match(excluded.blocked[0]!.reason, /no live server with a free slot fits placement 001/)
})
