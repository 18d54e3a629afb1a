/**
 * What every client command shares: the flags that reach the cluster (`--master`, `--secret`,
 * `--timeout-ms`, `--json`), the SDK options built from them once, and runClientCommand, which
 * makes the client, runs a command with it, closes it and sets the exit code. Commands only
 * parse and wire; the SDK does the work.
 */
import type { ArgumentsCamelCase, Argv } from 'yargs'
import { NeedleClient, type NeedleClientOptions } from '../client/index.js'
import { parseFid } from '../common/fid.js'
import { CommandFailed, UsageError, errorCodeOf, failureText, oneLine } from './exit-codes.js'

export const DEFAULT_MASTER = 'http://127.0.0.1:9333'

/** Longest --timeout-ms accepted: an hour. */
const TIMEOUT_MS_MAX = 3_600_000

export interface ClientArgs {
  master: string
  secret?: string
  timeoutMs?: number
  json: boolean
}

/** Adds the client flags to a command's builder. Environment: NEEDLESTORE_MASTER and so on. */
export function clientFlags<T>(y: Argv<T>) {
  return y
    .option('master', { type: 'string', default: DEFAULT_MASTER, describe: 'the master, http://host:port or host:port', group: 'Cluster:' })
    .option('secret', { type: 'string', describe: 'cluster secret (undelete, and deletes on a secured cluster, need it)', group: 'Cluster:' })
    .option('timeout-ms', { type: 'number', describe: 'deadline of each call to the cluster, its retries included (default 10000)', group: 'Cluster:' })
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON on stdout' })
}

/** `http://host:port` for a master given as a URL or as host:port; a UsageError otherwise. */
export function masterUrl(text: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`
  let url: URL
  try {
    url = new URL(withScheme)
  } catch {
    throw new UsageError(`--master must be http://host:port or host:port (got ${JSON.stringify(text)})`)
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw new UsageError(`--master must be http://host:port or host:port (got ${JSON.stringify(text)})`)
  }
  return url.origin
}

/** The SDK's options from the flags, each checked once with a message naming the flag. */
export function clientOptions(args: Pick<ClientArgs, 'master' | 'secret' | 'timeoutMs'>): NeedleClientOptions {
  return {
    master: masterUrl(args.master),
    ...(args.secret === undefined || args.secret === '' ? {} : { secret: args.secret }),
    ...(args.timeoutMs === undefined ? {} : { timeoutMs: positiveInteger('--timeout-ms', args.timeoutMs, TIMEOUT_MS_MAX) }),
  }
}

/** Checks every fid before anything is sent, so a typo fails the whole command with exit 2. */
export function checkFids(fids: readonly string[]): string[] {
  return fids.map((fid) => {
    parseFid(String(fid))
    return String(fid)
  })
}

/** A positive integer flag, or a UsageError naming it. */
export function positiveInteger(flag: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new UsageError(`${flag} must be an integer from 1 to ${max} (got ${String(value)})`)
  }
  return value
}

/** What a command writes to: stdout for results, stderr for notes, progress and failures. */
export interface Output {
  readonly stdout: NodeJS.WriteStream
  readonly stderr: NodeJS.WriteStream
  /** One line on stdout. */
  line(text: string): void
  /** One `needlestore: <text>` line on stderr. */
  note(text: string): void
  /** JSON on stdout, followed by a newline. */
  json(value: unknown): void
}

export function processOutput(): Output {
  const { stdout, stderr } = process
  return {
    stdout,
    stderr,
    line: (text) => void stdout.write(`${text}\n`),
    note: (text) => void stderr.write(`needlestore: ${text}\n`),
    json: (value) => void stdout.write(`${JSON.stringify(value, null, 2)}\n`),
  }
}

/** What a client command works with, built once from the shared flags. */
export interface CommandContext {
  readonly client: NeedleClient
  readonly out: Output
  /** The master's origin, `http://host:port`. */
  readonly master: string
  /** One line for a failure from the SDK (friendlier for an unreachable master). */
  explain(failure: { readonly message?: string | undefined; readonly error?: string | undefined; readonly code?: string | undefined }): string
}

/**
 * Runs a client command: the options are checked before the client is made, the client is
 * closed however the command ends, and the exit code the command returns becomes the
 * process's. A thrown error goes on to the entry point, which prints it as one line.
 */
export async function runClientCommand<A extends ClientArgs>(args: ArgumentsCamelCase<A>, command: (ctx: CommandContext) => Promise<number>): Promise<void> {
  const options = clientOptions(args)
  const client = new NeedleClient(options)
  const ctx: CommandContext = {
    client,
    out: processOutput(),
    master: options.master,
    explain: (f) => failureText(f.message ?? f.error ?? 'failed', f.code, options.master),
  }
  let exitCode: number
  try {
    exitCode = await command(ctx)
  } catch (err) {
    // The command's failure is the one to report, not a failure to close after it.
    await client.close().catch(() => {})
    const code = errorCodeOf(err)
    if (code === undefined) throw err
    const text = ctx.explain({ message: (err as Error).message, code })
    throw text === oneLine((err as Error).message) ? err : new CommandFailed(text)
  }
  await client.close()
  process.exitCode = exitCode
}
