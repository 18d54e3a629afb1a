/**
 * The SDK on a cluster with a secret (three data servers, replication 002):
 *
 * - a client without the secret uploads with the write token assign hands out, and deletes
 *   with the delete token a lookup by fid hands out;
 * - a client with the secret deletes with a token it signs itself, from its location cache
 *   (no lookup per delete);
 * - a client with a wrong secret is refused with the server's NS_ERR_UNAUTHORIZED and 401, at
 *   once (no retries of a 4xx).
 */
import t from 'tap'
import { NeedleClient, isNeedleClientError, type NeedleClientError } from '../../src/index.js'
import { startCluster } from '../helpers/cluster.js'
import { randomBody, sha256 } from '../helpers/cluster-io.js'
import { seededRandom } from '../helpers/random.js'

t.setTimeout(120_000)

const SECRET = 'sdk-test-secret'
const random = seededRandom(0x5d4_0005)

async function failure(p: Promise<unknown>): Promise<NeedleClientError> {
  try {
    await p
  } catch (err) {
    if (isNeedleClientError(err)) return err
    throw err
  }
  throw new Error('expected a NeedleClientError, but the call succeeded')
}

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
