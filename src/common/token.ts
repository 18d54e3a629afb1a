/**
 * Write tokens, as in SeaweedFS: an HS256 JWT whose claim `fid` names the file it may write or
 * delete (without the `_d` suffix, so one token covers every id of a `count=N` assign) and whose
 * `exp` bounds its life. The master signs them with the cluster secret; data servers verify.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { NeedleError } from './errors.js'

const HEADER = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
/** A token longer than this is refused before any parsing. */
const TOKEN_CHARS_MAX = 2048

function base64url(text: string | Buffer): string {
  return Buffer.from(text).toString('base64url')
}

function sign(secret: string, signingInput: string): Buffer {
  return createHmac('sha256', secret).update(signingInput).digest()
}

/** The fid a token names: the id without its `_d` suffix or file extension. */
export function tokenSubject(fid: string): string {
  const underscore = fid.lastIndexOf('_')
  const base = underscore > 0 ? fid.slice(0, underscore) : fid
  const dot = base.indexOf('.')
  return dot > 0 ? base.slice(0, dot) : base
}

/** A token for fid valid until nowMs + ttlSeconds. */
export function signToken(secret: string, fid: string, ttlSeconds: number, nowMs = Date.now()): string {
  const payload = base64url(JSON.stringify({ fid: tokenSubject(fid), exp: Math.floor(nowMs / 1000) + ttlSeconds }))
  const input = `${HEADER}.${payload}`
  return `${input}.${sign(secret, input).toString('base64url')}`
}

function unauthorized(why: string): NeedleError {
  return new NeedleError('NS_ERR_UNAUTHORIZED', `write token refused: ${why}`)
}

/** Throws NS_ERR_UNAUTHORIZED unless token is a live HS256 token of secret for fid. */
export function verifyToken(secret: string, token: string | undefined, fid: string, nowMs = Date.now()): void {
  if (!token) throw unauthorized('this write needs the token that /dir/assign returned (Authorization: Bearer <auth>)')
  if (token.length > TOKEN_CHARS_MAX) throw unauthorized('the token is too long')
  const parts = token.split('.')
  if (parts.length !== 3) throw unauthorized('the token is not a JWT')
  const [header, payload, signature] = parts as [string, string, string]
  const expected = sign(secret, `${header}.${payload}`)
  const given = Buffer.from(signature, 'base64url')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unauthorized('bad signature')
  let claims: { fid?: unknown; exp?: unknown }
  let alg: unknown
  try {
    alg = (JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg?: unknown }).alg
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof claims
  } catch {
    throw unauthorized('the token is not valid JSON')
  }
  if (alg !== 'HS256') throw unauthorized('the token is not HS256')
  if (typeof claims.exp !== 'number' || claims.exp * 1000 <= nowMs) throw unauthorized('the token has expired')
  if (claims.fid !== tokenSubject(fid)) throw unauthorized(`the token is for another file id`)
}

/**
 * The credential of `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 9110
 * §11.1): SeaweedFS's own client sends `BEARER`.
 */
export function bearerOf(authorization: string | undefined): string | undefined {
  return authorization !== undefined && /^bearer /i.test(authorization) ? authorization.slice(7).trim() : undefined
}
