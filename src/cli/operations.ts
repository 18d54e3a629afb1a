/**
 * Maintenance commands whose engines are not built yet: `compact`, `rebalance`, `verify`
 * (`fix-replication` lives in fix-replication.ts). They accept and check their flags now, so scripts can be
 * written against them, and say plainly on stderr that nothing was done (exit 1).
 *
 * `compact` first lists the volumes over the garbage threshold, by the master's own rule for
 * `/vol/vacuum` (a garbage ratio strictly above the threshold), read from `/vol/status`.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { clientFlags, clientOptions, runClientCommand, type ClientArgs } from './client-options.js'
import { EXIT_FAILURE, UsageError } from './exit-codes.js'
import { volumeRows } from './status.js'

export const COMPACT_THRESHOLD_DEFAULT = 0.3

/** The stderr line of a command whose engine is missing. */
export function notBuilt(command: string, what: string): string {
  return `${command}: ${what} is not built yet; nothing was changed`
}

function volumeId(value: number | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!Number.isInteger(value) || value < 1 || value > 0xffff_ffff) throw new UsageError(`--volume must be a volume id from 1 to 4294967295 (got ${String(value)})`)
  return value
}

export interface CompactArgs extends ClientArgs {
  volume?: number
  threshold: number
}

/** The volumes compaction would take: over the threshold, and the one asked for if any. */
export function compactionCandidates(volStatus: unknown, threshold: number, volume?: number) {
  return volumeRows(volStatus)
    .filter((v) => v.id !== undefined && (volume === undefined || v.id === volume) && (v.garbageRatio ?? 0) > threshold)
    .map((v) => ({ id: v.id!, garbageRatio: v.garbageRatio ?? 0, size: v.size ?? 0 }))
}

export const compactCommand: CommandModule<object, CompactArgs> = {
  command: 'compact',
  describe: 'reclaim deleted files\' space (not built yet: lists the volumes over the threshold)',
  builder: (y) =>
    clientFlags(y)
      .option('volume', { type: 'number', describe: 'only this volume' })
      .option('threshold', { type: 'number', default: COMPACT_THRESHOLD_DEFAULT, describe: 'garbage ratio above which a volume is compacted (0 to 1)' }) as unknown as Argv<CompactArgs>,
  handler: (args: ArgumentsCamelCase<CompactArgs>) =>
    runClientCommand(args, async ({ client, out }) => {
      const volume = volumeId(args.volume)
      if (!Number.isFinite(args.threshold) || args.threshold < 0 || args.threshold > 1) {
        throw new UsageError(`--threshold must be a number from 0 to 1 (got ${String(args.threshold)})`)
      }
      const candidates = compactionCandidates(await client.volumeStatus(), args.threshold, volume)
      if (args.json) out.json({ threshold: args.threshold, overThreshold: candidates, compacted: [] })
      else for (const c of candidates) out.line(`${c.id}\t${(c.garbageRatio * 100).toFixed(2)}% garbage`)
      out.note(notBuilt('compact', 'compaction'))
      return EXIT_FAILURE
    }),
}

/** A command that only checks its flags and says it is not built. */
function notBuiltCommand<A extends ClientArgs>(
  command: string,
  describe: string,
  what: string,
  flags: (y: Argv<ClientArgs>) => Argv<A>,
  check: (args: A) => void = () => {},
): CommandModule<object, A> {
  return {
    command,
    describe: `${describe} (not built yet)`,
    builder: (y) => flags(clientFlags(y) as unknown as Argv<ClientArgs>),
    handler: async (args: ArgumentsCamelCase<A>) => {
      clientOptions(args)
      check(args as unknown as A)
      process.stderr.write(`needlestore: ${notBuilt(command, what)}\n`)
      process.exitCode = EXIT_FAILURE
    },
  }
}

export const rebalanceCommand = notBuiltCommand<ClientArgs & { dryRun: boolean }>(
  'rebalance',
  'move volumes so that data servers hold even shares',
  'rebalancing',
  (y) => y.option('dry-run', { type: 'boolean', default: false, describe: 'print the moves without making them' }) as unknown as Argv<ClientArgs & { dryRun: boolean }>,
)

export { fixReplicationCommand } from './fix-replication.js'

export const verifyCommand = notBuiltCommand<ClientArgs & { volume?: number }>(
  'verify',
  'check every needle\'s checksum on every copy',
  'verification',
  (y) => y.option('volume', { type: 'number', describe: 'only this volume' }) as unknown as Argv<ClientArgs & { volume?: number }>,
  (args) => void volumeId(args.volume),
)
