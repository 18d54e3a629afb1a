/**
 * The master's options: one typed object, defaults applied in one place, each field validated
 * once, the result frozen. The CLI only builds the input.
 */
import { parsePlacement } from '../common/placement.js'
import { VOLUME_BYTES_MAX } from '../common/format.js'
import { integer, nonEmptyString, optionalString } from '../common/validate.js'

export interface MasterOptions {
  /** Directory of the master's durable state (level). */
  readonly dir: string
  readonly host: string
  readonly port: number
  /** The cluster secret: signs write tokens; internal routes require it. */
  readonly secret: string | undefined
  /** Replication when an assign names none; undefined: "002" once 3 data servers are known, else "000". */
  readonly defaultReplication: string | undefined
  /** A volume reported at this size or more gets no more assigns. */
  readonly volumeBytesMax: number
  /** Volumes created at a time when a layout has no writable volume. */
  readonly volumeGrowthCount: number
  /** A data server silent this long is dead. */
  readonly deadAfterMs: number
  /** Life of a write token. */
  readonly tokenTtlSeconds: number
  /** Keys leased per durable write of the high-water mark. */
  readonly keyLease: number
  /** Ids one assign may ask for at most (`count`). */
  readonly assignCountMax: number
  /** Deadline of every call to a data server. */
  readonly peerTimeoutMs: number
  /** Largest body /submit takes. */
  readonly fileBytesMax: number
  /** MD5 dedup: uploads of bytes the cluster holds share them (assign with md5, /submit). */
  readonly dedup: boolean
  /** Files smaller than this are never shared (a link costs about as much). */
  readonly dedupBytesMin: number
  /** A volume copy on a server dead this long is re-made elsewhere (re-replication). */
  readonly repairAfterMs: number
  /** Volume repairs running at once, at most. */
  readonly repairsMax: number
  /** Deadline of one volume copy between data servers. */
  readonly repairCopyTimeoutMs: number
  readonly log: (message: string) => void
  readonly now: () => number
}

export type MasterInput = Partial<MasterOptions> & { readonly dir: string }

const MiB = 1024 * 1024

export const MASTER_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  port: 9333,
  volumeBytesMax: 8 * 1024 * MiB,
  volumeGrowthCount: 2,
  deadAfterMs: 10_000,
  tokenTtlSeconds: 30,
  keyLease: 10_000,
  assignCountMax: 10_000,
  peerTimeoutMs: 10_000,
  fileBytesMax: 32 * MiB,
  dedup: true,
  dedupBytesMin: 1024,
  repairAfterMs: 600_000,
  repairsMax: 2,
  repairCopyTimeoutMs: 3_600_000,
})

export function resolveMasterOptions(input: MasterInput): MasterOptions {
  const o = { ...MASTER_DEFAULTS, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) } as typeof MASTER_DEFAULTS & MasterInput
  const defaultReplication = optionalString('defaultReplication', o.defaultReplication)
  if (defaultReplication !== undefined) parsePlacement(defaultReplication)
  return Object.freeze({
    dir: nonEmptyString('dir', o.dir),
    host: nonEmptyString('host', o.host),
    port: integer('port', o.port, 0, 65535),
    secret: optionalString('secret', o.secret),
    defaultReplication,
    volumeBytesMax: integer('volumeBytesMax', o.volumeBytesMax, 64 * 1024, VOLUME_BYTES_MAX),
    volumeGrowthCount: integer('volumeGrowthCount', o.volumeGrowthCount, 1, 100),
    deadAfterMs: integer('deadAfterMs', o.deadAfterMs, 100, 3_600_000),
    tokenTtlSeconds: integer('tokenTtlSeconds', o.tokenTtlSeconds, 1, 86_400),
    keyLease: integer('keyLease', o.keyLease, 1, 1_000_000_000),
    assignCountMax: integer('assignCountMax', o.assignCountMax, 1, 1_000_000),
    peerTimeoutMs: integer('peerTimeoutMs', o.peerTimeoutMs, 1, 3_600_000),
    fileBytesMax: integer('fileBytesMax', o.fileBytesMax, 1, 1024 * MiB),
    dedup: (o.dedup as boolean) !== false,
    // Data servers report files of 1 KiB and more; smaller ones could never be found.
    dedupBytesMin: integer('dedupBytesMin', o.dedupBytesMin, 1024, 1024 * MiB),
    repairAfterMs: integer('repairAfterMs', o.repairAfterMs, 0, 30 * 86_400_000),
    repairsMax: integer('repairsMax', o.repairsMax, 1, 64),
    repairCopyTimeoutMs: integer('repairCopyTimeoutMs', o.repairCopyTimeoutMs, 1000, 86_400_000),
    log: o.log ?? ((message: string) => process.stderr.write(`${message}\n`)),
    now: o.now ?? Date.now,
  })
}
