/**
 * The reference to a stored copy that /dir/assign hands to a writer for an MD5 dedup upload
 * (`dedupOf`), and the data server opens again.
 *
 * A fid is what lets anyone read (and, on an open cluster, delete) a file, so a cluster with a
 * secret never shows the stored copy's fid to whoever knows an MD5 and a size: the reference is
 * the fid sealed with AES-256-GCM under a key derived from the cluster secret, bound to the fid
 * it was assigned with (it opens only for that upload). Without a secret the cluster is open
 * anyway, and the reference is the stored fid itself.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { NeedleError } from './errors.js'

const SEALED = 'e1.'
const IV_BYTES = 12
const TAG_BYTES = 16

function keyOf(secret: string): Buffer {
  return createHash('sha256').update(`needlestore dedup reference\0${secret}`).digest()
}

/** The reference to storedFid for an upload to fid. */
export function sealDedupRef(secret: string | undefined, storedFid: string, fid: string): string {
  if (secret === undefined) return storedFid
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', keyOf(secret), iv).setAAD(Buffer.from(fid))
  const sealed = Buffer.concat([iv, cipher.update(storedFid, 'latin1'), cipher.final(), cipher.getAuthTag()])
  return SEALED + sealed.toString('base64url')
}

/** The stored fid a reference names, for an upload to fid; NS_ERR_DEDUP_MISS if it is not one. */
export function openDedupRef(secret: string | undefined, ref: string, fid: string): string {
  if (secret === undefined) return ref
  const bad = () => new NeedleError('NS_ERR_DEDUP_MISS', 'dedupOf is not a reference the master gave for this fid')
  if (!ref.startsWith(SEALED)) throw bad()
  const sealed = Buffer.from(ref.slice(SEALED.length), 'base64url')
  if (sealed.length <= IV_BYTES + TAG_BYTES || sealed.length > 256) throw bad()
  try {
    const decipher = createDecipheriv('aes-256-gcm', keyOf(secret), sealed.subarray(0, IV_BYTES)).setAAD(Buffer.from(fid))
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
    return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]).toString('latin1')
  } catch {
    throw bad()
  }
}
