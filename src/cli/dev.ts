import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { startDataServer, type DataServer } from '../dataserver/index.js'
import { dataServerFlags, dataServerInput, type DataServerArgs } from './dataserver.js'
import { stopOnSignals } from './signals.js'

interface DevArgs extends Omit<DataServerArgs, 'port'> {
  port: number
  volumes: number
}

/**
 * A local store for trying needlestore out: data servers on loopback with data under ./data,
 * each with ready volumes. Stops cleanly on Ctrl-C.
 */
export const devCommand: CommandModule<object, DevArgs> = {
  command: 'dev',
  describe: 'run a local store on loopback (data under ./data)',
  builder: (y) =>
    dataServerFlags(y)
      .option('dir', { type: 'string', default: 'data', describe: 'directory for all data' })
      .option('port', { type: 'number', default: 8080, describe: 'port of the data server' })
      .option('volumes', { type: 'number', default: 2, describe: 'volumes to create if none exist' }) as unknown as Argv<DevArgs>,
  handler: async (args: ArgumentsCamelCase<DevArgs>) => {
    const dir = join(args.dir, 'dataserver1')
    await mkdir(dir, { recursive: true })
    const servers: DataServer[] = [await startDataServer(dataServerInput(args, dir, args.port))]
    const server = servers[0]!
    if (server.store.list().length === 0) {
      for (let id = 1; id <= args.volumes; id++) await server.store.create(id, 0)
    }
    const ids = server.store.list().map((v) => v.id)
    process.stdout.write(
      [
        `needlestore dataserver listening on ${server.url} (data in ${dir}, volumes ${ids.join(', ')})`,
        `  store:  curl -F file=@photo.jpg ${server.url}/${ids[0]},01637037d6`,
        `  fetch:  curl ${server.url}/${ids[0]},01637037d6`,
        `  status: curl ${server.url}/status`,
        'Ctrl-C stops it.',
        '',
      ].join('\n'),
    )
    stopOnSignals(async () => {
      await Promise.all(servers.map((s) => s.close()))
    })
  },
}
