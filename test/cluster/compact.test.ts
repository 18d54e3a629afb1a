/**
 * Compaction on a real 3-copy cluster, started through the master's /vol/vacuum while uploads,
 * deletes and reads go on: afterwards every acknowledged upload reads byte-identical on every
 * copy, every acknowledged delete answers 404 on every copy, and the garbage is gone.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { CLI_PATH } from '../helpers/dataserver-process.js'
import { startCluster } from '../helpers/cluster.js'
import { HttpClient, lookup, randomBody } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

t.test('/vol/vacuum compacts every copy while writes, deletes and reads go on', async (t) => {
  const flags = ['--undelete-grace-seconds', '0', '--compact-garbage-threshold', '0', '--compact-bytes-per-second', '1MiB']
  const cluster = await startCluster(t, { dataServers: 3, dataServerArgs: () => flags })
  const http = new HttpClient(t)
  const random = seededRandom(0xc0c0)
  const live = new Map<string, Buffer>()
  const gone = new Set<string>()
  const upload = async () => {
    const a = await cluster.assign()
    const body = randomBody(random, 1000 + Math.floor(random() * 12_000))
    const res = await http.call('POST', `http://${a.url}/${a.fid}`, { body })
    if (res.status === 201) live.set(a.fid, body)
    return res.status
  }
  const remove = async (fid: string) => {
    live.delete(fid)
    const res = await http.call('DELETE', `${cluster.masterUrl}/${fid}`)
    if (res.status === 202) gone.add(fid)
    else live.set(fid, Buffer.alloc(0)) // unknown outcome: not checked either way
    return res.status
  }
  for (let i = 0; i < 150; i++) t.equal(await upload(), 201)
  for (const fid of [...live.keys()].slice(0, 100)) await remove(fid)

  let stop = false
  const failures: string[] = []
  const traffic = (async () => {
    while (!stop) {
      const status = await upload()
      if (status !== 201) failures.push(`upload: ${status}`)
      const fids = [...live.keys()]
      const victim = fids[Math.floor(random() * fids.length)]!
      if (random() < 0.3) await remove(victim)
      const probe = fids[Math.floor(random() * fids.length)]!
      if (live.has(probe)) {
        const res = await http.call('GET', `${cluster.masterUrl}/${probe}`).catch((err: Error) => ({ status: err.message }))
        // A redirect or the file: the master answers 302 for a live file.
        if (res.status !== 302) failures.push(`read ${probe}: ${res.status}`)
      }
    }
  })()
  const vacuum = await http.call('POST', `${cluster.masterUrl}/vol/vacuum?garbageThreshold=0.1&wait=true`, { timeoutMs: 100_000 })
  stop = true
  await traffic
  t.equal(vacuum.status, 200, vacuum.text().slice(0, 300))
  const compacted = vacuum.json<{ overThreshold: number[]; compacted: { volume: number; url: string; status: number }[] }>()
  t.ok(compacted.overThreshold.length > 0, `volumes ${compacted.overThreshold.join(', ')} were over the threshold`)
  t.ok(compacted.compacted.length === 3 * compacted.overThreshold.length && compacted.compacted.every((c) => c.status === 200), 'every copy of each compacted, as /vol/vacuum answers')
  t.same(failures, [], 'no upload or read failed during the compactions')

  const wrong: string[] = []
  for (const [fid, body] of live) {
    if (body.length === 0) continue
    for (const l of (await lookup(http, cluster.masterUrl, fid))!) {
      const res = await http.call('GET', `http://${l.url}/${fid}`)
      if (res.status !== 200 || !res.body.equals(body)) wrong.push(`${fid} on ${l.url}: ${res.status}`)
    }
  }
  for (const fid of gone) {
    for (const l of (await lookup(http, cluster.masterUrl, fid))!) {
      const res = await http.call('GET', `http://${l.url}/${fid}`)
      if (res.status !== 404) wrong.push(`${fid} (deleted) on ${l.url}: ${res.status}`)
    }
  }
  t.same(wrong, [], `${live.size} live files read on every copy, ${gone.size} deleted ones are 404 on every copy`)
  for (const ds of cluster.dataServers) {
    const status = (await http.call('GET', `${ds.url}/status`)).json<{ volumes: { id: number; compactRevision: number; garbageRatio: number }[] }>()
    for (const v of status.volumes.filter((x) => compacted.overThreshold.includes(x.id))) {
      t.equal(v.compactRevision, 1, `${ds.address} volume ${v.id}: compacted once`)
    }
  }

  // The command line: compact one volume on every copy, as JSON.
  const volume = compacted.overThreshold[0]!
  const cli = spawn(process.execPath, [CLI_PATH, 'compact', '--master', cluster.masterUrl, '--volume', String(volume), '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  cli.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => cli.once('exit', resolve))
  t.equal(code, 0, `needlestore compact --volume ${volume} exits 0 ${stderr}`)
  const report = JSON.parse(stdout) as { volumes: number[]; copies: { status: number }[] }
  t.same(report.volumes, [volume])
  t.ok(report.copies.length === 3 && report.copies.every((c) => c.status === 200), 'every copy compacted again')
})
