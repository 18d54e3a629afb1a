import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { parseBytes } from '../common/units.js'
import { DATA_SERVER_DEFAULTS, startDataServer, type DataServerInput } from '../dataserver/index.js'
import { COMPACT_STEPS, type CompactStep } from '../dataserver/volume.js'
import { stopOnSignals } from './signals.js'

export interface DataServerArgs {
  dir: string
  host: string
  port: number
  publicUrl?: string
  secret?: string
  dataCenter: string
  rack: string
  fileBytesMax: string
  volumeBytesMax: string
  volumesMax: number
  fsync: string
  fsyncIntervalMs: number
  headersTimeoutMs: number
  requestTimeoutMs: number
  writeBatchMax: number
  syncReadBytesMax: string
  headerBytesMax: string
  keepAliveTimeoutMs: number
  writeQueueMax: number
  writeBatchBytesMax: string
  readCacheBytes: string
  master?: string
  ip?: string
  heartbeatIntervalMs: number
  replicateTimeoutMs: number
  undeleteGraceSeconds: number
  batchDeleteMax: number
  compactGarbageThreshold: number
  compactBytesPerSecond: string
  compactCheckIntervalMs: number
  faultCompact?: string
  scrubBytesPerSecond: string
  scrubIntervalHours: number
}

