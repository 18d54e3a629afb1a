/**
 * Exit codes scripts can rely on, and the one place that maps an error to a code and a single
 * line for stderr. A user's mistake or a failed operation never prints a stack trace; an error
 * this module does not recognise is a bug, and describeFailure leaves it to the caller to throw.
 */
import { ErrorCodes } from '../common/errors.js'

/** Every operation succeeded. */
export const EXIT_OK = 0
/** An operation failed (for batches: at least one item failed, after all the others ran). */
export const EXIT_FAILURE = 1
/** The command line was wrong: a bad flag, a path that does not exist, a malformed fid. */
export const EXIT_USAGE = 2

/** A mistake on the command line found by a command itself (yargs finds the others). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** A failure a command found and already put in words (exit 1). */
export class CommandFailed extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'CommandFailed'
  }
}

/** Error codes that say the command line was wrong, not that the cluster failed. */
const USAGE_CODES: ReadonlySet<string> = new Set(['NS_ERR_BAD_OPTION', 'NS_ERR_BAD_FID'])

/** Codes of the operating system that name a local failure worth one line (not a bug). */
const SYSTEM_CODES: ReadonlySet<string> = new Set([
  'ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'EEXIST', 'ENOSPC', 'EDQUOT', 'EROFS', 'EIO',
  'EMFILE', 'ENFILE', 'EPIPE', 'EADDRINUSE', 'EXDEV', 'ENAMETOOLONG', 'ELOOP',
])

export interface Failure {
  readonly exitCode: number
  /** One line, without the `needlestore: ` prefix. */
  readonly message: string
}

/**
 * A needlestore error from any layer: the servers' and common code's NeedleError, or the SDK's
 * NeedleClientError. Recognised by shape, not prototype, so two copies of the package (or the
 * SDK's own class) both pass.
 */
export function errorCodeOf(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined
  const code = (err as { code?: unknown }).code
  if (typeof code !== 'string' || !code.startsWith('NS_ERR_')) return undefined
  return err.name === 'NeedleError' || err.name === 'NeedleClientError' || code in ErrorCodes ? code : undefined
}

/** The first line of a message: a multi-line server answer must not break the one-line rule. */
export function oneLine(text: string): string {
  const line = text.split(/\r?\n/, 1)[0]!.trim()
  return line.length > 0 ? line : text.trim().replace(/\s+/g, ' ')
}

/**
 * What the process should exit with and say for err, or undefined when err is not an expected
 * failure (a bug: the caller rethrows it so that its stack is seen).
 */
export function describeFailure(err: unknown): Failure | undefined {
  if (err instanceof UsageError) return { exitCode: EXIT_USAGE, message: oneLine(err.message) }
  if (err instanceof CommandFailed) return { exitCode: EXIT_FAILURE, message: oneLine(err.message) }
  const code = errorCodeOf(err)
  if (code !== undefined) {
    return { exitCode: USAGE_CODES.has(code) ? EXIT_USAGE : EXIT_FAILURE, message: oneLine((err as Error).message) }
  }
  const sysCode = (err as NodeJS.ErrnoException | undefined)?.code
  if (err instanceof Error && typeof sysCode === 'string' && SYSTEM_CODES.has(sysCode)) {
    return { exitCode: EXIT_FAILURE, message: oneLine(err.message) }
  }
  return undefined
}

/** The exit code of a batch command: failure when any of its items failed. */
export function batchExitCode(failed: number): number {
  return failed > 0 ? EXIT_FAILURE : EXIT_OK
}

/**
 * yargs names an unknown flag twice, as typed and in camelCase (`Unknown arguments: bogus-flag,
 * bogusFlag`); this keeps the spelling the user typed.
 */
export function tidyUsageMessage(message: string): string {
  const m = /^(Unknown arguments?): (.*)$/s.exec(message)
  if (!m) return oneLine(message)
  const names = m[2]!.split(', ')
  const camel = (s: string) => s.replace(/-+([a-z0-9])/g, (_, c: string) => c.toUpperCase())
  const typed = new Set(names.filter((n) => n.includes('-')).map(camel))
  const kept = names.filter((n) => n.includes('-') || !typed.has(n))
  return oneLine(`${kept.length === 1 ? 'Unknown argument' : 'Unknown arguments'}: ${kept.join(', ')}`)
}

/** Words for the system codes a connection fails with. */
const CONNECT_WORDS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_SOCKET: 'connection failed',
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * One line for a failure from the SDK. A request to the master that got no answer reads
 * `cannot reach the master at http://host:port: connection refused` (the SDK's own message
 * names the method it was in and the route, which tells an operator nothing more); anything
 * else keeps the SDK's message.
 */
export function failureText(message: string, code: string | undefined, master: string): string {
  if (code === 'NS_ERR_PEER_UNREACHABLE') {
    const m = new RegExp(`[A-Z]+ ${escapeRegExp(master)}/\\S*: (.*)$`, 's').exec(message)
    if (m) {
      const why = oneLine(m[1]!)
      const sysCode = /^([A-Z][A-Z_]+)\b/.exec(why)?.[1]
      const words = sysCode === undefined ? undefined : CONNECT_WORDS[sysCode]
      return `cannot reach the master at ${master}: ${words ?? why}`
    }
  }
  return oneLine(message)
}
