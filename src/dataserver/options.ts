/**
 * The data server's options: one typed object, defaults applied in one place, each field
 * validated once with a precise message, the result frozen. The CLI only builds the input.
 */
import { NeedleError } from '../common/errors.js'
import { VOLUME_BYTES_MAX, DATA_BYTES_MAX } from '../common/format.js'
import { fraction, integer, nonEmptyString, oneOf, optionalString } from '../common/validate.js'
import type { CompactStep, FsyncPolicy, VolumeSettings } from './volume.js'

/** The volume settings a server takes as options (documented on VolumeOptions); the read
 *  cache itself is built from readCacheBytes. */
export type ServerVolumeSettings = Omit<VolumeSettings, 'readCache'>

export interface DataServerOptions extends ServerVolumeSettings {
  /** Directory of the volumes. */
  readonly dir: string
  readonly host: string
  readonly port: number
  /** The address clients should use, if it differs from host:port (behind a proxy or NAT). */
  readonly publicUrl: string | undefined
  /** The cluster secret; when set, admin and internal routes require it, and writes and
   *  deletes need a token the master signed with it. */
  readonly secret: string | undefined
  /** The master (`http://host:port`); without one the server runs alone, with unreplicated volumes. */
  readonly master: string | undefined
  /** The address the master and the other data servers reach this one at (default: host). */
  readonly ip: string | undefined
  /** Time between heartbeats to the master. */
  readonly heartbeatIntervalMs: number
  /** A write or delete forwarded to another replica fails if it takes longer. */
  readonly replicateTimeoutMs: number
  /** Keys of failed replicated writes awaiting reconciliation, at most. */
  readonly reconcileQueueMax: number
  /** A deleted file can be undeleted for this long after its delete. */
  readonly undeleteGraceSeconds: number
  /** Fids in one batch delete request, at most. */
  readonly batchDeleteMax: number
  /** A volume whose garbage ratio passes this is compacted by itself (0: never). */
  readonly compactGarbageThreshold: number
  /** Bytes a compaction reads per second at most (0: no limit). */
  readonly compactBytesPerSecond: number
  /** How often volumes are checked for compaction. */
  readonly compactCheckIntervalMs: number
  /** Crash tests only: the process kills itself at this step of every compaction. */
  readonly faultCompact?: CompactStep
  readonly dataCenter: string
  readonly rack: string
  /** Largest file accepted, in bytes; a larger upload gets 413 and writes nothing. */
  readonly fileBytesMax: number
  /** Largest request header block, in bytes (431 past it). */
  readonly headerBytesMax: number
  /** Time to receive the headers of a request. */
  readonly headersTimeoutMs: number
  /** Time to receive a whole request. */
  readonly requestTimeoutMs: number
  /** How long an idle keep-alive connection stays open. */
  readonly keepAliveTimeoutMs: number
  /** Volumes this server may hold. */
  readonly volumesMax: number
  /** Bytes of recently read needles kept in memory (0: none); every hit is checksum-verified. */
  readonly readCacheBytes: number
  /** Average bytes per second the background scrubber reads and checks (0: no scrubber). */
  readonly scrubBytesPerSecond: number
  /** Hours from the end of one scrub pass over every volume to the start of the next. */
  readonly scrubIntervalHours: number
  /** Where operational messages go (recovery, broken volumes). */
  readonly log: (message: string) => void
}

export type DataServerInput = Partial<DataServerOptions> & { readonly dir: string }

const MiB = 1024 * 1024
const GiB = 1024 * MiB

export const DATA_SERVER_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  port: 8080,
  dataCenter: 'dc1',
  rack: 'rack1',
  fileBytesMax: 32 * MiB,
  headerBytesMax: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 65_000,
  volumeBytesMax: 8 * GiB,
  volumesMax: 128,
  fsync: 'group' as FsyncPolicy,
  fsyncIntervalMs: 100,
  writeQueueMax: 4096,
  writeBatchBytesMax: 16 * MiB,
  writeBatchMax: 1024,
  syncReadBytesMax: 256 * 1024,
  readCacheBytes: 64 * MiB,
  heartbeatIntervalMs: 2000,
  replicateTimeoutMs: 10_000,
  reconcileQueueMax: 100_000,
  undeleteGraceSeconds: 86_400,
  batchDeleteMax: 1000,
  compactGarbageThreshold: 0.3,
  compactBytesPerSecond: 64 * MiB,
  compactCheckIntervalMs: 60_000,
  scrubBytesPerSecond: 8 * MiB,
  scrubIntervalHours: 24,
})

