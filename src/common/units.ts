import { NeedleError } from './errors.js'

const UNITS: Readonly<Record<string, number>> = {
  '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
}

/** Parses a byte count such as `1048576`, `64KiB`, `8GiB` or `1.5MB`. */
export function parseBytes(name: string, value: string | number): number {
  if (typeof value === 'number') return value
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value)
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) {
    throw new NeedleError('NS_ERR_BAD_OPTION', `${name} must be a byte count such as 1048576, 64KiB or 8GiB (got ${JSON.stringify(value)})`)
  }
  return Math.round(Number(m[1]) * unit)
}
