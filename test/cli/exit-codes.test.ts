import t from 'tap'
import { NeedleError } from '../../src/common/errors.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, batchExitCode, CommandFailed, describeFailure, errorCodeOf, failureText, oneLine, tidyUsageMessage } from '../../src/cli/exit-codes.js'

/** An error shaped like the SDK's NeedleClientError, without importing the SDK. */
function clientError(code: string, message: string): Error {
  const err = new Error(message) as Error & { code: string; statusCode: number | undefined }
  err.name = 'NeedleClientError'
  err.code = code
  err.statusCode = undefined
  return err
}

t.test('the codes scripts rely on', async (t) => {
  t.same([EXIT_OK, EXIT_FAILURE, EXIT_USAGE], [0, 1, 2])
  t.equal(batchExitCode(0), EXIT_OK)
  t.equal(batchExitCode(1), EXIT_FAILURE)
  t.equal(batchExitCode(999), EXIT_FAILURE)
})

t.test('usage mistakes exit 2', async (t) => {
  t.same(describeFailure(new UsageError('no such file or directory: x')), { exitCode: 2, message: 'no such file or directory: x' })
  t.same(describeFailure(new NeedleError('NS_ERR_BAD_FID', 'malformed file id "x"')), { exitCode: 2, message: 'malformed file id "x"' })
  t.same(describeFailure(new NeedleError('NS_ERR_BAD_OPTION', 'timeout must be …')), { exitCode: 2, message: 'timeout must be …' })
  t.same(describeFailure(clientError('NS_ERR_BAD_FID', 'bad fid')), { exitCode: 2, message: 'bad fid' })
})

t.test('failed operations exit 1, from servers, the SDK and the local system', async (t) => {
  t.same(describeFailure(new NeedleError('NS_ERR_NOT_FOUND', 'no such file')), { exitCode: 1, message: 'no such file' })
  t.same(describeFailure(clientError('NS_ERR_PEER_UNREACHABLE', 'cannot reach http://127.0.0.1:1')), { exitCode: 1, message: 'cannot reach http://127.0.0.1:1' })
  t.same(describeFailure(clientError('NS_ERR_SOMETHING_NEW', 'a code this build does not know')), { exitCode: 1, message: 'a code this build does not know' })
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
  t.same(describeFailure(enospc), { exitCode: 1, message: 'ENOSPC: no space left on device, write' })
})

t.test('anything else is a bug: no description, so the caller shows its stack', async (t) => {
  t.equal(describeFailure(new TypeError('x is not a function')), undefined)
  t.equal(describeFailure('a string'), undefined)
  t.equal(describeFailure(undefined), undefined)
  t.equal(describeFailure(Object.assign(new Error('odd'), { code: 'ERR_SOMETHING' })), undefined)
  t.equal(errorCodeOf(Object.assign(new Error('x'), { code: 'NS_ERR_NOT_FOUND' })), 'NS_ERR_NOT_FOUND', 'a known code by shape')
  t.equal(errorCodeOf(Object.assign(new Error('x'), { code: 'NS_ERR_MADE_UP' })), undefined, 'an unknown code on an unknown class')
})

t.test('messages are one line', async (t) => {
  t.equal(oneLine('first\nsecond'), 'first')
  t.equal(oneLine('  padded  '), 'padded')
  t.equal(oneLine('\n\nafter blank lines'), 'after blank lines')
  t.same(describeFailure(new UsageError('two\nlines')), { exitCode: 2, message: 'two' })
})

t.test("yargs' unknown-flag message names each flag once, as typed", async (t) => {
  t.equal(tidyUsageMessage('Unknown arguments: bogus-flag, bogusFlag'), 'Unknown argument: bogus-flag')
  t.equal(tidyUsageMessage('Unknown argument: bogus'), 'Unknown argument: bogus')
  t.equal(tidyUsageMessage('Unknown arguments: a-b, aB, c, dEf'), 'Unknown arguments: a-b, c, dEf')
  t.equal(tidyUsageMessage('Not enough non-option arguments: got 0, need at least 1'), 'Not enough non-option arguments: got 0, need at least 1')
  t.equal(tidyUsageMessage('two\nlines'), 'two')
})

t.test('an unreachable master in plain words; other failures keep the message', async (t) => {
  const master = 'http://127.0.0.1:1'
  t.equal(
    failureText('clusterStatus: GET http://127.0.0.1:1/dir/status: ECONNREFUSED connect ECONNREFUSED 127.0.0.1:1', 'NS_ERR_PEER_UNREACHABLE', master),
    'cannot reach the master at http://127.0.0.1:1: connection refused',
  )
  t.equal(
    failureText('upload of "a.txt": POST http://127.0.0.1:1/dir/assign?count=1&md5=00&size=3: no answer within 3000 ms', 'NS_ERR_PEER_UNREACHABLE', master),
    'cannot reach the master at http://127.0.0.1:1: no answer within 3000 ms',
  )
  t.equal(
    failureText('deleteMany of 1 files: volume 1: GET http://127.0.0.1:1/dir/lookup?volumeId=1: EWHATEVER odd', 'NS_ERR_PEER_UNREACHABLE', master),
    'cannot reach the master at http://127.0.0.1:1: EWHATEVER odd',
    'an unknown system code stays as it came',
  )
  const dataServer = 'download 1,01: GET http://127.0.0.1:8080/1,01: ECONNREFUSED connect ECONNREFUSED 127.0.0.1:8080'
  t.equal(failureText(dataServer, 'NS_ERR_PEER_UNREACHABLE', master), dataServer, 'a data server is not the master')
  t.equal(
    failureText('x: GET http://127.0.0.1:10/dir/status: ECONNREFUSED', 'NS_ERR_PEER_UNREACHABLE', master),
    'x: GET http://127.0.0.1:10/dir/status: ECONNREFUSED',
    'nor is a master on another port that starts the same',
  )
  t.equal(failureText('download: answered 404 NS_ERR_NOT_FOUND: gone', 'NS_ERR_NOT_FOUND', master), 'download: answered 404 NS_ERR_NOT_FOUND: gone')
  t.same(describeFailure(new CommandFailed('cannot reach the master')), { exitCode: 1, message: 'cannot reach the master' })
})
