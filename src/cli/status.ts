/**
 * `needlestore status`: the cluster as the master sees it, from `/dir/status` (servers) and
 * `/vol/status` (volumes), as aligned tables; `--json` prints both answers as they came.
 * The answers are read defensively: a field missing or of another type shows as empty rather
 * than failing the command, since status is what an operator runs when something is wrong.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { clientFlags, runClientCommand, type ClientArgs } from './client-options.js'
import { EXIT_OK } from './exit-codes.js'
import { formatBytes } from './progress.js'
import { formatTable } from './table.js'

export interface ServerRow {
  readonly url: string
  readonly dataCenter: string
  readonly rack: string
  readonly alive: boolean | undefined
  readonly volumes: number | undefined
  readonly max: number | undefined
  readonly free: number | undefined
  readonly heartbeatAgeMs: number | undefined
}

export interface VolumeRow {
  readonly id: number | undefined
  readonly collection: string
  readonly replication: string
  readonly size: number | undefined
  readonly files: number | undefined
  readonly deleted: number | undefined
  readonly garbageRatio: number | undefined
  readonly writable: boolean | undefined
  readonly reason: string
  readonly copies: number | undefined
  readonly copiesAlive: number
  readonly locations: number
}

type Json = Record<string, unknown>

const obj = (v: unknown): Json => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {})
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : [])
const str = (v: unknown): string => (typeof v === 'string' ? v : '')
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined)

/** The data servers of a `/dir/status` answer, with the data center and rack they sit in. */
export function serverRows(dirStatus: unknown): ServerRow[] {
  const rows: ServerRow[] = []
  for (const dc of arr(obj(obj(dirStatus).Topology).DataCenters)) {
    for (const rack of arr(obj(dc).Racks)) {
      for (const node of arr(obj(rack).DataNodes)) {
        const n = obj(node)
        rows.push({
          url: str(n.Url),
          dataCenter: str(obj(dc).Id),
          rack: str(obj(rack).Id),
          alive: bool(n.Alive),
          volumes: num(n.Volumes),
          max: num(n.Max),
          free: num(n.Free),
          heartbeatAgeMs: num(n.LastHeartbeatAgeMs),
        })
      }
    }
  }
  return rows.sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0))
}

/** The volumes of a `/vol/status` answer, by id. */
export function volumeRows(volStatus: unknown): VolumeRow[] {
  return arr(obj(volStatus).Volumes)
    .map((volume) => {
      const v = obj(volume)
      const locations = arr(v.Locations)
      return {
        id: num(v.Id),
        collection: str(v.Collection),
        replication: str(v.ReplicaPlacement),
        size: num(v.Size),
        files: num(v.FileCount),
        deleted: num(v.DeleteCount),
        garbageRatio: num(v.GarbageRatio),
        writable: bool(v.Writable),
        reason: str(v.Reason),
        copies: num(v.Copies),
        copiesAlive: locations.filter((l) => obj(l).alive === true).length,
        locations: locations.length,
      }
    })
    .sort((a, b) => (a.id ?? 0) - (b.id ?? 0))
}

const yesNo = (v: boolean | undefined) => (v === undefined ? '' : v ? 'yes' : 'no')
const bytes = (v: number | undefined) => (v === undefined ? '' : formatBytes(v))
const seconds = (ms: number | undefined) => (ms === undefined ? '' : `${(ms / 1000).toFixed(1)}s`)
const percent = (ratio: number | undefined) => (ratio === undefined ? '' : `${(ratio * 100).toFixed(1)}%`)

/** The summary line of the cluster. */
export function clusterLine(master: string, dirStatus: unknown, servers: readonly ServerRow[], volumes: readonly VolumeRow[]): string {
  const topology = obj(obj(dirStatus).Topology)
  const version = str(obj(dirStatus).Version)
  const alive = servers.filter((s) => s.alive === true).length
  const files = volumes.reduce((sum, v) => sum + (v.files ?? 0), 0)
  const size = volumes.reduce((sum, v) => sum + (v.size ?? 0), 0)
  const writable = volumes.filter((v) => v.writable === true).length
  const free = num(topology.Free)
  const max = num(topology.Max)
  return [
    `master ${master}${version === '' ? '' : ` (${version})`}`,
    `servers ${alive}/${servers.length} alive`,
    `volumes ${volumes.length} (${writable} writable)`,
    `free slots ${free ?? '?'}/${max ?? '?'}`,
    `files ${files}`,
    `size ${formatBytes(size)}`,
  ].join(', ')
}

/** The whole status as text: a summary line, the servers' table, the volumes' table. */
export function formatStatus(master: string, dirStatus: unknown, volStatus: unknown): string {
  const servers = serverRows(dirStatus)
  const volumes = volumeRows(volStatus)
  const serverTable = formatTable(
    [
      { header: 'SERVER' },
      { header: 'DC' },
      { header: 'RACK' },
      { header: 'ALIVE' },
      { header: 'VOLUMES', align: 'right' },
      { header: 'MAX', align: 'right' },
      { header: 'FREE', align: 'right' },
      { header: 'HEARTBEAT', align: 'right' },
    ],
    servers.map((s) => [s.url, s.dataCenter, s.rack, yesNo(s.alive), s.volumes, s.max, s.free, seconds(s.heartbeatAgeMs)]),
  )
  const volumeTable = formatTable(
    [
      { header: 'VOLUME', align: 'right' },
      { header: 'COLLECTION' },
      { header: 'REPLICATION' },
      { header: 'SIZE', align: 'right' },
      { header: 'FILES', align: 'right' },
      { header: 'DELETED', align: 'right' },
      { header: 'GARBAGE', align: 'right' },
      { header: 'COPIES', align: 'right' },
      { header: 'WRITABLE' },
    ],
    volumes.map((v) => [
      v.id,
      v.collection === '' ? '-' : v.collection,
      v.replication,
      bytes(v.size),
      v.files,
      v.deleted,
      percent(v.garbageRatio),
      `${v.copiesAlive}/${v.copies ?? v.locations}`,
      v.writable === false && v.reason !== '' ? `no: ${v.reason}` : yesNo(v.writable),
    ]),
  )
  return `${clusterLine(master, dirStatus, servers, volumes)}\n\n${serverTable}\n${volumeTable}`
}

export const statusCommand: CommandModule<object, ClientArgs> = {
  command: 'status',
  describe: 'the cluster: data servers and volumes, as tables (or --json)',
  builder: (y) => clientFlags(y) as unknown as Argv<ClientArgs>,
  handler: (args: ArgumentsCamelCase<ClientArgs>) =>
    runClientCommand(args, async ({ client, out, master }) => {
      const [cluster, volumes] = await Promise.all([client.clusterStatus(), client.volumeStatus()])
      if (args.json) out.json({ cluster, volumes })
      else out.stdout.write(formatStatus(master, cluster, volumes))
      return EXIT_OK
    }),
}
