/**
 * Volume copy between two data servers in this process (no master, unreplicated volumes): the
 * routes a source serves, a copy with writes going on at the source (a tail to pull), the copy
 * byte-identical and serving every file, and the refusals (the volume exists, no such volume,
 * the secret missing). A copy that fails leaves nothing behind.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import t from 'tap'
import { formatFid } from '../../src/common/fid.js'
import { startDataServer, type DataServer } from '../../src/dataserver/server.js'
import { Store } from '../../src/dataserver/store.js'
import { bytesFrom, tempDir, volumeDefaults, type Teardown } from '../helpers/volume.js'

const SECRET = 'copy-s3cret'
const AUTH = { authorization: `Bearer ${SECRET}` }
const VID = 7

async function server(t: Teardown): Promise<DataServer> {
  const s = await startDataServer({ dir: await tempDir(t), host: '127.0.0.1', port: 0, secret: SECRET, log: () => {} })
  t.teardown(() => s.close())
  return s
}

async function call(method: 'GET' | 'POST', url: string, headers: Record<string, string> = AUTH): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  const res = await request(url, { method, headers })
  return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), headers: res.headers }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('a volume is copied with writes going on, verified, and serves every file', async (t) => {
  const a = await server(t)
  const b = await server(t)
  const volume = await a.store.create(VID, 0)
  const files = new Map<string, Buffer>()
  const write = async (key: number, size: number) => {
    const data = bytesFrom(size, key)
    await volume.write({ cookie: 0x1234, keyHi: 0, keyLo: key, data })
    files.set(formatFid({ volumeId: VID, keyHi: 0, keyLo: key, cookie: 0x1234 }), data)
  }
  for (let k = 1; k <= 300; k++) await write(k, 20_000 + k)
  await volume.delete(0, 5, 0x1234)
  files.delete(formatFid({ volumeId: VID, keyHi: 0, keyLo: 5, cookie: 0x1234 }))

  // The source's routes: committed bytes from an offset, bounded by limit, and a digest.
  const part = await call('GET', `${a.url}/admin/volume/file?volume=${VID}&kind=dat&offset=8&limit=100`)
  t.equal(part.status, 200)
  t.equal(part.body.length, 100)
  t.same(part.body, (await readFile(join(a.store.dir, `${VID}.dat`))).subarray(8, 108), 'bytes 8 … 107 of .dat')
  t.equal(Number(part.headers['x-needlestore-committed-bytes']), volume.datBytes)
  t.equal((await call('GET', `${a.url}/admin/volume/file?volume=${VID}&kind=dat&offset=${volume.datBytes + 1}`)).status, 416, 'past the end: 416')
  t.equal((await call('GET', `${a.url}/admin/volume/file?volume=${VID}&kind=dat`, {})).status, 401, 'the secret is required')
  t.equal((await call('GET', `${a.url}/admin/volume/file?volume=${VID}&kind=x`)).status, 400)
  const digest = JSON.parse((await call('GET', `${a.url}/admin/volume/digest?volume=${VID}`)).body.toString()) as Record<string, unknown>
  t.match(digest, { volume: VID, replication: '000', collection: '', datBytes: volume.datBytes, idxBytes: volume.idxBytes, liveCount: 299, deletedCount: 1 })
  t.equal(digest.datSha256, sha(await readFile(join(a.store.dir, `${VID}.dat`))), 'the digest hashes .dat')
  const quick = JSON.parse((await call('GET', `${a.url}/admin/volume/digest?volume=${VID}&sha=false`)).body.toString()) as Record<string, unknown>
  t.equal(quick.datSha256, '', 'sha=false: no hash')

  // Writes go on at the source while the copy runs: the copy pulls the tail until caught up.
  let writing = true
  let key = 1000
  const writer = (async () => {
    while (writing && key < 1400) await write(key++, 30_000)
  })()
  const copy = await call('POST', `${b.url}/admin/volume/copy?volume=${VID}&from=${a.url.replace('http://', '')}&replication=000&collection=`)
  writing = false
  await writer
  t.equal(copy.status, 201, `copied: ${copy.body.toString()}`)
  const result = JSON.parse(copy.body.toString()) as { datBytes: number; liveCount: number; datSha256: string; tailRounds: number }
  t.comment(`${result.datBytes} bytes, ${result.liveCount} files, ${result.tailRounds} tail passes; ${key - 1000} files written meanwhile`)

  const copied = b.store.volume(VID)
  t.equal(copied.datBytes, result.datBytes)
  t.equal(copied.liveCount, result.liveCount)
  const datA = (await readFile(join(a.store.dir, `${VID}.dat`))).subarray(0, result.datBytes)
  const datB = await readFile(join(b.store.dir, `${VID}.dat`))
  t.equal(sha(datB), sha(datA), '.dat is byte-identical to the source up to the copied length')
  t.equal(sha(datB), result.datSha256)
  const idxA = (await readFile(join(a.store.dir, `${VID}.idx`))).subarray(0, copied.idxBytes)
  t.equal(sha(await readFile(join(b.store.dir, `${VID}.idx`))), sha(idxA), '.idx too')

  // The copy is the source as of its digest: every file from before the copy, and the first
  // of those written meanwhile.
  const problems: string[] = []
  let later = 0
  for (const [fid, data] of files) {
    const key = Number.parseInt(fid.split(',')[1]!.slice(0, -8), 16)
    const res = await call('GET', `${b.url}/${fid}`, {})
    const ok = res.status === 200 && res.body.equals(data)
    if (key >= 1000) {
      if (ok) later++
      else if (res.status !== 404) problems.push(`${fid}: ${res.status}`)
    } else if (!ok) problems.push(`${fid}: ${res.status}`)
  }
  t.same(problems, [], 'every file written before the copy reads back from the copy')
  t.equal(299 + later, copied.liveCount, `and ${later} of the files written meanwhile, as the digest counted`)
  t.equal((await call('GET', `${b.url}/${formatFid({ volumeId: VID, keyHi: 0, keyLo: 5, cookie: 0x1234 })}`, {})).status, 404, 'the deleted file stays deleted')

  // Refusals: the volume exists here; no such volume there; nothing left behind.
  const again = await call('POST', `${b.url}/admin/volume/copy?volume=${VID}&from=${a.url.replace('http://', '')}`)
  t.equal(again.status, 409, 'a volume this server holds is not copied again')
  const missing = await call('POST', `${b.url}/admin/volume/copy?volume=99&from=${a.url.replace('http://', '')}`)
  t.equal(missing.status, 502, `no volume 99 at the source: ${missing.body.toString()}`)
  t.notOk(b.store.get(99), 'nothing served')
  t.same((await readdir(b.store.dir)).filter((n) => n.startsWith('99.')), [], 'and no file left')
  t.equal((await call('POST', `${b.url}/admin/volume/copy?volume=8&from=${a.url.replace('http://', '')}`, {})).status, 401, 'the secret is required')
})

t.test('files of a copy a crash interrupted are removed at the next start', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, '3.dat.copying'), 'partial')
  await writeFile(join(dir, '3.idx.copying'), 'partial')
  const store = await Store.open({ dir, volumesMax: 4, log: () => {}, volume: volumeDefaults })
  t.teardown(() => store.close())
  t.same((await readdir(dir)).filter((n) => n.includes('copying')), [], 'no *.copying file is left')
  t.same(store.list(), [])
})
