/**
 * `needlestore verify [--volume N] [--repair] [--settle-seconds 60] [--json]`: for each volume
 * the master knows (or the one named), a data server holding it compares every copy needle by
 * needle (checksums, live keys, content) and, with --repair, fixes the copies that differ from
 * the good one. Prints a table of the volumes and one line per problem (or JSON); exit 1 when
 * anything is left unrepaired, or a volume could not be verified.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import type { VolumeVerifyReport } from '../client/index.js'
import { clientFlags, runClientCommand, type ClientArgs } from './client-options.js'
import { EXIT_FAILURE, EXIT_OK, UsageError, errorCodeOf } from './exit-codes.js'
import { volumeRows } from './status.js'
import { formatTable } from './table.js'

export interface VerifyArgs extends ClientArgs {
  volume?: number
  repair: boolean
  settleSeconds: number
}

/** A volume verify may take long: without --timeout-ms, each gets an hour. */
export const VERIFY_TIMEOUT_MS_DEFAULT = 3_600_000
export const VERIFY_SETTLE_SECONDS_DEFAULT = 60

const PROBLEMS = ['damaged', 'missing', 'mismatch', 'extra', 'deleted', 'lost'] as const

export type VerifyOutcome = { volume: number; report: VolumeVerifyReport } | { volume: number; error: string; code: string }

/** The table of the volumes verified, and one line per problem: `<fid>\t<copy>\t<problem>\t<what happened>`. */
export function formatVerify(outcomes: readonly VerifyOutcome[]): string {
  const rows = outcomes.map((o) => {
    if (!('report' in o)) return [o.volume, '', '', '', '', '', '', '', '', '', '', 'error']
    const r = o.report
    return [r.volume, `${r.copies.length}/${r.copiesExpected}`, r.checked, ...PROBLEMS.map((p) => r.counts[p]), r.repaired, r.unrepaired, r.ok ? 'ok' : 'PROBLEMS']
  })
  let text = formatTable(
    [
      { header: 'VOLUME', align: 'right' },
      { header: 'COPIES', align: 'right' },
      { header: 'CHECKED', align: 'right' },
      ...PROBLEMS.map((p) => ({ header: p.toUpperCase(), align: 'right' as const })),
      { header: 'REPAIRED', align: 'right' },
      { header: 'LEFT', align: 'right' },
      { header: 'STATE' },
    ],
    rows,
  )
  for (const o of outcomes) {
    if (!('report' in o)) continue
    for (const p of PROBLEMS) {
      for (const item of o.report[p]) text += `${item.fid}\t${item.copy}\t${item.problem}\t${item.repair ?? item.why}\n`
    }
  }
  return text
}

export const verifyCommand: CommandModule<object, VerifyArgs> = {
  command: 'verify',
  describe: 'check every needle\'s checksum on every copy and compare the copies; --repair fixes what differs (needs --secret on a secured cluster)',
  builder: (y) =>
    clientFlags(y)
      .option('volume', { type: 'number', describe: 'only this volume' })
      .option('repair', { type: 'boolean', default: false, describe: 'repair damaged, missing and differing copies from the good one' })
      .option('settle-seconds', {
        type: 'number',
        default: VERIFY_SETTLE_SECONDS_DEFAULT,
        describe: 'differences younger than this may be writes still on their way: reported, not repaired',
      }) as unknown as Argv<VerifyArgs>,
  handler: (args: ArgumentsCamelCase<VerifyArgs>) =>
    runClientCommand(args, async ({ client, out, explain }) => {
      if (args.volume !== undefined && (!Number.isInteger(args.volume) || args.volume < 1 || args.volume > 0xffff_ffff)) {
        throw new UsageError(`--volume must be a volume id from 1 to 4294967295 (got ${String(args.volume)})`)
      }
      if (!Number.isFinite(args.settleSeconds) || args.settleSeconds < 0 || args.settleSeconds > 7 * 86_400) {
        throw new UsageError(`--settle-seconds must be a number from 0 to 604800 (got ${String(args.settleSeconds)})`)
      }
      const ids = args.volume !== undefined
        ? [args.volume]
        : volumeRows(await client.volumeStatus()).flatMap((v) => (v.id === undefined ? [] : [v.id]))
      const outcomes: VerifyOutcome[] = []
      for (const volume of ids) {
        try {
          const report = await client.verifyVolume(
            volume,
            { repair: args.repair, settleMs: Math.round(args.settleSeconds * 1000) },
            { timeoutMs: args.timeoutMs ?? VERIFY_TIMEOUT_MS_DEFAULT },
          )
          outcomes.push({ volume, report })
        } catch (err) {
          const code = errorCodeOf(err)
          if (code === undefined) throw err
          const error = explain({ message: (err as Error).message, code })
          outcomes.push({ volume, error, code })
          out.note(`volume ${volume}: ${error}`)
        }
      }
      if (args.json) out.json({ ok: outcomes.every((o) => 'report' in o && o.report.ok), volumes: outcomes })
      else out.stdout.write(formatVerify(outcomes))
      return outcomes.every((o) => 'report' in o && o.report.ok) ? EXIT_OK : EXIT_FAILURE
    }),
}