export function resolveDataServerOptions(input: DataServerInput): DataServerOptions {
  const o = { ...DATA_SERVER_DEFAULTS, ...stripUndefined(input) }
  const resolved: DataServerOptions = {
    dir: nonEmptyString('dir', o.dir),
    host: nonEmptyString('host', o.host),
    port: integer('port', o.port, 0, 65535),
    publicUrl: optionalString('publicUrl', o.publicUrl),
    secret: optionalString('secret', o.secret),
    master: o.master === undefined || o.master === '' ? undefined : masterUrl(o.master),
    ip: optionalString('ip', o.ip),
    heartbeatIntervalMs: integer('heartbeatIntervalMs', o.heartbeatIntervalMs, 10, 60_000),
    replicateTimeoutMs: integer('replicateTimeoutMs', o.replicateTimeoutMs, 10, 3_600_000),
    reconcileQueueMax: integer('reconcileQueueMax', o.reconcileQueueMax, 1, 10_000_000),
    undeleteGraceSeconds: integer('undeleteGraceSeconds', o.undeleteGraceSeconds, 0, 10 * 365 * 86_400),
    batchDeleteMax: integer('batchDeleteMax', o.batchDeleteMax, 1, 100_000),
    compactGarbageThreshold: fraction('compactGarbageThreshold', o.compactGarbageThreshold),
    compactBytesPerSecond: integer('compactBytesPerSecond', o.compactBytesPerSecond, 0, 100 * 1024 * MiB),
    compactCheckIntervalMs: integer('compactCheckIntervalMs', o.compactCheckIntervalMs, 10, 86_400_000),
    ...(o.faultCompact !== undefined ? { faultCompact: o.faultCompact } : {}),
    dataCenter: nonEmptyString('dataCenter', o.dataCenter),
    rack: nonEmptyString('rack', o.rack),
    fileBytesMax: integer('fileBytesMax', o.fileBytesMax, 1, Math.min(DATA_BYTES_MAX, 1024 * MiB)),
    headerBytesMax: integer('headerBytesMax', o.headerBytesMax, 1024, 1 * MiB),
    headersTimeoutMs: integer('headersTimeoutMs', o.headersTimeoutMs, 1, 3_600_000),
    requestTimeoutMs: integer('requestTimeoutMs', o.requestTimeoutMs, 1, 3_600_000),
    keepAliveTimeoutMs: integer('keepAliveTimeoutMs', o.keepAliveTimeoutMs, 1, 3_600_000),
    volumeBytesMax: integer('volumeBytesMax', o.volumeBytesMax, 64 * 1024, VOLUME_BYTES_MAX),
    volumesMax: integer('volumesMax', o.volumesMax, 1, 100_000),
    fsync: oneOf('fsync', o.fsync, ['group', 'interval', 'none'] as const),
    fsyncIntervalMs: integer('fsyncIntervalMs', o.fsyncIntervalMs, 1, 60_000),
    writeQueueMax: integer('writeQueueMax', o.writeQueueMax, 1, 1_000_000),
    writeBatchBytesMax: integer('writeBatchBytesMax', o.writeBatchBytesMax, 64 * 1024, 1024 * MiB),
    writeBatchMax: integer('writeBatchMax', o.writeBatchMax, 1, 65536),
    syncReadBytesMax: integer('syncReadBytesMax', o.syncReadBytesMax, 0, 64 * MiB),
    readCacheBytes: integer('readCacheBytes', o.readCacheBytes, 0, 64 * 1024 * MiB),
    scrubBytesPerSecond: integer('scrubBytesPerSecond', o.scrubBytesPerSecond, 0, 64 * 1024 * MiB),
    scrubIntervalHours: hours('scrubIntervalHours', o.scrubIntervalHours),
    now: o.now ?? Date.now,
    log: o.log ?? ((message: string) => process.stderr.write(`${message}\n`)),
  }
  if (resolved.headersTimeoutMs > resolved.requestTimeoutMs) {
    throw new NeedleError('NS_ERR_BAD_OPTION', 'headersTimeoutMs must not exceed requestTimeoutMs')
  }
  return Object.freeze(resolved)
}

/** A number of hours from 0 to a year (fractions allowed). */
function hours(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 365 * 24) {
    throw new NeedleError('NS_ERR_BAD_OPTION', `${name} must be a number of hours from 0 to 8760 (got ${JSON.stringify(value)})`)
  }
  return value
}

function masterUrl(text: string): string {
  const url = /^https?:\/\//.test(text) ? text : `http://${text}`
  try {
    return new URL(url).origin
  } catch {
    throw new NeedleError('NS_ERR_BAD_OPTION', `master must be host:port or http://host:port (got ${JSON.stringify(text)})`)
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}
