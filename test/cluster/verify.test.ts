/**
 * Scrub and verify on a real 3-copy cluster. A byte flipped inside one copy of a file (the
 * server stopped, its `.dat` edited, the server started again): reads of that copy answer 500
 * and never the bad bytes; `needlestore verify` (the compiled CLI, a child process) reports
 * exactly that fid on exactly that copy; `verify --repair` repairs it from a good copy, after
 * which every copy reads byte-identical and a second verify is clean. Then a needle cut off
 * one copy (missing) and a file stored on one copy only (extra) are found and repaired. In a
 * second cluster the background scrubber finds and repairs a flipped byte by itself.
 */
import { spawn } from 'node:child_process'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { NeedleClient } from '../../src/client/index.js'
import { parseFid } from '../../src/common/fid.js'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import { HttpClient, hostOf, lookup, randomBody, volumeOf } from '../helpers/cluster-io.js'
import { CLI_PATH, repoRoot } from '../helpers/dataserver-process.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(240_000)

const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NEEDLESTORE_')))

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

function cli(args: readonly string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: repoRoot(), env: cleanEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString('utf8')))
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`needlestore ${args.join(' ')} did not finish within ${timeoutMs} ms`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

interface Item {
  fid: string
  copy: string
  problem: string
  why: string
  repair?: string
}

interface Report {
  volume: number
  copies: string[]
  checked: number
  counts: Record<string, number>
  damaged: Item[]
  missing: Item[]
  mismatch: Item[]
  extra: Item[]
  deleted: Item[]
  lost: Item[]
  repaired: number
  unrepaired: number
  ok: boolean
}

interface VerifyJson {
  ok: boolean
  volumes: Array<{ volume: number; report?: Report; error?: string }>
}

async function verify(t: Test, cluster: Cluster, ...flags: string[]): Promise<{ run: Run; json: VerifyJson; items: Item[] }> {
  const run = await cli(['verify', '--master', cluster.masterUrl, '--json', ...flags])
  let json: VerifyJson
  try {
    json = JSON.parse(run.stdout) as VerifyJson
  } catch {
    t.fail(`verify ${flags.join(' ')} printed no JSON: ${run.stdout.slice(0, 400)} / ${run.stderr.slice(0, 400)}`)
    throw new Error('no JSON')
  }
  const items = json.volumes.flatMap((v) => (v.report ? [...v.report.damaged, ...v.report.missing, ...v.report.mismatch, ...v.report.extra, ...v.report.deleted, ...v.report.lost] : []))
  return { run, json, items }
}

/** Where fid's live needle lies in a copy's `.dat`: from the last `.idx` entry of its key. */
async function needleOffset(dir: string, fid: string): Promise<{ offset: number; bodySize: number }> {
  const { volumeId, keyHi, keyLo } = parseFid(fid)
  const idx = await readFile(join(dir, `${volumeId}.idx`))
  let found: { offset: number; bodySize: number } | undefined
  for (let at = 0; at + 16 <= idx.length; at += 16) {
    if (idx.readUInt32LE(at) === keyLo && idx.readUInt32LE(at + 4) === keyHi) found = { offset: idx.readUInt32LE(at + 8) * 8, bodySize: idx.readUInt32LE(at + 12) }
  }
  if (!found) throw new Error(`${fid} is not in ${dir}/${volumeId}.idx`)
  return found
}

/** Flips one byte in the middle of fid's data in a stopped copy's `.dat`. */
async function flipDataByte(dir: string, fid: string): Promise<void> {
  const { offset } = await needleOffset(dir, fid)
  const fh = await open(join(dir, `${volumeOf(fid)}.dat`), 'r+')
  try {
    const head = Buffer.alloc(48)
    await fh.read(head, 0, 48, offset)
    const nameLength = head.readUInt8(16 + 1)
    const mimeLength = head.readUInt8(16 + 2)
    const dataSize = head.readUInt32LE(16 + 4)
    const at = offset + 48 + nameLength + mimeLength + Math.floor(dataSize / 2)
    const byte = Buffer.alloc(1)
    await fh.read(byte, 0, 1, at)
    byte[0] = byte[0]! ^ 0x5a
    await fh.write(byte, 0, 1, at)
    await fh.sync()
  } finally {
    await fh.close()
  }
}

interface Stored {
  readonly fid: string
  readonly data: Buffer
}

