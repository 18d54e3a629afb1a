/**
 * Every failure a user or an operator can see is declared here once, with a stable code and
 * the HTTP status it maps to. Codes are API; messages are not. Programmer mistakes (a wrong
 * argument type inside the process) throw TypeError instead and never reach a client as a code.
 */

export const ErrorCodes = {
  NS_ERR_BAD_FID: { statusCode: 400, summary: 'The file id is malformed.' },
  NS_ERR_BAD_REQUEST: { statusCode: 400, summary: 'The request is malformed (body, query or headers).' },
  NS_ERR_BAD_OPTION: { statusCode: 400, summary: 'A configuration option or parameter is invalid.' },
  NS_ERR_UNAUTHORIZED: { statusCode: 401, summary: 'The request lacks a valid secret or token.' },
  NS_ERR_NOT_FOUND: { statusCode: 404, summary: 'No such file (a wrong cookie answers the same).' },
  NS_ERR_VOLUME_NOT_FOUND: { statusCode: 404, summary: 'This server holds no volume with that id.' },
  NS_ERR_REQUEST_TIMEOUT: { statusCode: 408, summary: 'The request was not received in time.' },
  NS_ERR_VOLUME_EXISTS: { statusCode: 409, summary: 'A volume with that id already exists.' },
  NS_ERR_VOLUME_READ_ONLY: { statusCode: 409, summary: 'The volume is read-only (full, or set so by an operator).' },
  NS_ERR_COOKIE_MISMATCH: { statusCode: 409, summary: 'The file exists with another cookie; it may not be overwritten.' },
  NS_ERR_COMPACTING: { statusCode: 409, summary: 'The volume is being compacted already.' },
  NS_ERR_DEDUP_MISS: { statusCode: 409, summary: 'The stored copy a deduplicated upload was to share is gone or differs; upload the whole file to the same fid.' },
  NS_ERR_UNDELETE_EXPIRED: { statusCode: 410, summary: 'The file was deleted longer ago than the undelete grace period; it can no longer be restored.' },
  NS_ERR_BODY_TOO_LARGE: { statusCode: 413, summary: 'The file is larger than the configured limit.' },
  NS_ERR_RANGE_NOT_SATISFIABLE: { statusCode: 416, summary: 'The requested range lies outside the file.' },
  NS_ERR_HEADERS_TOO_LARGE: { statusCode: 431, summary: 'The request headers are larger than the configured limit.' },
  NS_ERR_CORRUPT_NEEDLE: { statusCode: 500, summary: 'The stored copy failed its checksum; it is never served.' },
  NS_ERR_CORRUPT_VOLUME: { statusCode: 500, summary: 'A volume file is damaged beyond automatic recovery.' },
  NS_ERR_IO: { statusCode: 500, summary: 'A disk operation failed.' },
  NS_ERR_INTERNAL: { statusCode: 500, summary: 'An unexpected failure inside the server.' },
  NS_ERR_BAD_GATEWAY: { statusCode: 502, summary: 'Another server of the cluster answered with something unexpected.' },
  NS_ERR_OVERLOADED: { statusCode: 503, summary: 'Too many requests are queued; retry later.' },
  NS_ERR_NOT_READY: { statusCode: 503, summary: 'The master is still learning the cluster from heartbeats; retry shortly.' },
  NS_ERR_NO_WRITABLE_VOLUME: { statusCode: 503, summary: 'No volume can take the write, and none could be created for its replication and collection.' },
  NS_ERR_VOLUME_UNAVAILABLE: { statusCode: 503, summary: 'Not every replica of the volume is known and alive; it takes no writes until it is whole.' },
  NS_ERR_REPLICATION_FAILED: { statusCode: 503, summary: 'A replica did not store the write or delete; nothing was acknowledged. Retry with a new fid.' },
  NS_ERR_PEER_UNREACHABLE: { statusCode: 503, summary: 'Another server of the cluster did not answer in time.' },
  NS_ERR_VOLUME_CLOSED: { statusCode: 503, summary: 'The volume is closing or closed.' },
  NS_ERR_DISK_FULL: { statusCode: 507, summary: 'The disk is full; nothing was written.' },
} as const satisfies Record<string, { statusCode: number; summary: string }>

export type ErrorCode = keyof typeof ErrorCodes

/** The one error class the project throws for expected failures. */
export class NeedleError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'NeedleError'
    this.code = code
    this.statusCode = ErrorCodes[code].statusCode
  }
}

/**
 * True for a NeedleError, also one thrown by another copy of this package (the check looks at
 * the shape, not the prototype).
 */
export function isNeedleError(err: unknown): err is NeedleError {
  return (
    err instanceof Error &&
    err.name === 'NeedleError' &&
    typeof (err as NeedleError).code === 'string' &&
    (err as NeedleError).code in ErrorCodes
  )
}

/** Maps an operating-system error from a disk operation to a NeedleError, keeping it as cause. */
export function diskError(err: unknown, what: string): NeedleError {
  if (isNeedleError(err)) return err
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new NeedleError('NS_ERR_DISK_FULL', `${what}: the disk is full`, { cause: err })
  }
  const detail = err instanceof Error ? err.message : String(err)
  return new NeedleError('NS_ERR_IO', `${what}: ${detail}`, { cause: err })
}
