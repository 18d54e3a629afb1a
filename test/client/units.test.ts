/**
 * The SDK's small parts, without servers: the location cache (expiry on an injected clock,
 * least-recently-used eviction, expired entries kept for peek), backoff and Retry-After,
 * option validation, upload input collection under a byte limit, and error mapping.
 */
import { Readable } from 'node:stream'
import t from 'tap'
import { collect } from '../../src/client/body.js'
import { NeedleClientError, answerError } from '../../src/client/errors.js'
import { LocationCache } from '../../src/client/location-cache.js'
import { CLIENT_DEFAULTS, resolveClientOptions } from '../../src/client/options.js'
import { BACKOFF_MS_MAX, backoffMs, parseRetryAfter } from '../../src/client/retry.js'

const loc = (n: number) => [{ url: `10.0.0.${n}:8080`, publicUrl: `pub${n}:8080` }]

t.test('LocationCache: entries expire on the clock; expired ones still peek', async (t) => {
  let now = 0
  const cache = new LocationCache({ ttlMs: 100, entriesMax: 10, now: () => now })
  cache.set(1, loc(1))
  t.same(cache.get(1), loc(1), 'fresh')
  now = 99
  t.same(cache.get(1), loc(1), 'fresh 1 ms before its expiry')
  now = 100
  t.equal(cache.get(1), undefined, 'expired')
  t.same(cache.peek(1), loc(1), 'but peek still has it')
  cache.set(1, loc(2))
  t.same(cache.get(1), loc(2), 'a new set replaces it and starts a new life')
  cache.delete(1)
  t.equal(cache.peek(1), undefined, 'delete forgets it')
  t.throws(() => new LocationCache({ ttlMs: 1, entriesMax: 0, now: () => 0 }), TypeError)
})

t.test('LocationCache: bounded, least recently used first out', async (t) => {
  const cache = new LocationCache({ ttlMs: 1000, entriesMax: 3, now: () => 0 })
  for (const id of [1, 2, 3]) cache.set(id, loc(id))
  cache.get(1)
  cache.set(4, loc(4))
  t.equal(cache.size, 3, 'never more than entriesMax')
  t.equal(cache.peek(2), undefined, 'the least recently used (2) went')
  t.ok(cache.peek(1) && cache.peek(3) && cache.peek(4), '1 (just read), 3 and 4 stay')
  const big = new LocationCache({ ttlMs: 1000, entriesMax: 100_000, now: () => 0 })
  for (let id = 1; id <= 150_000; id++) big.set(id, loc(1))
  t.equal(big.size, 100_000, '100 000 volumes at most')
  t.equal(big.peek(50_000), undefined, 'the oldest went')
  t.ok(big.peek(150_000), 'the newest stayed')
})

t.test('backoff: exponential from the base, with jitter, never past the cap or zero', async (t) => {
  t.equal(backoffMs(0, 50, () => 0), 25, 'the first retry waits half the base at least')
  t.equal(backoffMs(0, 50, () => 0.999_999), 50, 'and the base at most')
  t.equal(backoffMs(3, 50, () => 0.999_999), 400, 'doubling')
  t.equal(backoffMs(30, 50, () => 0.999_999), BACKOFF_MS_MAX, 'capped')
  t.equal(backoffMs(0, 1, () => 0), 1, 'never zero')
  const spread = new Set(Array.from({ length: 50 }, () => backoffMs(2, 100)))
  t.ok(spread.size > 5, 'jittered')
})

t.test('Retry-After: seconds or an HTTP date', async (t) => {
  t.equal(parseRetryAfter('3'), 3000)
  t.equal(parseRetryAfter(['2', '9']), 2000, 'the first of repeated headers')
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000, 'a date')
  t.equal(parseRetryAfter(new Date(1000).toUTCString(), 4000), 0, 'a date past is no wait')
  t.equal(parseRetryAfter('soon'), undefined)
  t.equal(parseRetryAfter(undefined), undefined)
})