/** The flags every command that runs a data server shares. */
export function dataServerFlags<T>(y: Argv<T>) {
  return y
    .option('host', { type: 'string', default: DATA_SERVER_DEFAULTS.host, describe: 'address to listen on' })
    .option('public-url', { type: 'string', describe: 'host:port clients should use, if not host:port' })
    .option('secret', { type: 'string', describe: 'cluster secret: internal routes require it, writes need a token signed with it' })
    .option('master', { type: 'string', describe: 'the master, host:port or http://host:port (none: a lone server)' })
    .option('ip', { type: 'string', describe: 'address the master and other data servers reach this one at (default: --host)' })
    .option('heartbeat-interval-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.heartbeatIntervalMs, describe: 'time between heartbeats to the master' })
    .option('replicate-timeout-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.replicateTimeoutMs, describe: 'a write forwarded to another replica fails past this' })
    .option('undelete-grace-seconds', { type: 'number', default: DATA_SERVER_DEFAULTS.undeleteGraceSeconds, describe: 'a deleted file can be undeleted for this long; compaction keeps its bytes meanwhile' })
    .option('compact-garbage-threshold', { type: 'number', default: DATA_SERVER_DEFAULTS.compactGarbageThreshold, describe: 'a volume with more garbage than this ratio is compacted by itself (0: never)' })
    .option('compact-bytes-per-second', { type: 'string', default: '64MiB', describe: 'bytes a compaction reads per second at most (0: no limit)' })
    .option('compact-check-interval-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.compactCheckIntervalMs, describe: 'how often volumes are checked for compaction' })
    .option('fault-compact', { type: 'string', hidden: true, choices: COMPACT_STEPS, describe: 'crash tests: kill the process at this step of every compaction' })
    .option('batch-delete-max', { type: 'number', default: DATA_SERVER_DEFAULTS.batchDeleteMax, describe: 'fids in one POST /delete at most' })
    .option('data-center', { type: 'string', default: DATA_SERVER_DEFAULTS.dataCenter })
    .option('rack', { type: 'string', default: DATA_SERVER_DEFAULTS.rack })
    .option('file-bytes-max', { type: 'string', default: '32MiB', describe: 'largest file accepted' })
    .option('volume-bytes-max', { type: 'string', default: '8GiB', describe: 'a volume turns read-only at this size (at most 32GiB)' })
    .option('volumes-max', { type: 'number', default: DATA_SERVER_DEFAULTS.volumesMax })
    .option('fsync', { choices: ['group', 'interval', 'none'], default: DATA_SERVER_DEFAULTS.fsync, describe: 'when writes reach the disk before they are acknowledged' })
    .option('fsync-interval-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.fsyncIntervalMs })
    .option('headers-timeout-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.headersTimeoutMs })
    .option('request-timeout-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.requestTimeoutMs })
    .option('header-bytes-max', { type: 'string', default: '16KiB', describe: 'largest request header block (431 past it)' })
    .option('keep-alive-timeout-ms', { type: 'number', default: DATA_SERVER_DEFAULTS.keepAliveTimeoutMs })
    .option('write-queue-max', { type: 'number', default: DATA_SERVER_DEFAULTS.writeQueueMax, describe: 'writes queued per volume at most (503 past it)' })
    .option('write-batch-bytes-max', { type: 'string', default: '16MiB', describe: 'bytes covered by one fsync at most' })
    .option('read-cache-bytes', { type: 'string', default: '64MiB', describe: 'recently read needles kept in memory, checksum-verified on every hit (0: none)' })
    .option('sync-read-bytes-max', { type: 'string', default: '256KiB', describe: 'needles up to this size are read synchronously from the page cache (0: never)' })
    .option('scrub-bytes-per-second', { type: 'string', default: '8MiB', describe: 'bytes per second the background scrubber re-reads and checks (0: off)' })
    .option('scrub-interval-hours', { type: 'number', default: DATA_SERVER_DEFAULTS.scrubIntervalHours, describe: 'hours between the end of one scrub pass over every volume and the next' })
    .option('write-batch-max', { type: 'number', default: DATA_SERVER_DEFAULTS.writeBatchMax, describe: 'writes covered by one fsync at most (1: an fsync per write)' })
}

export function dataServerInput(args: Omit<DataServerArgs, 'dir' | 'port'>, dir: string, port: number): DataServerInput {
  return {
    dir,
    port,
    host: args.host,
    publicUrl: args.publicUrl,
    secret: args.secret,
    dataCenter: args.dataCenter,
    rack: args.rack,
    fileBytesMax: parseBytes('file-bytes-max', args.fileBytesMax),
    volumeBytesMax: parseBytes('volume-bytes-max', args.volumeBytesMax),
    volumesMax: args.volumesMax,
    fsync: args.fsync as DataServerInput['fsync'],
    fsyncIntervalMs: args.fsyncIntervalMs,
    headersTimeoutMs: args.headersTimeoutMs,
    requestTimeoutMs: args.requestTimeoutMs,
    writeBatchMax: args.writeBatchMax,
    syncReadBytesMax: parseBytes('sync-read-bytes-max', args.syncReadBytesMax),
    headerBytesMax: parseBytes('header-bytes-max', args.headerBytesMax),
    keepAliveTimeoutMs: args.keepAliveTimeoutMs,
    writeQueueMax: args.writeQueueMax,
    writeBatchBytesMax: parseBytes('write-batch-bytes-max', args.writeBatchBytesMax),
    readCacheBytes: parseBytes('read-cache-bytes', args.readCacheBytes),
    master: args.master,
    ip: args.ip,
    heartbeatIntervalMs: args.heartbeatIntervalMs,
    replicateTimeoutMs: args.replicateTimeoutMs,
    undeleteGraceSeconds: args.undeleteGraceSeconds,
    batchDeleteMax: args.batchDeleteMax,
    compactGarbageThreshold: args.compactGarbageThreshold,
    compactBytesPerSecond: parseBytes('compact-bytes-per-second', args.compactBytesPerSecond),
    compactCheckIntervalMs: args.compactCheckIntervalMs,
    ...(args.faultCompact !== undefined ? { faultCompact: args.faultCompact as CompactStep } : {}),
    scrubBytesPerSecond: parseBytes('scrub-bytes-per-second', args.scrubBytesPerSecond),
    scrubIntervalHours: args.scrubIntervalHours,
  }
}

export const dataserverCommand: CommandModule<object, DataServerArgs> = {
  command: 'dataserver',
  describe: 'run a data server (flags also from NEEDLESTORE_* environment variables)',
  builder: (y) =>
    dataServerFlags(y)
      .option('dir', { type: 'string', demandOption: true, describe: 'directory of the volumes' })
      .option('port', { type: 'number', default: DATA_SERVER_DEFAULTS.port, describe: 'port to listen on (0: any free port)' }) as unknown as Argv<DataServerArgs>,
  handler: async (args: ArgumentsCamelCase<DataServerArgs>) => {
    const server = await startDataServer(dataServerInput(args, args.dir, args.port))
    process.stdout.write(`needlestore dataserver listening on ${server.url}\n`)
    stopOnSignals(() => server.close())
  },
}
