/**
 * `needlestore delete <fids...>` (through the SDK's batch deleteMany) and
 * `needlestore undelete <fids...>`. Every fid is checked before anything is sent (a malformed
 * one is exit 2 and nothing happens); then every fid is tried, one line per fid on stdout, a
 * failure on stderr, and exit 1 at the end when any failed.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import type { DeleteResult, NeedleClient } from '../client/index.js'
import { checkFids, clientFlags, runClientCommand, type ClientArgs, type CommandContext } from './client-options.js'
import { batchExitCode, errorCodeOf } from './exit-codes.js'

export interface FidsArgs extends ClientArgs {
  fids: string[]
}

/** Undeletes run this many at a time: each restores a file on every copy. */
export const UNDELETE_CONCURRENCY = 8

/** The failure line of one fid: `<fid>: <message> (<code>)`, the code only if the message lacks it. */
export function fidFailure(fid: string, error: string, code: string | undefined): string {
  return `${fid}: ${error}${code === undefined || error.includes(code) ? '' : ` (${code})`}`
}

/** Prints deleteMany's results; answers how many failed. */
export function printDeleteResults(results: readonly DeleteResult[], { out, explain }: Pick<CommandContext, 'out' | 'explain'>, json: boolean): number {
  const failed = results.filter((r) => !r.ok).length
  if (json) out.json(results)
  for (const r of results) {
    if (!r.ok) out.note(fidFailure(r.fid, explain(r), r.code))
    else if (!json) out.line(`${r.fid}\tdeleted`)
  }
  return failed
}

export type UndeleteLine = { fid: string; ok: true; size: number; undeleted: boolean } | { fid: string; ok: false; code: string; error: string }

/** Undeletes every fid, UNDELETE_CONCURRENCY at a time; the results in the order of fids. */
export async function undeleteAll(client: NeedleClient, fids: readonly string[]): Promise<UndeleteLine[]> {
  const results: UndeleteLine[] = new Array(fids.length)
  let next = 0
  const worker = async () => {
    while (next < fids.length) {
      const i = next++
      const fid = fids[i]!
      try {
        const { size, undeleted } = await client.undelete(fid)
        results[i] = { fid, ok: true, size, undeleted }
      } catch (err) {
        const code = errorCodeOf(err)
        if (code === undefined) throw err
        results[i] = { fid, ok: false, code, error: (err as Error).message }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(UNDELETE_CONCURRENCY, fids.length) }, worker))
  return results
}

const fidsPositional = <T>(y: Argv<T>) => clientFlags(y).positional('fids', { type: 'string', array: true, describe: 'file ids, e.g. 3,01637037d6' })

export const deleteCommand: CommandModule<object, FidsArgs> = {
  command: 'delete <fids...>',
  describe: 'delete files on every copy; prints "<fid>\\tdeleted" per file',
  builder: (y) => fidsPositional(y).example('$0 delete 3,01637037d6 3,02a1b2c3d4', 'delete two files') as unknown as Argv<FidsArgs>,
  handler: (args: ArgumentsCamelCase<FidsArgs>) =>
    runClientCommand(args, async (ctx) => {
      const fids = checkFids(args.fids)
      const results = await ctx.client.deleteMany(fids)
      return batchExitCode(printDeleteResults(results, ctx, args.json))
    }),
}

export const undeleteCommand: CommandModule<object, FidsArgs> = {
  command: 'undelete <fids...>',
  describe: 'restore deleted files within the grace period (needs --secret on a secured cluster)',
  builder: (y) => fidsPositional(y).example('$0 undelete 3,01637037d6', 'restore a deleted file') as unknown as Argv<FidsArgs>,
  handler: (args: ArgumentsCamelCase<FidsArgs>) =>
    runClientCommand(args, async ({ client, out, explain }) => {
      const fids = checkFids(args.fids)
      const results = await undeleteAll(client, fids)
      if (args.json) out.json(results)
      for (const r of results) {
        if (!r.ok) out.note(fidFailure(r.fid, explain(r), r.code))
        else if (!args.json) out.line(`${r.fid}\t${r.undeleted ? 'undeleted' : 'not deleted'}`)
      }
      return batchExitCode(results.filter((r) => !r.ok).length)
    }),
}
