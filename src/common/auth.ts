/** The cluster secret on internal and admin routes: `Authorization: Bearer <secret>`. */
import { createHash, timingSafeEqual } from 'node:crypto'
import { NeedleError } from './errors.js'
import { bearerOf } from './token.js'

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** True when the header carries the secret, or no secret is set. */
export function hasSecret(secret: string | undefined, authorization: string | undefined): boolean {
  if (secret === undefined) return true
  const given = bearerOf(authorization)
  return given !== undefined && timingSafeEqual(digest(given), digest(secret))
}

/** Throws NS_ERR_UNAUTHORIZED unless the header carries the secret (no secret: open). */
export function checkSecret(secret: string | undefined, authorization: string | undefined): void {
  if (!hasSecret(secret, authorization)) throw new NeedleError('NS_ERR_UNAUTHORIZED', 'this route requires the cluster secret')
}

/** Headers that carry the secret on an internal call (none when no secret is set). */
export function secretHeaders(secret: string | undefined): Record<string, string> {
  return secret === undefined ? {} : { authorization: `Bearer ${secret}` }
}
