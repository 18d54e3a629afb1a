import t, { type Test } from 'tap'
import { access, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isNeedleError } from '../../src/common/errors.js'
import { encodeSuperblock } from '../../src/common/format.js'
import { Store, type StoreOptions } from '../../src/dataserver/store.js'
import { CLOCK_MS, codeOf, tempDir, volumeDefaults } from '../helpers/volume.js'

/** A pid no process has: Linux pids stay below 2^22. */
const DEAD_PID = 2147483646

function storeOptions(dir: string, over: Partial<StoreOptions> = {}, log: string[] = []): StoreOptions {
  return { dir, volume: volumeDefaults, volumesMax: 8, log: (m) => log.push(m), ...over }
}

async function openStore(t: Test, dir: string, over: Partial<StoreOptions> = {}, log: string[] = []): Promise<Store> {
  const store = await Store.open(storeOptions(dir, over, log))
  t.teardown(() => store.close())
  return store
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  return undefined
}

t.test('Store.open creates the directory and a LOCK naming this process; close removes it', async (t) => {
  const root = await tempDir(t)
  const dir = join(root, 'a', 'b')
  const store = await Store.open(storeOptions(dir))
  t.equal((await readFile(join(dir, 'LOCK'), 'utf8')).trim(), String(process.pid))
  t.same(store.list(), [])
  t.same(store.broken(), [])
  t.equal(store.dir, dir)
  await store.close()
  t.equal(await exists(join(dir, 'LOCK')), false, 'LOCK removed at close')
  await store.close()
  t.pass('close is idempotent')
})

t.test('a LOCK held by a live other process refuses the open', async (t) => {
  const dir = await tempDir(t)
  t.not(process.ppid, process.pid)
  await writeFile(join(dir, 'LOCK'), `${process.ppid}\n`)
  const err = await errorOf(Store.open(storeOptions(dir)))
  t.ok(isNeedleError(err), `refused with a NeedleError (${String(err)})`)
  t.match(String((err as Error | undefined)?.message), String(process.ppid), 'the message names the owner')
  t.equal((await readFile(join(dir, 'LOCK'), 'utf8')).trim(), String(process.ppid), 'the lock is left to its owner')
})

t.test('a LOCK left by a dead process is taken over', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'LOCK'), `${DEAD_PID}\n`)
  const store = await openStore(t, dir)
  t.equal((await readFile(join(dir, 'LOCK'), 'utf8')).trim(), String(process.pid))
  await store.create(1, 0)
  t.same(store.list().map((v) => v.id), [1])
})

t.test('an empty LOCK (a crash while taking it) is taken over', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'LOCK'), '')
  await openStore(t, dir)
  t.equal((await readFile(join(dir, 'LOCK'), 'utf8')).trim(), String(process.pid))
})

t.test('create, list, get and volume()', async (t) => {
  const dir = await tempDir(t)
  const store = await openStore(t, dir, { volumesMax: 4 })
  t.equal(store.volumesMax, 4)
  for (const id of [3, 1, 2]) await store.create(id, id === 2 ? 1 : 0)
  t.same(store.list().map((v) => v.id), [1, 2, 3], 'listed by id')
  t.same(store.statuses().map((s) => [s.id, s.placement, s.liveCount]), [[1, 0, 0], [2, 1, 0], [3, 0, 0]])
  t.equal(store.volume(2).id, 2)
  t.equal(store.get(2), store.volume(2))
  t.equal(store.get(9), undefined)
  t.equal(await codeOf(Promise.resolve().then(() => store.volume(9))), 'NS_ERR_VOLUME_NOT_FOUND')
  t.equal(await codeOf(store.create(1, 0)), 'NS_ERR_VOLUME_EXISTS')
  const both = await Promise.allSettled([store.create(4, 0), store.create(4, 0)])
  t.same(both.map((r) => r.status).sort(), ['fulfilled', 'rejected'], 'two creates of one id: one wins')
  const lost = both.find((r) => r.status === 'rejected') as PromiseRejectedResult
  t.ok(isNeedleError(lost.reason) && lost.reason.code === 'NS_ERR_VOLUME_EXISTS')
  const full = await errorOf(store.create(5, 0))
  t.ok(isNeedleError(full) && full.statusCode >= 400 && full.statusCode < 500, `past volumesMax: a client error (${String(full)})`)
  t.equal(await exists(join(dir, '5.dat')), false, 'and nothing created')
  t.same(store.list().map((v) => v.id), [1, 2, 3, 4])
})

t.test('volumes come back after a restart', async (t) => {
  const dir = await tempDir(t)
  const first = await Store.open(storeOptions(dir))
  const v = await first.create(7, 0)
  await v.write({ cookie: 1, keyHi: 0, keyLo: 1, data: Buffer.from('hello') })
  await first.create(8, 0)
  await first.close()
  t.equal(await codeOf(v.read(0, 1, 1)), 'NS_ERR_VOLUME_CLOSED', 'closing the store closes its volumes')
  t.equal(await codeOf(first.create(9, 0)), 'NS_ERR_VOLUME_CLOSED', 'a closed store creates nothing')
  const log: string[] = []
  const second = await openStore(t, dir, {}, log)
  t.same(second.list().map((x) => x.id), [7, 8])
  t.same(second.broken(), [])
  t.equal((await second.volume(7).read(0, 1, 1)).data.toString(), 'hello')
})

t.test('leftover <vid>.dat.new files are removed at open and never become volumes', async (t) => {
  const dir = await tempDir(t)
  const first = await Store.open(storeOptions(dir))
  await first.create(1, 0)
  await first.close()
  const sb = encodeSuperblock({ placement: 0, compactRevision: 0, volumeId: 5, createdAtMs: CLOCK_MS, checksumSeed: 7n, collection: '' })
  await writeFile(join(dir, '5.dat.new'), sb)
  await writeFile(join(dir, '1.dat.new'), sb.subarray(0, 10))
  await writeFile(join(dir, 'notes.txt'), 'operator notes')
  const store = await openStore(t, dir)
  const names = (await readdir(dir)).sort()
  t.same(names, ['1.dat', '1.idx', 'LOCK', 'notes.txt'], 'the .dat.new files are gone, other files kept')
  t.same(store.list().map((v) => v.id), [1])
  t.same(store.broken(), [])
  await store.create(5, 0)
  t.same(store.list().map((v) => v.id), [1, 5], 'the interrupted id can be created again')
})

t.test('remove deletes a volume and its files; the id can be created again, also after a crash between the two deletions', async (t) => {
  const dir = await tempDir(t)
  const store = await openStore(t, dir)
  const volume = await store.create(3, 2, 'photos')
  await volume.write({ cookie: 1, keyHi: 0, keyLo: 1, data: Buffer.from('gone soon') })
  await store.remove(3)
  t.equal(store.get(3), undefined)
  t.notOk(await exists(join(dir, '3.dat')))
  t.notOk(await exists(join(dir, '3.idx')))
  t.equal(await codeOf(store.remove(3)), 'NS_ERR_VOLUME_NOT_FOUND')

  // A crash after `.dat` went and before `.idx` did leaves an `.idx` alone: it is never opened,
  // and a new volume of the same id starts empty.
  await writeFile(join(dir, '4.idx'), Buffer.alloc(32, 7))
  await store.close()
  const again = await openStore(t, dir)
  t.same(again.list().map((v) => v.id), [], 'a lone .idx is not a volume')
  const fresh = await again.create(4, 0)
  t.equal(fresh.status().liveCount, 0, 'the new volume starts empty')
  t.equal((await again.create(3, 0)).status().collection, '', 'the removed id is free')
})
