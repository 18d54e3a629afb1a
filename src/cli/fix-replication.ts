/**
 * `needlestore fix-replication [--dry-run]`: asks the master to restore every volume that has a
 * copy on a dead data server (`POST /vol/fix_replication`), by copying it from a live copy to a
 * server that fits its placement. Prints the plan, and what was done; exit 1 when a volume could
 * not be repaired.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { request } from 'undici'
import { clientFlags, clientOptions, processOutput, type ClientArgs } from './client-options.js'
import { CommandFailed, EXIT_FAILURE, EXIT_OK, failureText } from './exit-codes.js'

export interface FixReplicationArgs extends ClientArgs {
  dryRun: boolean
}

/** What the master answers; see src/master/repair.ts. */
export interface FixReplicationAnswer {
  readonly dryRun: boolean
  readonly steps: Array<{ volume: number; replication: string; source: string; destinations: string[]; replaces: string[] }>
  readonly waiting: Array<{ volume: number; reason: string }>
  readonly blocked: Array<{ volume: number; reason: string }>
  readonly results: Array<{ volume: number; ok: boolean; source: string; copied: string[]; error?: string }>
}

/** A copy of a volume takes as long as its bytes need; the default deadline is generous. */
const FIX_TIMEOUT_MS_DEFAULT = 3_600_000

export const fixReplicationCommand: CommandModule<object, FixReplicationArgs> = {
  command: 'fix-replication',
  describe: 'copy volumes that have copies on dead data servers to live ones, as their placement asks',
  builder: (y) =>
    clientFlags(y).option('dry-run', { type: 'boolean', default: false, describe: 'print the plan without copying anything' }) as unknown as Argv<FixReplicationArgs>,
  handler: async (args: ArgumentsCamelCase<FixReplicationArgs>) => {
    const options = clientOptions(args)
    const out = processOutput()
    const timeoutMs = options.timeoutMs ?? FIX_TIMEOUT_MS_DEFAULT
    let answer: FixReplicationAnswer
    try {
      const res = await request(`${options.master}/vol/fix_replication${args.dryRun ? '?dryRun=true' : ''}`, {
        method: 'POST',
        headers: options.secret === undefined ? {} : { authorization: `Bearer ${options.secret}` },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      })
      const text = await res.body.text()
      let body: unknown
      try {
        body = JSON.parse(text)
      } catch {
        throw new CommandFailed(`the master answered ${res.statusCode} with a body that is not JSON`)
      }
      if (res.statusCode !== 200) {
        const e = body as { error?: string; code?: string }
        throw new CommandFailed(failureText(e.error ?? `status ${res.statusCode}`, e.code, options.master))
      }
      answer = body as FixReplicationAnswer
    } catch (err) {
      if (err instanceof CommandFailed) throw err
      throw new CommandFailed(failureText((err as Error).message, 'NS_ERR_PEER_UNREACHABLE', options.master))
    }
    const failed = answer.results.filter((r) => !r.ok)
    if (args.json) out.json(answer)
    else {
      for (const s of answer.steps) {
        const what = s.destinations.length > 0 ? `copy from ${s.source} to ${s.destinations.join(', ')}` : 'forget'
        out.line(`volume ${s.volume}\t${what}${s.replaces.length > 0 ? `\treplacing ${s.replaces.join(', ')}` : ''}`)
      }
      for (const w of answer.waiting) out.line(`volume ${w.volume}\twaiting: ${w.reason}`)
      for (const b of answer.blocked) out.line(`volume ${b.volume}\tblocked: ${b.reason}`)
      for (const r of answer.results) out.line(`volume ${r.volume}\t${r.ok ? `repaired${r.copied.length > 0 ? `: copied to ${r.copied.join(', ')}` : ''}` : `failed: ${r.error}`}`)
      if (answer.steps.length === 0 && answer.waiting.length === 0 && answer.blocked.length === 0) out.note('every volume has all its copies on live servers')
      else if (answer.dryRun) out.note(`dry run: ${answer.steps.length} volumes would be repaired; nothing was changed`)
    }
    for (const r of failed) out.note(`volume ${r.volume}: repair failed: ${r.error}`)
    for (const b of answer.blocked) out.note(`volume ${b.volume}: cannot be repaired: ${b.reason}`)
    process.exitCode = failed.length > 0 || answer.blocked.length > 0 ? EXIT_FAILURE : EXIT_OK
  },
}