async function uploadFiles(client: NeedleClient, count: number, seed: number): Promise<Stored[]> {
  const random = seededRandom(seed)
  const files = Array.from({ length: count }, (_, i) => randomBody(random, 2048 + Math.floor(random() * 30_000) + i))
  const results = await client.uploadMany(files.map((data, i) => ({ data, fileName: `f${i}.bin` })), { concurrency: 8 })
  return results.map((r, i) => {
    if (r instanceof Error) throw r
    return { fid: r.fid, data: files[i]! }
  })
}

/** Data server index of each copy of fid's volume. */
async function copiesOf(http: HttpClient, cluster: Cluster, fid: string): Promise<{ index: number; address: string }[]> {
  const locations = await lookup(http, cluster.masterUrl, fid)
  if (!locations || locations.length !== 3) throw new Error(`${fid} has ${locations?.length} live copies`)
  return locations.map((l) => {
    const proc = cluster.dataServerAt(l.url)
    if (!proc) throw new Error(`no data server at ${l.url}`)
    return { index: cluster.dataServers.indexOf(proc), address: hostOf(l.url) }
  })
}

t.test('verify reports a flipped byte, a missing needle and an extra file on exactly their copy, and --repair fixes them', async (t) => {
  const cluster = await startCluster(t, { dataServers: 3, dataServerArgs: () => ['--scrub-bytes-per-second', '0'] })
  const http = new HttpClient(t)
  const client = new NeedleClient({ master: cluster.masterUrl })
  t.teardown(() => client.close())
  const stored = await uploadFiles(client, 50, 0x5c2b)

  const clean = await verify(t, cluster)
  t.equal(clean.run.code, 0, `a fresh cluster verifies clean (${clean.run.stderr})`)
  t.same(clean.items, [], 'no problem anywhere')
  t.equal(clean.json.volumes.reduce((n, v) => n + (v.report?.checked ?? 0), 0), 50, 'every file was checked')

  // One byte flipped in one copy of one file.
  const victim = stored[17]!
  const copies = await copiesOf(http, cluster, victim.fid)
  const bad = copies[1]!
  await cluster.dataServers[bad.index]!.stop()
  await flipDataByte(join(cluster.dir, `dataserver-${bad.index}`), victim.fid)
  await cluster.restartDataServer(bad.index)

  const badRead = await http.call('GET', `http://${bad.address}/${victim.fid}`)
  t.equal(badRead.status, 500, 'the damaged copy answers 500')
  t.equal(badRead.json().code, 'NS_ERR_CORRUPT_NEEDLE')
  t.notOk(badRead.body.includes(victim.data.subarray(0, 64)), 'and none of the file\'s bytes')
  t.ok((await client.download(victim.fid)).equals(victim.data), 'the SDK still reads the file, from a good copy')

  const found = await verify(t, cluster)
  t.equal(found.run.code, 1, 'verify exits 1 when a copy is damaged')
  t.same(found.items.map((i) => [i.fid, i.copy, i.problem]), [[victim.fid, bad.address, 'damaged']], 'exactly that fid, on exactly that copy, is damaged')
  t.equal((await http.call('GET', `http://${bad.address}/${victim.fid}`)).status, 500, 'verify alone repairs nothing')

  const repaired = await verify(t, cluster, '--repair')
  t.equal(repaired.run.code, 0, `verify --repair exits 0 (${repaired.run.stderr})`)
  t.equal(repaired.items.length, 1)
  t.match(repaired.items[0]!.repair, /^copied from /, 'the damaged copy got the file from a good one')
  for (const c of copies) {
    const res = await http.call('GET', `http://${c.address}/${victim.fid}`)
    t.ok(res.status === 200 && res.body.equals(victim.data), `${c.address} reads the file byte-identical`)
  }
  const again = await verify(t, cluster)
  t.equal(again.run.code, 0, 'a second verify is clean')
  t.same(again.items, [])

  // A needle cut off the end of one copy's volume: missing there.
  const vid = volumeOf(victim.fid)
  const inVolume = stored.filter((s) => volumeOf(s.fid) === vid)
  const cutCopy = copies[2]!
  const cutDir = join(cluster.dir, `dataserver-${cutCopy.index}`)
  let last: { fid: string; offset: number } | undefined
  for (const s of inVolume) {
    const { offset } = await needleOffset(cutDir, s.fid)
    if (!last || offset > last.offset) last = { fid: s.fid, offset }
  }
  await cluster.dataServers[cutCopy.index]!.stop()
  const dat = await open(join(cutDir, `${vid}.dat`), 'r+')
  await dat.truncate(last!.offset)
  await dat.close()
  await cluster.restartDataServer(cutCopy.index)
  t.equal((await http.call('GET', `http://${cutCopy.address}/${last!.fid}`)).status, 404, 'the cut copy no longer has the last file')

  // A file stored on one copy only, as a failed write would leave it.
  const extraCopy = copies[0]!
  const orphan = await cluster.assign(`replication=002`)
  const extraFid = `${vid}${orphan.fid.slice(orphan.fid.indexOf(','))}`
  const put = await http.call('POST', `http://${extraCopy.address}/${extraFid}?type=replicate`, { body: Buffer.from('only here') })
  t.equal(put.status, 201, `stored on one copy only (${put.text()})`)

  const recent = await verify(t, cluster, '--volume', String(vid))
  t.equal(recent.run.code, 1, 'fresh differences are reported')
  t.same(
    recent.items.map((i) => [i.fid, i.copy, i.problem]).sort(),
    [[last!.fid, cutCopy.address, 'missing'], [extraFid, extraCopy.address, 'extra']].sort(),
    'the missing and the extra file, each on its copy',
  )
  const settled = await verify(t, cluster, '--volume', String(vid), '--repair', '--settle-seconds', '0')
  t.equal(settled.run.code, 0, `with no settle time, --repair fixes both (${settled.run.stderr} ${JSON.stringify(settled.items)})`)
  const missingFixed = await http.call('GET', `http://${cutCopy.address}/${last!.fid}`)
  t.ok(missingFixed.status === 200 && missingFixed.body.equals(stored.find((s) => s.fid === last!.fid)!.data), 'the missing file is back on its copy')
  t.equal((await http.call('GET', `http://${extraCopy.address}/${extraFid}`)).status, 404, 'the extra file is gone from its copy')
  const final = await verify(t, cluster, '--settle-seconds', '0')
  t.equal(final.run.code, 0, 'and every volume verifies clean')
  t.same(final.items, [])
  for (const s of stored) {
    for (const c of await copiesOf(http, cluster, s.fid)) {
      const res = await http.call('GET', `http://${c.address}/${s.fid}`)
      if (res.status !== 200 || !res.body.equals(s.data)) t.fail(`${s.fid} on ${c.address}: ${res.status}`)
    }
  }
})

