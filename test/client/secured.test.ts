/**
 * The SDK on a cluster with a secret (three data servers, replication 002):
 *
 * - a client without the secret uploads with the write token assign hands out, and deletes
 *   with the delete token a lookup by fid hands out;
 * - a client with the secret deletes with a token it signs itself, from its location cache
 *   (no lookup per delete);
 * - a client with a wrong secret is refused with the server's NS_ERR_UNAUTHORIZED and 401, at
 *   once (no retries of a 4xx);
 * - dedup works with the sealed references a secured master hands out;
 * - deleteMany: with the secret as Bearer, and without it (the fids the server refuses are
 *   sent again with delete tokens from the master);
 * - undelete needs the secret: without it NS_ERR_UNAUTHORIZED, with it the file comes back.
 */
import t from 'tap'
import { NeedleClient } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { md5Hex, randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'
import { failure } from '../helpers/client.js'

t.setTimeout(120_000)

const SECRET = 'sdk-test-secret'
const random = seededRandom(0x5d4_0005)

const cluster = await startCluster(t, { dataServers: 3, secret: SECRET })

t.test('without the secret: write tokens from assign, delete tokens from lookup', async (t) => {
  const plain = new NeedleClient({ master: cluster.masterUrl })
  t.teardown(() => plain.close())
  const data = randomBody(random, 40_000)
  const { fid } = await plain.upload(data, { fileName: 'secured.bin' })
  t.equal(sha256(await plain.download(fid)), sha256(data), 'the upload reads back (reads need no token)')
  const lookups = plain.stats.masterLookups
  t.same(await plain.delete(fid), { size: 40_000 }, 'delete succeeds with the token from the lookup')
  t.equal(plain.stats.masterLookups, lookups + 1, 'one lookup by fid for the delete')
  t.equal((await failure(plain.download(fid))).code, 'NS_ERR_NOT_FOUND', 'the file is gone')
})

t.test('with the secret: the client signs its own delete token', async (t) => {
  const admin = new NeedleClient({ master: cluster.masterUrl, secret: SECRET })
  t.teardown(() => admin.close())
  const data = randomBody(random, 5000)
  const { fid } = await admin.upload(data)
  await admin.download(fid)
  const lookups = admin.stats.masterLookups
  t.same(await admin.delete(fid), { size: 5000 }, 'delete succeeds')
  t.equal(admin.stats.masterLookups, lookups, 'no lookup: the location came from the cache, the token from the secret')
  t.equal((await failure(admin.download(fid))).code, 'NS_ERR_NOT_FOUND', 'the file is gone')
})

t.test('a wrong secret is refused at once with the server\'s code', async (t) => {
  const plain = new NeedleClient({ master: cluster.masterUrl })
  t.teardown(() => plain.close())
  const { fid } = await plain.upload(randomBody(random, 100))
  const wrong = new NeedleClient({ master: cluster.masterUrl, secret: 'not-the-secret' })
  t.teardown(() => wrong.close())
  const err = await failure(wrong.delete(fid))
  t.equal(err.code, 'NS_ERR_UNAUTHORIZED', err.message)
  t.equal(err.statusCode, 401)
  t.equal(err.attempts, 1, 'a 4xx is not retried')
  t.equal((await plain.download(fid)).length, 100, 'the file is still there')
})

t.test('dedup with sealed references', async (t) => {
  const plain = new NeedleClient({ master: cluster.masterUrl })
  t.teardown(() => plain.close())
  const data = randomBody(random, 128 * 1024)
  const first = await plain.upload(data)
  await cluster.waitFor('the dedup index to know the bytes', async () => {
    const dedupOf = (await cluster.assign(`md5=${md5Hex(data)}&size=${data.length}`)).dedupOf
    return dedupOf !== undefined && !dedupOf.includes(first.fid) && dedupOf
  })
  const second = await plain.upload(data)
  t.equal(second.deduplicated, true, 'the second upload is a link (the reference is opaque to the client)')
  t.equal(sha256(await plain.download(second.fid)), sha256(data), 'and reads back')
})

t.test('deleteMany with and without the secret; undelete needs it', async (t) => {
  const plain = new NeedleClient({ master: cluster.masterUrl })
  t.teardown(() => plain.close())
  const admin = new NeedleClient({ master: cluster.masterUrl, secret: SECRET })
  t.teardown(() => admin.close())
  const upload = async (n: number) => Promise.all(Array.from({ length: n }, (_, i) => plain.upload(randomBody(random, 100 + i))))

  const mine = await upload(4)
  const lookups = plain.stats.masterLookups
  const results = await plain.deleteMany(mine.map((r) => r.fid))
  t.same(results.map((r) => [r.fid, r.ok, r.size]), mine.map((r) => [r.fid, true, r.size]), `without the secret every fid is deleted (${JSON.stringify(results.filter((r) => !r.ok))})`)
  t.ok(plain.stats.masterLookups - lookups >= mine.length, 'with a delete token from the master for each')
  for (const r of mine) t.equal((await failure(plain.download(r.fid))).code, 'NS_ERR_NOT_FOUND', `${r.fid} is gone`)

  const refused = await failure(plain.undelete(mine[0]!.fid))
  t.same([refused.code, refused.statusCode], ['NS_ERR_UNAUTHORIZED', 401], `undelete without the secret: ${refused.message}`)
  t.same(await admin.undelete(mine[0]!.fid), { size: mine[0]!.size, undeleted: true }, 'with it the file comes back')
  t.equal((await plain.download(mine[0]!.fid)).length, mine[0]!.size, 'and reads')

  const theirs = await upload(3)
  const adminLookups = admin.stats.masterLookups
  const deleted = await admin.deleteMany([...theirs.map((r) => r.fid), mine[0]!.fid])
  t.ok(deleted.every((r) => r.ok), `with the secret as Bearer every fid is deleted (${JSON.stringify(deleted.filter((r) => !r.ok))})`)
  t.ok(admin.stats.masterLookups - adminLookups <= 2, 'with no token lookups (one location lookup per volume at most)')
  for (const r of theirs) t.equal((await failure(admin.download(r.fid))).code, 'NS_ERR_NOT_FOUND', `${r.fid} is gone`)

  const wrong = new NeedleClient({ master: cluster.masterUrl, secret: 'not-the-secret' })
  t.teardown(() => wrong.close())
  const victim = (await upload(1))[0]!
  const [r] = await wrong.deleteMany([victim.fid])
  t.same([r!.ok, r!.code], [false, 'NS_ERR_UNAUTHORIZED'], `a wrong secret: the fid fails with the server's code (${r!.error})`)
  t.equal((await plain.download(victim.fid)).length, victim.size, 'and the file stays')
})
