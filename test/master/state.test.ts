import t from 'tap'
import { MasterState } from '../../src/master/state.js'
import { tempDir, type Teardown } from '../helpers/volume.js'

const stateDir = (t: Teardown) => tempDir(t, 'ns-master-state-')

t.test('keys are never handed out twice, also across restarts that skip the unused lease', async (t) => {
  const dir = await stateDir(t)
  const seen = new Set<number>()
  let handedOut = 0
  let last = 0
  for (let round = 0; round < 3; round++) {
    const state = await MasterState.open(dir, 100)
    for (let i = 0; i < 250; i++) {
      const count = 1 + (i % 3)
      const first = await state.takeKeys(count)
      handedOut += count
      t.ok(first > last, 'keys only grow')
      for (let k = first; k < first + count; k++) {
        if (seen.has(k)) t.fail(`key ${k} handed out twice`)
        seen.add(k)
      }
      last = first + count - 1
    }
    // Closing only releases level's lock; what keeps keys unique is the lease written before
    // any key of it was handed out, which a kill -9 cannot undo.
    await state.close()
  }
  t.equal(seen.size, handedOut)
})

t.test('concurrent takers get disjoint ranges', async (t) => {
  const state = await MasterState.open(await stateDir(t), 7)
  t.teardown(() => state.close())
  const firsts = await Promise.all(Array.from({ length: 200 }, () => state.takeKeys(5)))
  const keys = firsts.flatMap((f) => [0, 1, 2, 3, 4].map((d) => f + d))
  t.equal(new Set(keys).size, keys.length)
})

t.test('volume ids stay above every id a heartbeat reported, across a restart', async (t) => {
  const dir = await stateDir(t)
  let state = await MasterState.open(dir, 10)
  t.same(await state.takeVolumeIds(2), [1, 2])
  state.observeVolumeId(41)
  t.same(await state.takeVolumeIds(1), [42])
  await state.close()
  state = await MasterState.open(dir, 10)
  t.same(await state.takeVolumeIds(1), [43])
  await state.rememberServer({ url: '127.0.0.1:8080', dataCenter: 'dc1', rack: 'r1' })
  await state.close()
  state = await MasterState.open(dir, 10)
  t.same(state.knownServers(), [{ url: '127.0.0.1:8080', dataCenter: 'dc1', rack: 'r1' }])
  await state.close()
})

t.test('the dedup index survives a restart; the newest report for an MD5 wins; layouts are apart', async (t) => {
  const dir = await stateDir(t)
  const md5 = '0123456789abcdef0123456789abcdef'
  let state = await MasterState.open(dir, 10)
  t.equal(await state.dedupGet('', '002', md5), undefined, 'an empty index knows nothing')
  await state.dedupPut([{ collection: '', replication: '002', md5, fid: '3,0112345678', size: 262144 }])
  t.same(await state.dedupGet('', '002', md5), { fid: '3,0112345678', size: 262144 })
  t.equal(await state.dedupGet('photos', '002', md5), undefined, 'another collection is another dedup domain')
  t.equal(await state.dedupGet('', '000', md5), undefined, 'and so is another replication')
  await state.close()
  state = await MasterState.open(dir, 10)
  t.same(await state.dedupGet('', '002', md5), { fid: '3,0112345678', size: 262144 }, 'after a restart')
  await state.dedupPut([{ collection: '', replication: '002', md5, fid: '4,0287654321', size: 262144 }])
  t.same(await state.dedupGet('', '002', md5), { fid: '4,0287654321', size: 262144 }, 'a newer report replaces the entry')
  await state.close()
})
