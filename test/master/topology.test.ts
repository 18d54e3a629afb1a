import t from 'tap'
import { Topology, type Heartbeat, type VolumeReport } from '../../src/master/topology.js'
import { codeOfCall } from '../helpers/volume.js'
import { copyCount, copyCountOfByte, parsePlacement, placementToByte } from '../../src/common/placement.js'

function clock() {
  let now = 1_000_000
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

function server(url: string, dataCenter: string, rack: string, volumes: VolumeReport[] = [], volumesMax = 10): Heartbeat {
  return { url, publicUrl: url, dataCenter, rack, volumesMax, volumes }
}

function report(id: number, over: Partial<VolumeReport> = {}): VolumeReport {
  return { id, replication: '002', collection: '', size: 100, fileCount: 1, deleteCount: 0, garbageBytes: 0, readOnly: false, healthy: true, ...over }
}

t.test('placement: xyz picks servers in the right racks and data centers, or says why not', async (t) => {
  const c = clock()
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1 << 30, now: c.now })
  for (const [url, dc, rack] of [
    ['a1', 'dc1', 'r1'], ['a2', 'dc1', 'r1'], ['a3', 'dc1', 'r1'],
    ['b1', 'dc1', 'r2'], ['c1', 'dc2', 'r1'],
  ] as const) topo.heartbeat(server(url, dc, rack))

  for (let i = 0; i < 20; i++) {
    const same = topo.pickServers('002')
    t.equal(new Set(same.map((n) => n.url)).size, 3)
    t.ok(same.every((n) => n.dataCenter === 'dc1' && n.rack === 'r1'), '002: one rack')
    const racks = topo.pickServers('010')
    t.equal(racks[0]!.dataCenter, 'dc1')
    t.equal(racks[1]!.dataCenter, 'dc1')
    t.not(racks[0]!.rack, racks[1]!.rack, '010: another rack of the data center')
    const dcs = topo.pickServers('100')
    t.not(dcs[0]!.dataCenter, dcs[1]!.dataCenter, '100: another data center')
    const all = topo.pickServers('111')
    t.equal(all.length, 4)
  }
  t.equal(codeOfCall(() => topo.pickServers('003')), 'NS_ERR_NO_WRITABLE_VOLUME', 'no rack has 4 servers')
  t.equal(codeOfCall(() => topo.pickServers('200')), 'NS_ERR_NO_WRITABLE_VOLUME', 'only two data centers')
  t.match(String((() => { try { topo.pickServers('003') } catch (e) { return (e as Error).message } })()), /4 servers in one rack/)
})

t.test('placement prefers the emptiest servers and skips full and dead ones', async (t) => {
  const c = clock()
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1 << 30, now: c.now })
  topo.heartbeat(server('full', 'dc1', 'r1', [report(1, { replication: '000' }), report(2, { replication: '000' })], 2))
  topo.heartbeat(server('busy', 'dc1', 'r1', [report(3, { replication: '000' })], 10))
  topo.heartbeat(server('idle', 'dc1', 'r1', [], 10))
  t.same(topo.pickServers('000').map((n) => n.url), ['idle'])
  t.same(topo.pickServers('001').map((n) => n.url), ['idle', 'busy'])
  t.equal(codeOfCall(() => topo.pickServers('002')), 'NS_ERR_NO_WRITABLE_VOLUME', 'the full server does not count')
  c.advance(600)
  topo.heartbeat(server('busy', 'dc1', 'r1', [report(3, { replication: '000' })], 10))
  c.advance(600)
  t.same(topo.sweep().map((n) => n.url).sort(), ['full', 'idle'])
  t.same(topo.pickServers('000').map((n) => n.url), ['busy'], 'dead servers get no volumes')
})

t.test('a volume is writable only with every copy alive, writable, healthy and below the size limit', async (t) => {
  const c = clock()
  const topo = new Topology({ deadAfterMs: 1000, volumeBytesMax: 1000, now: c.now })
  const beat = (url: string, over: Partial<VolumeReport> = {}) => topo.heartbeat(server(url, 'dc1', 'r1', [report(7, over)]))
  beat('a')
  beat('b')
  t.same(topo.writable('002', ''), [], 'two of three copies')
  t.match(topo.unwritableReason(topo.volume(7)!), /2 of 3 copies/)
  const peers = beat('c')
  t.same(peers['7']!.sort(), ['a', 'b'], 'a heartbeat answers the other copies')
  t.same(topo.writable('002', ''), [7])
  t.same(topo.writable('002', 'photos'), [], 'another collection')
  t.same(topo.writable('001', ''), [], 'another replication')

  beat('c', { healthy: false })
  t.same(topo.writable('002', ''), [], 'a failed replicated write not reconciled')
  beat('c', { readOnly: true })
  t.same(topo.writable('002', ''), [], 'a read-only copy')
  beat('c', { size: 1000 })
  t.same(topo.writable('002', ''), [], 'full')
  beat('c')
  t.same(topo.writable('002', ''), [7])

  c.advance(800)
  beat('a')
  beat('b')
  c.advance(800)
  t.same(topo.sweep().map((n) => n.url), ['c'])
  t.same(topo.writable('002', ''), [], 'a copy on a dead server')
  t.same(topo.locations(7).map((l) => l.url).sort(), ['a', 'b'], 'reads skip the dead copy')
  t.same(topo.volume(7)!.nodes.map((n) => n.url).sort(), ['a', 'b', 'c'], 'but it stays listed')
  beat('c')
  t.same(topo.writable('002', ''), [7], 'a server that comes back is re-admitted with what it holds')
})

t.test('copies of a placement, from its string or its superblock byte', async (t) => {
  for (const text of ['000', '001', '002', '010', '100', '111', '209', '999']) {
    const p = parsePlacement(text)
    t.equal(copyCountOfByte(placementToByte(p)), copyCount(p), text)
  }
  t.equal(copyCount(parsePlacement('002')), 3)
})
