/**
 * The SDK over the routes of issue 4, against a real local cluster (a master and three data
 * servers, replication 002):
 *
 * - dedup: the same 256 KiB uploaded twice is stored once (the second upload is a link with a
 *   fid of its own in the same volume, `deduplicated: true`, its own name and type), both read
 *   back; `dedup: false` stores a full copy; with the stored copy deleted the link still reads,
 *   and the next upload (a dedup miss) falls back to the whole file;
 * - deleteMany: live, missing, malformed and unknown-volume fids in one call, each with its
 *   result in input order; the live ones then read 404;
 * - undelete: a deleted file comes back byte for byte with its name and type; undelete of a
 *   live file reports `undeleted: false`; of an unknown one NS_ERR_NOT_FOUND.
 */
import t from 'tap'
import { NeedleClient } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { md5Hex, randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'
import { failure } from '../helpers/client.js'

t.setTimeout(120_000)

const SEED = Number(process.env.NEEDLESTORE_SDK_SEED ?? 0x5d4_0002)
const random = seededRandom(SEED)
t.comment(`seed ${SEED} (NEEDLESTORE_SDK_SEED replays the bodies)`)

const cluster = await startCluster(t, { dataServers: 3 })
const client = new NeedleClient({ master: cluster.masterUrl, timeoutMs: 15_000 })
t.teardown(() => client.close())

/** The same key with another cookie: a fid that names no file. */
function otherCookie(fid: string): string {
  return `${fid.slice(0, -8)}${((parseInt(fid.slice(-8), 16) ^ 0x5a5a_5a5a) >>> 0).toString(16).padStart(8, '0')}`
}


/** Waits until the master's dedup index knows bytes (data servers report stored files in batches). */
async function waitForDedupIndex(data: Buffer): Promise<void> {
  await cluster.waitFor('the dedup index to know the bytes', async () => (await cluster.assign(`md5=${md5Hex(data)}&size=${data.length}`)).dedupOf !== undefined)
}

t.test('dedup: the same bytes twice share one stored copy; dedup:false stores a full copy', async (t) => {
  const data = randomBody(random, 256 * 1024)
  const first = await client.upload(data, { fileName: 'a.bin' })
  t.equal(first.deduplicated, false, 'the first upload stores the bytes')
  await waitForDedupIndex(data)
  const second = await client.upload(data, { fileName: 'b.bin', contentType: 'image/webp' })
  t.equal(second.deduplicated, true, 'the second one is a dedup link')
  t.not(second.fid, first.fid, 'with a fid of its own')
  t.equal(second.fid.split(',')[0], first.fid.split(',')[0], 'in the volume of the stored copy')
  t.same([second.size, second.eTag], [data.length, md5Hex(data)], 'the same size and MD5')
  t.equal(sha256(await client.download(first.fid)), sha256(data), 'the first reads back')
  t.equal(sha256(await client.download(second.fid)), sha256(data), 'the second reads back')
  const info = await client.head(second.fid)
  t.same([info.fileName, info.contentType, info.size], ['b.bin', 'image/webp', data.length], 'the link has its own name and type')

  const full = await client.upload(data, { dedup: false })
  t.equal(full.deduplicated, false, 'dedup:false stores a full copy')
  t.equal(sha256(await client.download(full.fid)), sha256(data), 'which reads back')

  // The stored copy deleted, the link still reads; the index still names the deleted fid, so
  // the next upload is a dedup miss and the SDK sends the whole file to the same fid.
  await client.delete(first.fid)
  t.equal(sha256(await client.download(second.fid)), sha256(data), 'the link reads after the stored copy is deleted')
  const misses = client.stats.dedupMisses
  const third = await client.upload(data)
  t.equal(sha256(await client.download(third.fid)), sha256(data), `an upload after the delete reads back (deduplicated: ${third.deduplicated})`)
  if (!third.deduplicated) t.equal(client.stats.dedupMisses, misses + 1, 'it was a dedup miss, followed by a full upload')
})

t.test('deleteMany: live, missing, malformed and unknown-volume fids, each with its result in input order', async (t) => {
  const stored = await Promise.all(Array.from({ length: 6 }, (_, i) => client.upload(randomBody(random, 1000 + i))))
  const live = stored.map((r) => r.fid)
  const missing = otherCookie(live[0]!)
  const fids = [live[0]!, 'garbage', live[1]!, missing, '999999,01637037d6', live[2]!, live[3]!, '', live[4]!, live[5]!]
  const results = await client.deleteMany(fids)
  t.equal(results.length, fids.length, 'one result per fid')
  t.same(results.map((r) => r.fid), fids, 'in input order')
  for (const [i, fid] of fids.entries()) {
    const r = results[i]!
    if (live.includes(fid)) {
      t.ok(r.ok, `${fid}: deleted (${r.code ?? ''} ${r.error ?? ''})`)
      t.equal(r.size, 1000 + live.indexOf(fid), `${fid}: its size`)
    }
  }
  t.same([results[1]!.ok, results[1]!.code], [false, 'NS_ERR_BAD_FID'], 'a malformed fid: NS_ERR_BAD_FID')
  t.same([results[7]!.ok, results[7]!.code], [false, 'NS_ERR_BAD_FID'], 'an empty fid: NS_ERR_BAD_FID')
  t.ok(results[3]!.ok, `a missing file in a live volume: deleted (deletes are idempotent) ${JSON.stringify(results[3])}`)
  t.same([results[4]!.ok, results[4]!.code], [false, 'NS_ERR_VOLUME_NOT_FOUND'], 'an unknown volume: NS_ERR_VOLUME_NOT_FOUND')
  for (const fid of live) t.equal((await failure(client.download(fid))).code, 'NS_ERR_NOT_FOUND', `${fid} reads 404 afterwards`)
  t.same(await client.deleteMany([]), [], 'an empty list')
})

t.test('undelete restores a deleted file; a live file is left alone; an unknown one is NS_ERR_NOT_FOUND', async (t) => {
  const data = randomBody(random, 4321)
  const { fid } = await client.upload(data, { fileName: 'back.bin', contentType: 'image/gif' })
  await client.delete(fid)
  t.equal((await failure(client.download(fid))).code, 'NS_ERR_NOT_FOUND', 'deleted')
  t.same(await client.undelete(fid), { size: 4321, undeleted: true }, 'undelete answers the size')
  t.equal(sha256(await client.download(fid)), sha256(data), 'the same bytes read back')
  t.same(await client.head(fid).then((i) => [i.contentType, i.fileName]), ['image/gif', 'back.bin'], 'with their type and name')
  t.same(await client.undelete(fid), { size: 4321, undeleted: false }, 'undelete of a live file changes nothing')
  const missing = otherCookie(fid)
  const nothing = await failure(client.undelete(missing))
  t.equal(nothing.code, 'NS_ERR_NOT_FOUND', `nothing to restore: ${nothing.message}`)
})
