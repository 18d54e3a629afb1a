/**
 * Checks for option objects: each rejects one field with a precise message, so that a wrong
 * flag or environment variable names itself.
 */
import { NeedleError } from './errors.js'

function fail(name: string, rule: string, value: unknown): never {
  throw new NeedleError('NS_ERR_BAD_OPTION', `${name} must be ${rule} (got ${JSON.stringify(value)})`)
}

export function integer(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(name, `an integer from ${min} to ${max}`, value)
  }
  return value
}

export function fraction(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) fail(name, 'a number from 0 to 1', value)
  return value
}

export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) fail(name, 'a non-empty string', value)
  return value
}

export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) fail(name, `one of ${allowed.join(', ')}`, value)
  return value as T
}

export function optionalString(name: string, value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined
  return nonEmptyString(name, value)
}
