import t from 'tap'
import { NeedleError } from '../../src/common/errors.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, batchExitCode, describeFailure, errorCodeOf, oneLine } from '../../src/cli/exit-codes.js'

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