t.test('options: defaults, a frozen result, and each bad field named', async (t) => {
  const o = resolveClientOptions({ master: '127.0.0.1:9333' })
  t.equal(o.master, 'http://127.0.0.1:9333', 'host:port becomes a URL')
  t.equal(o.timeoutMs, CLIENT_DEFAULTS.timeoutMs)
  t.equal(o.attemptTimeoutMs, Math.ceil(CLIENT_DEFAULTS.timeoutMs / 3), 'an attempt gets a third of the call')
  t.equal(o.fileBytesMax, 256 * 1024 * 1024, '256 MiB files')
  t.equal(o.locationCacheMax, 100_000)
  t.ok(Object.isFrozen(o), 'frozen')
  t.equal(resolveClientOptions({ master: 'https://m.example:9333/' }).master, 'https://m.example:9333', 'a trailing slash is fine')
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ master: '' }, /master/],
    [{ master: 'http://m/path' }, /master .*without path/],
    [{ master: 'm:1', timeoutMs: 0 }, /timeoutMs must be an integer from 1/],
    [{ master: 'm:1', timeoutMs: 1000, attemptTimeoutMs: 2000 }, /attemptTimeoutMs must be an integer from 1 to 1000/],
    [{ master: 'm:1', retries: 1.5 }, /retries/],
    [{ master: 'm:1', connections: 0 }, /connections/],
    [{ master: 'm:1', secret: '' }, /secret/],
    [{ master: 'm:1', now: 5 }, /now must be a function/],
    [{ master: 'm:1', dispatcher: {} }, /dispatcher/],
  ]
  for (const [input, message] of bad) {
    const err = t.throws(() => resolveClientOptions(input as never)) as unknown as NeedleClientError
    t.equal(err.code, 'NS_ERR_BAD_OPTION', `${JSON.stringify(input)}: ${err.message}`)
    t.match(err.message, message)
  }
})

t.test('collect: bytes, streams and iterables into one Buffer, never past the limit', async (t) => {
  t.same(await collect(Buffer.from('abc'), 3, 'x'), Buffer.from('abc'), 'a Buffer')
  t.same(await collect(new Uint8Array([1, 2]), 3, 'x'), Buffer.from([1, 2]), 'a Uint8Array')
  t.same(await collect(Readable.from([Buffer.from('ab'), Buffer.from('c')]), 3, 'x'), Buffer.from('abc'), 'a Node stream')
  t.same(await collect(Readable.from(['text']), 10, 'x'), Buffer.from('text'), 'string chunks as UTF-8')
  t.same(await collect(Readable.from([]), 10, 'x'), Buffer.alloc(0), 'an empty stream')
  await t.rejects(collect(Buffer.alloc(6), 5, 'upload'), { code: 'NS_ERR_BODY_TOO_LARGE' }, 'bytes over the limit')
  await t.rejects(collect(Readable.from([Buffer.alloc(3), Buffer.alloc(3)]), 5, 'upload'), { code: 'NS_ERR_BODY_TOO_LARGE' }, 'a stream over the limit')
  const failing = new Readable({
    read() {
      this.destroy(new Error('disk gone'))
    },
  })
  await t.rejects(collect(failing, 5, 'upload'), { code: 'NS_ERR_BAD_REQUEST', message: /disk gone/ }, 'a failing source')
  await t.rejects(collect('text' as never, 5, 'upload'), TypeError, 'a string is a programmer mistake')
  await t.rejects(collect((async function* () { yield 5 })() as never, 5, 'upload'), TypeError, 'chunks that are not bytes')
})

t.test('answerError: the server\'s code and status, else a bad gateway', async (t) => {
  const base = { method: 'GET', url: 'http://h/3,01', what: 'download 3,01', fid: '3,01' }
  const own = answerError({ ...base, statusCode: 409, body: Buffer.from('{"error":"in use","code":"NS_ERR_COOKIE_MISMATCH"}') })
  t.same([own.code, own.statusCode, own.fid, own.url], ['NS_ERR_COOKIE_MISMATCH', 409, '3,01', 'http://h/3,01'])
  t.match(own.message, /^download 3,01: GET http:\/\/h\/3,01 answered 409 NS_ERR_COOKIE_MISMATCH: in use$/)
  t.notOk(own.retryable, 'a 4xx is final')
  const future = answerError({ ...base, statusCode: 503, body: Buffer.from('{"error":"x","code":"NS_ERR_SOMETHING_NEW"}') })
  t.equal(future.code, 'NS_ERR_SOMETHING_NEW', 'a code this version does not know is kept')
  t.ok(future.retryable, 'a 5xx is retryable')
  const html = answerError({ ...base, statusCode: 502, body: Buffer.from('<html>proxy</html>') })
  t.same([html.code, html.statusCode], ['NS_ERR_BAD_GATEWAY', 502], 'not JSON: a bad gateway, with the status')
  t.same(answerError({ ...base, statusCode: 404, body: Buffer.alloc(0) }).code, 'NS_ERR_NOT_FOUND', 'no body (HEAD): by status')
  t.same(answerError({ ...base, statusCode: 418, body: Buffer.alloc(0) }).code, 'NS_ERR_BAD_GATEWAY')
})
