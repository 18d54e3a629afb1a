/**
 * Maps any error a request handler meets to the one JSON error shape every server answers
 * with: `{"error": message, "code": "NS_ERR_…"}` and the code's HTTP status.
 */
import { ErrorCodes, isNeedleError, type ErrorCode } from './errors.js'

export interface ErrorResponse {
  readonly statusCode: number
  readonly body: { readonly error: string; readonly code: ErrorCode }
}

/** Framework error codes that mean the client sent something wrong, by our code. */
const FRAMEWORK_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'NS_ERR_BODY_TOO_LARGE',
  FST_REQ_FILE_TOO_LARGE: 'NS_ERR_BODY_TOO_LARGE',
}

export function toErrorResponse(err: unknown): ErrorResponse {
  if (isNeedleError(err)) return { statusCode: err.statusCode, body: { error: err.message, code: err.code } }
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown } | undefined
  const message = typeof e?.message === 'string' ? e.message : 'unexpected error'
  const mapped = typeof e?.code === 'string' ? FRAMEWORK_CODES[e.code] : undefined
  if (mapped) return { statusCode: ErrorCodes[mapped].statusCode, body: { error: message, code: mapped } }
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { statusCode: e.statusCode, body: { error: message, code: 'NS_ERR_BAD_REQUEST' } }
  }
  return { statusCode: 500, body: { error: message, code: 'NS_ERR_INTERNAL' } }
}
