/**
 * A data server killed (SIGKILL, by NEEDLESTORE_FAULT_COMPACT) at each step of a compaction's
 * commit, then started again: every live file reads byte-identical, no deleted file is back,
 * and the volume is either the old one or the compacted one, with no compaction files left.
 */
import t from 'tap'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { COMPACT_STEPS } from '../../src/dataserver/volume.js'
import { HttpClient, randomBody } from '../helpers/cluster-io.js'
import { createVolume, startDataServerProcess } from '../helpers/dataserver-process.js'
import { seededRandom } from '../helpers/random.js'
import { tempDir } from '../helpers/volume.js'

t.setTimeout(180_000)

const FLAGS = ['--undelete-grace-seconds', '0', '--compact-garbage-threshold', '0']

t.test('a crash at every step of a compaction loses nothing and brings nothing back', async (t) => {
  const http = new HttpClient(t)
  for (const step of COMPACT_STEPS) {
    const dir = await tempDir(t)
    const data = join(dir, 'volumes')
    const random = seededRandom(COMPACT_STEPS.indexOf(step) + 1)
    const server = await startDataServerProcess(data, { args: FLAGS, env: { NEEDLESTORE_FAULT_COMPACT: step } })
    t.teardown(() => server.stop())
    await createVolume(server.url, 1)
    const live = new Map<string, Buffer>()
    const gone: string[] = []
    for (let k = 1; k <= 120; k++) {
      const fid = `1,${k.toString(16)}0000abcd`
      const body = randomBody(random, 1 + Math.floor(random() * 20_000))
      const res = await http.call('POST', `${server.url}/${fid}`, { body })
      if (res.status !== 201) throw new Error(`upload ${fid}: ${res.status} ${res.text()}`)
      live.set(fid, body)
    }
    for (const [i, fid] of [...live.keys()].entries()) {
      if (i % 2 === 0) {
        if ((await http.call('DELETE', `${server.url}/${fid}`)).status !== 202) throw new Error(`delete ${fid}`)
        live.delete(fid)
        gone.push(fid)
      } else if (i % 5 === 0) {
        const body = randomBody(random, 3000)
        if ((await http.call('POST', `${server.url}/${fid}`, { body })).status !== 201) throw new Error(`overwrite ${fid}`)
        live.set(fid, body)
      }
    }

    const answer = await http.call('POST', `${server.url}/admin/volume/compact?volume=1`).then((r) => `answered ${r.status}`, () => 'no answer')
    const exit = await server.stop()
    t.equal(exit.signal, 'SIGKILL', `${step}: the server died in the compaction (${answer})`)

    const again = await startDataServerProcess(data, { args: FLAGS })
    t.teardown(() => again.stop())
    const wrong: string[] = []
    for (const [fid, body] of live) {
      const res = await http.call('GET', `${again.url}/${fid}`)
      if (res.status !== 200 || !res.body.equals(body)) wrong.push(`${fid}: ${res.status}`)
    }
    for (const fid of gone) {
      const res = await http.call('GET', `${again.url}/${fid}`)
      if (res.status !== 404) wrong.push(`${fid} (deleted): ${res.status}`)
    }
    t.same(wrong, [], `${step}: ${live.size} live files read byte-identical, ${gone.length} deleted stay 404`)
    const status = (await http.call('GET', `${again.url}/status`)).json<{ volumes: { compactRevision: number }[] }>()
    const committed = COMPACT_STEPS.indexOf(step) >= COMPACT_STEPS.indexOf('marked')
    t.equal(status.volumes[0]!.compactRevision, committed ? 1 : 0, `${step}: ${committed ? 'rolled forward to the compacted volume' : 'rolled back to the old volume'}`)
    t.same((await readdir(data)).filter((f) => /\.cp[dxc]$/.test(f)), [], `${step}: no compaction files are left`)

    // And a compaction now (without the fault) runs to the end.
    const done = await http.call('POST', `${again.url}/admin/volume/compact?volume=1`)
    t.equal(done.status, 200, `${step}: a compaction after the restart completes: ${done.text()}`)
    await again.stop()
  }
})

t.test('a data server compacts a volume by itself once its garbage passes the threshold', async (t) => {
  const http = new HttpClient(t)
  const dir = await tempDir(t)
  const server = await startDataServerProcess(join(dir, 'volumes'), { args: ['--undelete-grace-seconds', '0', '--compact-garbage-threshold', '0.4', '--compact-check-interval-ms', '100'] })
  t.teardown(() => server.stop())
  await createVolume(server.url, 1)
  const random = seededRandom(99)
  const fids = Array.from({ length: 60 }, (_, k) => `1,${(k + 1).toString(16)}0000abcd`)
  const bodies = new Map<string, Buffer>()
  for (const fid of fids) {
    const body = randomBody(random, 5000)
    t.equal((await http.call('POST', `${server.url}/${fid}`, { body })).status, 201)
    bodies.set(fid, body)
  }
  const revision = async () => (await http.call('GET', `${server.url}/status`)).json<{ volumes: { compactRevision: number; garbageRatio: number }[] }>().volumes[0]!
  for (const fid of fids.slice(0, 20)) await http.call('DELETE', `${server.url}/${fid}`)
  t.equal((await revision()).compactRevision, 0, 'a third deleted is under the threshold: not compacted')
  for (const fid of fids.slice(20, 40)) await http.call('DELETE', `${server.url}/${fid}`)
  const deadline = Date.now() + 20_000
  let v = await revision()
  // It may start while the deletes are still coming, and then again once they pass the threshold.
  while ((v.compactRevision === 0 || v.garbageRatio > 0.4) && Date.now() < deadline) v = await revision()
  t.ok(v.compactRevision >= 1, `two thirds deleted: compacted by itself (revision ${v.compactRevision})`)
  t.ok(v.garbageRatio <= 0.4, `garbage ratio now ${v.garbageRatio}`)
  for (const fid of fids.slice(40)) t.ok((await http.call('GET', `${server.url}/${fid}`)).body.equals(bodies.get(fid)!), `${fid} reads`)
})
