/** The cluster secret on internal and admin routes: `Authorization: Bearer <secret>`. */
import { createHash, timingSafeEqual } from 'node:crypto'
import { NeedleError } from './errors.js'

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** Throws NS_ERR_UNAUTHORIZED unless the header carries the secret (no secret: open). */
export function checkSecret(secret: string | undefined, authorization: string | undefined): void {
  if (secret === undefined) return
  const given = authorization?.startsWith('Bearer ') ? authorization.slice(7) : undefined
  if (given === undefined || !timingSafeEqual(digest(given), digest(secret))) {
    throw new NeedleError('NS_ERR_UNAUTHORIZED', 'this route requires the cluster secret')
  }
}
