/**
 * Maintenance commands. `compact` compacts the volumes over the garbage threshold (the master's
 * own rule for `/vol/vacuum`: a garbage ratio strictly above it, read from `/vol/status`), one
 * volume at a time, with a progress bar (`verify` is in ./verify.ts, `fix-replication` in
 * ./fix-replication.ts). `rebalance`, whose engine is not built yet, accepts and checks its
 * flags, so scripts can be written against it, and says plainly on stderr that nothing was done
 * (exit 1).
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { clientFlags, clientOptions, runClientCommand, type ClientArgs } from './client-options.js'
import type { CompactedCopy } from '../client/index.js'
import { EXIT_FAILURE, EXIT_OK, UsageError } from './exit-codes.js'
import { ProgressBar } from './progress.js'
import { volumeRows } from './status.js'

export const COMPACT_THRESHOLD_DEFAULT = 0.3
/** A compaction's deadline unless --timeout-ms says otherwise: an hour. */
const COMPACT_TIMEOUT_MS = 3_600_000

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
  describe: 'reclaim the space of deleted and replaced files: compact the volumes over the garbage threshold (or --volume), on every copy',
  builder: (y) =>
    clientFlags(y)
      .option('volume', { type: 'number', describe: 'only this volume (whatever its garbage)' })
      .option('threshold', { type: 'number', default: COMPACT_THRESHOLD_DEFAULT, describe: 'garbage ratio above which a volume is compacted (0 to 1)' }) as unknown as Argv<CompactArgs>,
  handler: (args: ArgumentsCamelCase<CompactArgs>) =>
    runClientCommand(args, async ({ client, out }) => {
      const volume = volumeId(args.volume)
      if (!Number.isFinite(args.threshold) || args.threshold < 0 || args.threshold > 1) {
        throw new UsageError(`--threshold must be a number from 0 to 1 (got ${String(args.threshold)})`)
      }
      const volumes = volume !== undefined ? [{ id: volume, size: 0 }] : compactionCandidates(await client.volumeStatus(), args.threshold)
      const bar = new ProgressBar({ stream: out.stderr, filesTotal: volumes.length, bytesTotal: volumes.reduce((n, v) => n + v.size, 0), unit: 'volumes', enabled: out.stderr.isTTY === true && !args.json })
      bar.start()
      const copies: CompactedCopy[] = []
      // One volume at a time, each on all its copies at once; a compaction of a large volume
      // takes minutes at the data servers' --compact-bytes-per-second.
      for (const v of volumes) {
        const report = await client.compact({ volume: v.id, threshold: args.threshold }, { timeoutMs: args.timeoutMs ?? COMPACT_TIMEOUT_MS })
        const failed = report.copies.some((c) => c.status !== 200) || report.copies.length === 0
        copies.push(...report.copies)
        bar.fileDone(v.size, !failed)
        if (!args.json) {
          bar.around(() => {
            for (const c of report.copies) {
              out.line(c.status === 200 ? `${c.volume}\t${c.url}\t${c.beforeBytes} → ${c.afterBytes} bytes` : `${c.volume}\t${c.url}\tfailed: ${c.error ?? c.status}`)
            }
          })
        }
      }
      bar.finish()
      if (args.json) out.json({ threshold: args.threshold, volumes: volumes.map((v) => v.id), copies })
      else if (volumes.length === 0) out.note(`no volume has more than ${args.threshold} garbage`)
      return copies.every((c) => c.status === 200) ? EXIT_OK : EXIT_FAILURE
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
