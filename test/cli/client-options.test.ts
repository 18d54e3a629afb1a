import t from 'tap'
import { checkFids, clientOptions, masterUrl, positiveInteger } from '../../src/cli/client-options.js'
import { UsageError, describeFailure } from '../../src/cli/exit-codes.js'
import { uploadLine, uploadOptions, uploadText } from '../../src/cli/upload.js'
import { fidFailure } from '../../src/cli/delete.js'

t.test('--master: a URL or host:port, reduced to its origin', async (t) => {
  t.equal(masterUrl('http://127.0.0.1:9333'), 'http://127.0.0.1:9333')
  t.equal(masterUrl('http://127.0.0.1:9333/'), 'http://127.0.0.1:9333')
  t.equal(masterUrl('10.0.0.2:9333'), 'http://10.0.0.2:9333')
  t.equal(masterUrl('https://master.example'), 'https://master.example')
  t.equal(masterUrl('localhost:1'), 'http://localhost:1')
  for (const bad of ['ftp://x', 'http://h:1/path', 'http://h:1/?q=1', 'http://', ':::', 'http://h:99999']) {
    t.throws(() => masterUrl(bad), UsageError, bad)
  }
})

t.test('client options: each flag checked once, empty secret is none', async (t) => {
  t.same(clientOptions({ master: 'm:1' }), { master: 'http://m:1' })
  t.same(clientOptions({ master: 'm:1', secret: 's', timeoutMs: 500 }), { master: 'http://m:1', secret: 's', timeoutMs: 500 })
  t.same(clientOptions({ master: 'm:1', secret: '' }), { master: 'http://m:1' })
  for (const timeoutMs of [0, -1, 1.5, Number.NaN, 3_600_001]) {
    t.throws(() => clientOptions({ master: 'm:1', timeoutMs }), { name: 'UsageError', message: /--timeout-ms/ }, String(timeoutMs))
  }
  t.equal(positiveInteger('--concurrency', 8, 256), 8)
  t.throws(() => positiveInteger('--concurrency', 257, 256), /--concurrency must be an integer from 1 to 256 \(got 257\)/)
})

t.test('fids are checked before anything is sent: a malformed one is a usage error (exit 2)', async (t) => {
  t.same(checkFids(['3,01637037d6', '1,0153272d15_2']), ['3,01637037d6', '1,0153272d15_2'])
  for (const bad of ['zz', '3', '3,', '3,0163703', '0,01637037d6', '3,01637037dz']) {
    let err: unknown
    try {
      checkFids(['3,01637037d6', bad])
    } catch (e) {
      err = e
    }
    t.equal(describeFailure(err)?.exitCode, 2, bad)
    t.match(describeFailure(err)?.message, /malformed file id/, bad)
  }
})

t.test('upload options: checked once for every file', async (t) => {
  t.same(uploadOptions({ dedup: true }), { dedup: true })
  t.same(uploadOptions({ dedup: false, replication: '002', collection: 'pics' }), { dedup: false, replication: '002', collection: 'pics' })
  t.same(uploadOptions({ dedup: true, replication: '', collection: '' }), { dedup: true })
  t.equal(describeFailure(catchOf(() => uploadOptions({ dedup: true, replication: '2' })))?.exitCode, 2)
  t.equal(describeFailure(catchOf(() => uploadOptions({ dedup: true, collection: 'a/b' })))?.exitCode, 2)
  t.equal(describeFailure(catchOf(() => uploadOptions({ dedup: true, collection: 'x'.repeat(25) })))?.exitCode, 2)
})

function catchOf(fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

t.test('result lines', async (t) => {
  const stored = { fid: '3,01637037d6', url: 'http://127.0.0.1:8080/3,01637037d6', size: 5, eTag: 'abc', deduplicated: false }
  t.equal(uploadText('dir/a.txt', stored), '3,01637037d6\tdir/a.txt')
  t.equal(uploadText('dir/b.txt', { ...stored, deduplicated: true }), '3,01637037d6\tdir/b.txt\t(dedup)')
  t.same(uploadLine('dir/a.txt', stored), { path: 'dir/a.txt', ...stored })
  const err = Object.assign(new Error('upload: no writable volume'), { name: 'NeedleClientError', code: 'NS_ERR_NO_WRITABLE_VOLUME', statusCode: 503 })
  t.same(uploadLine('dir/a.txt', err as never), { path: 'dir/a.txt', error: 'upload: no writable volume', code: 'NS_ERR_NO_WRITABLE_VOLUME' })
  t.equal(fidFailure('3,01637037d6', 'gone', 'NS_ERR_NOT_FOUND'), '3,01637037d6: gone (NS_ERR_NOT_FOUND)')
  t.equal(fidFailure('3,01637037d6', 'gone', undefined), '3,01637037d6: gone')
  t.equal(fidFailure('3,01637037d6', 'answered 404 NS_ERR_NOT_FOUND: gone', 'NS_ERR_NOT_FOUND'), '3,01637037d6: answered 404 NS_ERR_NOT_FOUND: gone', 'the code once')
})
