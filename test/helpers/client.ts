/** Helpers for the SDK's tests. */
import { isNeedleClientError, type NeedleClientError } from '../../src/client/index.js'

/** The rejection of p, which must be a NeedleClientError. */
export async function failure(p: Promise<unknown>): Promise<NeedleClientError> {
  try {
    await p
  } catch (err) {
    if (isNeedleClientError(err)) return err
    throw err
  }
  throw new Error('expected a NeedleClientError, but the call succeeded')
}
