/**
 * Shared pieces of the benchmarks: real server processes, a load generator run, and a report
 * that prints each figure next to a baseline measured in the same run on the same machine.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import autocannon from 'autocannon'
import { request } from 'undici'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js')

export interface ServerProcess {
  readonly url: string
  readonly child: ChildProcess
  stop(): Promise<void>
}

/** Node flags for every server a benchmark starts, e.g. `--cpu-prof` to profile them. */
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')

/** Starts a node script that prints "listening on <url>" when ready. */
export async function startProcess(script: string, args: string[], timeoutMs = 20_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, [...SERVER_NODE_ARGS, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`no "listening on" within ${timeoutMs} ms: ${stderr}`)), timeoutMs)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (http:\/\/[^\s]+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`exited with ${code} before listening: ${stderr}`))
    })
  })
  return {
    url,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

export function startDataServerProcess(dir: string, flags: string[] = []): Promise<ServerProcess> {
  return startProcess(CLI, ['dataserver', '--dir', dir, '--port', '0', ...flags])
}

export interface LoadResult {
  readonly requestsPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly non2xx: number
}

export interface LoadOptions {
  readonly url: string
  readonly connections: number
  readonly durationSec: number
  readonly method?: 'GET' | 'POST' | 'PUT' | 'DELETE'
  readonly body?: Buffer
  /** Path of each request; called once per request. */
  readonly path: () => string
  /** Stop after this many requests instead of after durationSec (autocannon only). */
  readonly amount?: number
}

/** wrk, when installed (it loads a server harder than autocannon can from a 2-core machine). */
export const WRK = ['/usr/bin/wrk', '/usr/local/bin/wrk'].find((p) => existsSync(p))

/** The load generator load() uses. */
export const LOAD_GENERATOR = WRK ? 'wrk' : 'autocannon'

/**
 * Runs a load against url: with wrk when it is installed and the request is a GET, else with
 * autocannon. Each request's path comes from opts.path (wrk: a list of 4096 paths drawn in
 * advance, cycled through).
 */
export async function load(opts: LoadOptions): Promise<LoadResult> {
  if (WRK && (opts.method ?? 'GET') === 'GET' && opts.amount === undefined) return loadWithWrk(WRK, opts)
  return loadWithAutocannon(opts)
}

async function loadWithWrk(wrk: string, opts: LoadOptions): Promise<LoadResult> {
  const dir = await mkdtemp(join(tmpdir(), 'needlestore-wrk-'))
  try {
    const paths = Array.from({ length: 4096 }, () => opts.path())
    const script = join(dir, 'paths.lua')
    await writeFile(
      script,
      [
        `local paths = { ${paths.map((p) => JSON.stringify(p)).join(', ')} }`,
        'local i = 0',
        'request = function() i = i % #paths + 1; return wrk.format("GET", paths[i]) end',
        'done = function(summary, latency, requests)',
        '  io.write(string.format("JSON {\\"rps\\":%f,\\"p50\\":%f,\\"p99\\":%f,\\"errors\\":%d,\\"non2xx\\":%d}\\n",',
        '    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,',
        '    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))',
        'end',
      ].join('\n'),
    )
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(wrk, ['-t1', `-c${opts.connections}`, `-d${opts.durationSec}s`, '-s', script, opts.url], { stdio: ['ignore', 'pipe', 'inherit'] })
      let text = ''
      child.stdout!.on('data', (d: Buffer) => (text += d.toString()))
      child.once('error', reject)
      child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited with ${code}`))))
    })
    const m = /JSON (\{.*\})/.exec(out)
    if (!m) throw new Error(`no result from wrk: ${out}`)
    const r = JSON.parse(m[1]!) as { rps: number; p50: number; p99: number; errors: number; non2xx: number }
    return { requestsPerSec: r.rps, p50Ms: r.p50, p99Ms: r.p99, errors: r.errors, non2xx: r.non2xx }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function loadWithAutocannon(opts: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: opts.url,
    connections: opts.connections,
    ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationSec }),
    requests: [
      {
        method: opts.method ?? 'GET',
        ...(opts.body ? { body: opts.body } : {}),
        setupRequest: (req) => ({ ...req, path: opts.path() }),
      },
    ],
  })
  return {
    // A run cut by amount ends inside a second, which the per-second average would count whole.
    requestsPerSec: opts.amount !== undefined ? result.requests.total / result.duration : result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  }
}

export function parseArgs(defaults: Record<string, number>): Record<string, number> {
  const out = { ...defaults }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]!.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    if (key in out) out[key] = Number(argv[++i])
  }
  return out
}

/** One line per figure, then a machine-readable line `RESULT {...}`. */
export function report(name: string, lines: string[], result: Record<string, unknown>): void {
  process.stdout.write(`\n== ${name}\n${lines.map((l) => `  ${l}`).join('\n')}\nRESULT ${JSON.stringify({ bench: name, ...result })}\n`)
}

/** The median of a list of numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

export interface LocalCluster {
  readonly master: ServerProcess
  readonly dataServers: readonly ServerProcess[]
  stop(): Promise<void>
}

/** A master and n data servers (one rack), each its own process, data under dir. */
export async function startLocalCluster(dir: string, n: number, dataServerFlags: string[] = []): Promise<LocalCluster> {
  const master = await startProcess(CLI, ['master', '--dir', join(dir, 'master'), '--port', '0'])
  const dataServers: ServerProcess[] = []
  try {
    for (let i = 1; i <= n; i++) {
      dataServers.push(await startDataServerProcess(join(dir, `dataserver${i}`), ['--master', master.url, '--heartbeat-interval-ms', '500', ...dataServerFlags]))
    }
    const deadline = Date.now() + 20_000
    for (;;) {
      const status = (await (await fetch(`${master.url}/dir/status`)).json()) as { Topology: { DataCenters: { Racks: { DataNodes: { Alive: boolean }[] }[] }[] } }
      const alive = status.Topology.DataCenters.flatMap((d) => d.Racks.flatMap((r) => r.DataNodes)).filter((n) => n.Alive).length
      if (alive === n) break
      if (Date.now() > deadline) throw new Error(`only ${alive} of ${n} data servers registered`)
      await new Promise((r) => setTimeout(r, 100))
    }
  } catch (err) {
    await Promise.all([master, ...dataServers].map((p) => p.stop()))
    throw err
  }
  return { master, dataServers, stop: () => Promise.all([...dataServers, master].map((p) => p.stop())).then(() => {}) }
}

/** Grows volume 1 with this replication on the cluster; answers the URL of a data server holding it. */
export async function growFirstVolume(cluster: LocalCluster, replication: string): Promise<string> {
  const grown = await request(`${cluster.master.url}/vol/grow?count=1&replication=${replication}`, { method: 'POST' })
  if (grown.statusCode !== 200) throw new Error(`vol/grow: ${grown.statusCode} ${await grown.body.text()}`)
  await grown.body.dump()
  const lookup = (await (await request(`${cluster.master.url}/dir/lookup?volumeId=1`)).body.json()) as { locations: { url: string }[] }
  return `http://${lookup.locations[0]!.url}`
}
