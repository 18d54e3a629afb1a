import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { stopOnSignals } from './signals.js'

interface DevArgs {
  dir: string
  host: string
  masterPort: number
  port: number
  dataServers: number
  secret?: string
}

interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly url: Promise<string>
  readonly exited: Promise<void>
}

const START_TIMEOUT_MS = 30_000

/**
 * Runs `needlestore <args>` as a child process whose output lines are prefixed with its name;
 * url resolves with the address it prints once listening.
 */
function runChild(name: string, args: string[]): Child {
  const child = spawn(process.execPath, [process.argv[1]!, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let resolveUrl: (url: string) => void
  let rejectUrl: (err: Error) => void
  const url = new Promise<string>((resolve, reject) => {
    resolveUrl = resolve
    rejectUrl = reject
  })
  const timer = setTimeout(() => rejectUrl(new Error(`${name} did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS)
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const m = /listening on (http:\/\/\S+)/.exec(line)
    if (m) {
      clearTimeout(timer)
      resolveUrl(m[1]!)
    } else {
      process.stdout.write(`[${name}] ${line}\n`)
    }
  })
  createInterface({ input: child.stderr! }).on('line', (line) => process.stderr.write(`[${name}] ${line}\n`))
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      rejectUrl(new Error(`${name} exited (code ${code}, signal ${signal}) before it listened`))
      resolve()
    })
  })
  url.catch(() => {})
  return { name, process: child, url, exited }
}

/**
 * The local cluster `npm start` runs: a master and data servers on loopback, each a process of
 * its own as in a real deployment, data under ./data. Ctrl-C stops them all.
 */
export const devCommand: CommandModule<object, DevArgs> = {
  command: 'dev',
  describe: 'run a local cluster on loopback: a master and 3 data servers (data under ./data)',
  builder: (y) =>
    y
      .option('dir', { type: 'string', default: 'data', describe: 'directory for all data' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address every server listens on' })
      .option('master-port', { type: 'number', default: 9333, describe: 'port of the master' })
      .option('port', { type: 'number', default: 8080, describe: 'port of the first data server; the others follow (0: any free ports)' })
      .option('data-servers', { type: 'number', default: 3, describe: 'data servers to run' })
      .option('secret', { type: 'string', describe: 'cluster secret (none: everything is open on loopback)' }) as unknown as Argv<DevArgs>,
  handler: async (args: ArgumentsCamelCase<DevArgs>) => {
    const secret = args.secret ? ['--secret', args.secret] : []
    const children: Child[] = []
    let stopping = false
    const stopAll = async () => {
      stopping = true
      for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGTERM')
      await Promise.all(children.map((c) => c.exited))
    }
    stopOnSignals(stopAll)
    const watch = (c: Child) =>
      void c.exited.then(async () => {
        if (stopping) return
        process.stderr.write(`needlestore: ${c.name} stopped unexpectedly; stopping the cluster\n`)
        await stopAll()
        process.exit(1)
      })

    const masterDir = join(args.dir, 'master')
    await mkdir(masterDir, { recursive: true })
    // The replication is fixed from the start, so that a write that comes before every data
    // server has registered waits for them (a 503 to retry) instead of taking a single copy.
    const replication = ['--default-replication', args.dataServers >= 3 ? '002' : '000']
    const master = runChild('master', ['master', '--dir', masterDir, '--host', args.host, '--port', String(args.masterPort), ...replication, ...secret])
    children.push(master)
    watch(master)
    const masterUrl = await master.url
    const servers: Child[] = []
    for (let i = 1; i <= args.dataServers; i++) {
      const dir = join(args.dir, `dataserver${i}`)
      await mkdir(dir, { recursive: true })
      const server = runChild(`dataserver${i}`, [
        'dataserver', '--dir', dir, '--host', args.host, '--port', String(args.port === 0 ? 0 : args.port + i - 1), '--master', masterUrl, ...secret,
      ])
      children.push(server)
      servers.push(server)
      watch(server)
    }
    const urls = await Promise.all(servers.map((s) => s.url))
    process.stdout.write(
      [
        `needlestore local cluster: master ${masterUrl}, data servers ${urls.join(', ')} (data in ${args.dir}; pids ${children.map((c) => c.process.pid).join(', ')})`,
        `  store:     curl -F file=@photo.jpg ${masterUrl}/submit`,
        `  assign:    curl ${masterUrl}/dir/assign      then  curl -F file=@photo.jpg http://<url>/<fid>`,
        `  fetch:     curl -L ${masterUrl}/<fid>`,
        `  dashboard: ${masterUrl}/`,
        `Writes keep ${args.dataServers >= 3 ? 'three copies' : 'one copy'}${secret.length ? '' : '; no secret is set, so everything is open on loopback'}. Ctrl-C stops it.`,
        '',
      ].join('\n'),
    )
  },
}
