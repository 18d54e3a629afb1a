/**
 * Parses a single-range `Range: bytes=…` header (RFC 9110 §14.1.2). Multiple ranges are
 * answered with the whole file, which the RFC allows; a syntactically invalid header is ignored.
 */
export type RangeResult =
  | { readonly kind: 'none' }
  | { readonly kind: 'unsatisfiable' }
  | { readonly kind: 'range'; readonly start: number; readonly end: number }

const SINGLE = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'none' }
  const m = SINGLE.exec(header)
  if (!m) return { kind: 'none' }
  const [, first, last] = m as unknown as [string, string, string]
  if (first === '' && last === '') return { kind: 'none' }
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'range', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
  if (last !== '' && Number(last) < start) return { kind: 'none' }
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'range', start, end }
}
