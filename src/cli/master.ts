import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { parseBytes } from '../common/units.js'
import { MASTER_DEFAULTS, startMaster } from '../master/index.js'
import { stopOnSignals } from './signals.js'

interface MasterArgs {
  dir: string
  host: string
  port: number
  secret?: string
  defaultReplication?: string
  volumeBytesMax: string
  volumeGrowthCount: number
  deadAfterMs: number
  tokenTtlSeconds: number
  keyLease: number
  fileBytesMax: string
  dedup: boolean
  dedupBytesMin: string
  repairAfterMs: number
  repairsMax: number
}

export const masterCommand: CommandModule<object, MasterArgs> = {
  command: 'master',
  describe: 'run the master (flags also from NEEDLESTORE_* environment variables)',
  builder: (y) =>
    y
      .option('dir', { type: 'string', demandOption: true, describe: "directory of the master's durable state" })
      .option('host', { type: 'string', default: MASTER_DEFAULTS.host, describe: 'address to listen on' })
      .option('port', { type: 'number', default: MASTER_DEFAULTS.port, describe: 'port to listen on (0: any free port)' })
      .option('secret', { type: 'string', describe: 'cluster secret: signs write tokens; internal routes require it' })
      .option('default-replication', { type: 'string', describe: 'replication when an assign names none (default: 002 once 3 data servers are known, else 000)' })
      .option('volume-bytes-max', { type: 'string', default: '8GiB', describe: 'volumes this large get no more assigns' })
      .option('volume-growth-count', { type: 'number', default: MASTER_DEFAULTS.volumeGrowthCount, describe: 'volumes created at a time when none is writable' })
      .option('dead-after-ms', { type: 'number', default: MASTER_DEFAULTS.deadAfterMs, describe: 'a data server silent this long is dead' })
      .option('token-ttl-seconds', { type: 'number', default: MASTER_DEFAULTS.tokenTtlSeconds, describe: 'life of a write token' })
      .option('key-lease', { type: 'number', default: MASTER_DEFAULTS.keyLease, describe: 'file keys reserved per durable write' })
      .option('file-bytes-max', { type: 'string', default: '32MiB', describe: 'largest file /submit takes' })
      .option('dedup', { type: 'boolean', default: MASTER_DEFAULTS.dedup, describe: 'MD5 dedup: an upload of bytes the cluster holds shares them (--no-dedup: never)' })
      .option('dedup-bytes-min', { type: 'string', default: '1KiB', describe: 'smaller files are never shared (at least 1KiB)' })
      .option('repair-after-ms', { type: 'number', default: MASTER_DEFAULTS.repairAfterMs, describe: 'a volume copy on a server dead this long is copied again elsewhere from a live copy' })
      .option('repairs-max', { type: 'number', default: MASTER_DEFAULTS.repairsMax, describe: 'volume repairs running at once, at most' }) as unknown as Argv<MasterArgs>,
  handler: async (args: ArgumentsCamelCase<MasterArgs>) => {
    const master = await startMaster({
      dir: args.dir,
      host: args.host,
      port: args.port,
      secret: args.secret,
      defaultReplication: args.defaultReplication,
      volumeBytesMax: parseBytes('volume-bytes-max', args.volumeBytesMax),
      volumeGrowthCount: args.volumeGrowthCount,
      deadAfterMs: args.deadAfterMs,
      tokenTtlSeconds: args.tokenTtlSeconds,
      keyLease: args.keyLease,
      fileBytesMax: parseBytes('file-bytes-max', args.fileBytesMax),
      dedup: args.dedup,
      dedupBytesMin: parseBytes('dedup-bytes-min', args.dedupBytesMin),
      repairAfterMs: args.repairAfterMs,
      repairsMax: args.repairsMax,
    })
    process.stdout.write(`needlestore master listening on ${master.url}\n`)
    stopOnSignals(() => master.close())
  },
}