t.test('the background scrubber finds a flipped byte by itself and repairs it, on a secured cluster', async (t) => {
  const secret = 'scrub-s3cret'
  const cluster = await startCluster(t, { dataServers: 3, secret, dataServerArgs: () => ['--scrub-bytes-per-second', '64MiB', '--scrub-interval-hours', '0.0003'] })
  const http = new HttpClient(t)
  const client = new NeedleClient({ master: cluster.masterUrl, secret })
  t.teardown(() => client.close())
  const stored = await uploadFiles(client, 20, 0x5c2c)
  const victim = stored[7]!
  const copies = await copiesOf(http, cluster, victim.fid)
  const bad = copies[0]!
  await cluster.dataServers[bad.index]!.stop()
  await flipDataByte(join(cluster.dir, `dataserver-${bad.index}`), victim.fid)
  await cluster.restartDataServer(bad.index)

  let sawBad = false
  await cluster.waitFor('the scrubber to repair the damaged copy', async () => {
    const res = await http.call('GET', `http://${bad.address}/${victim.fid}`)
    if (res.status === 200 && !res.body.equals(victim.data)) t.fail('a read returned bad bytes')
    if (res.status === 500) sawBad = true
    return res.status === 200 && res.body.equals(victim.data)
  }, 60_000)
  t.pass('the damaged copy reads byte-identical again')
  t.comment(`a read saw the damage before the repair: ${sawBad}`)
  const metrics = (await http.call('GET', `http://${bad.address}/metrics`)).text()
  t.match(metrics, /needlestore_scrub_damaged_total [1-9]/, 'the damage is counted')
  t.match(metrics, /needlestore_scrub_repaired_total [1-9]/, 'and so is the repair')
  const after = await verify(t, cluster, '--secret', secret)
  t.equal(after.run.code, 0, `verify with the secret finds every copy whole (${after.run.stderr})`)
  t.equal(after.json.volumes.reduce((n, v) => n + (v.report?.checked ?? 0), 0), 20, 'every file was checked')
  const refused = await cli(['verify', '--master', cluster.masterUrl])
  t.equal(refused.code, 1, 'without the secret verify fails')
  t.match(refused.stderr, /^needlestore: volume \d+: .*secret/m, 'and says the secret is needed')
  const scan = await http.call('GET', `http://${bad.address}/admin/volume/scan?volume=${volumeOf(victim.fid)}`)
  t.equal(scan.status, 401, 'the scan route needs the secret')
})
