/**
 * A real local cluster for multi-process tests: one master and N data servers, each a child
 * process of the compiled CLI, on loopback ports the OS picks, under one temporary directory.
 *
 *   const cluster = await startCluster(t, { dataServers: 3, secret: 's3cret' })
 *   const { fid, url } = await cluster.assign()
 *
 * startCluster returns once the master's /dir/status lists every data server as alive; its
 * teardown stops every process (a paused one gets SIGCONT first) and removes the directory.
 * Restarts reuse the directory and the port the process had, so the addresses the master and
 * the data servers know stay valid. Every wait polls with a deadline.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request, type Dispatcher } from 'undici'
import type { AssignResult } from '../../src/master/index.js'
import { startServerProcess, type ProcessOptions, type ServerProcess } from './dataserver-process.js'

export type { ServerProcess } from './dataserver-process.js'

/** What startCluster needs of a test: a tap `Test`, or anything else with `teardown`. */
export interface Teardown {
  teardown(fn: () => unknown): void
}

export interface ClusterOptions {
  /** Data servers to start (default 3). */
  readonly dataServers?: number
  /** The cluster secret, given to the master and every data server (`--secret`). */
  readonly secret?: string
  /** Data servers' `--heartbeat-interval-ms` (default 200). */
  readonly heartbeatIntervalMs?: number
  /** The master's `--dead-after-ms` (default 1500). */
  readonly deadAfterMs?: number
  /** Data servers' `--replicate-timeout-ms` (default: the server's own). */
  readonly replicateTimeoutMs?: number
  /** Extra flags for the master, for example ['--token-ttl-seconds', '1']. */
  readonly masterArgs?: readonly string[]
  /** Extra flags for data server `index`. */
  readonly dataServerArgs?: (index: number) => readonly string[]
  /** `--rack` of data server `index` (default: the server's own, rack1). */
  readonly racks?: (index: number) => string
  /** How long startCluster waits for the cluster to be whole (default 30 s). */
  readonly startTimeoutMs?: number
  /** Start and stop timeouts of each process. */
  readonly process?: ProcessOptions
}

/** What /dir/assign answers (the master's own type: the tests speak its wire format). */
export type { AssignResult } from '../../src/master/index.js'

export interface Cluster {
  /** The temporary directory that holds every process's data (`master/`, `dataserver-<i>/`). */
  readonly dir: string
  /** The current master process (startMaster replaces it). */
  readonly master: ServerProcess
  /** The current data server processes (restartDataServer replaces an element in place). */
  readonly dataServers: readonly ServerProcess[]
  /** `http://127.0.0.1:PORT` of the master; the same across restarts. */
  readonly masterUrl: string
  /** The secret the cluster runs with, if any. */
  readonly secret: string | undefined
  /**
   * Starts the master again on the same directory and the same port (stopping it first with
   * SIGTERM if it still runs), then waits until /dir/status lists every running, unpaused data
   * server as alive.
   */
  startMaster(): Promise<void>
  /**
   * Starts data server i again on the same directory and the same port (stopping it first with
   * SIGTERM if it still runs); if the master runs, waits until it lists the server as alive.
   */
  restartDataServer(i: number): Promise<void>
  /**
   * Polls fn until it answers something other than undefined or false, and returns that. A
   * throw counts as "not yet" (a server may be restarting); the last one is in the timeout's
   * message. Default timeout 20 s.
   */
  waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs?: number): Promise<T>
  /**
   * `GET /dir/assign?<query>` (query without or with its leading '?'). A 503 (the master not
   * ready yet, no writable volume yet) is retried until a deadline; any other non-200 throws.
   */
  assign(query?: string): Promise<AssignResult>
  /** `host:port` of every data server /dir/status lists as alive. */
  aliveDataServers(): Promise<Set<string>>
  /** The data server process whose address (`host:port`, or a URL) this is. */
  dataServerAt(address: string): ServerProcess | undefined
  /** Stops every process (SIGTERM; paused ones get SIGCONT first) and removes the directory.
   *  Idempotent; startCluster registers it as the test's teardown. */
  stop(): Promise<void>
}

const POLL_MS = 25
const DEFAULT_WAIT_MS = 20_000

/** The shape of /dir/status this helper reads. */
interface DirStatus {
  Topology?: {
    DataCenters?: Array<{ Racks?: Array<{ DataNodes?: Array<{ Url?: string; Alive?: boolean }> }> }>
  }
}

function hostOf(address: string): string {
  return address.includes('://') ? new URL(address).host : address
}

class LocalCluster implements Cluster {
  readonly dir: string
  readonly secret: string | undefined
  readonly dataServers: ServerProcess[] = []
  private currentMaster: ServerProcess | undefined
  private masterPort = 0
  private readonly dataServerPorts: number[] = []
  private readonly dispatcher: Dispatcher = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000, connections: 8 })
  private stopped: Promise<void> | undefined

  constructor(
    dir: string,
    private readonly opts: ClusterOptions,
  ) {
    this.dir = dir
    this.secret = opts.secret
  }

  get master(): ServerProcess {
    if (!this.currentMaster) throw new Error('the master has not been started')
    return this.currentMaster
  }

  get masterUrl(): string {
    if (this.masterPort === 0) throw new Error('the master has not been started')
    return `http://127.0.0.1:${this.masterPort}`
  }

  private masterDir(): string {
    return join(this.dir, 'master')
  }

  private dataServerDir(i: number): string {
    return join(this.dir, `dataserver-${i}`)
  }

  private secretArgs(): string[] {
    return this.secret === undefined ? [] : ['--secret', this.secret]
  }

  async spawnMaster(): Promise<void> {
    await mkdir(this.masterDir(), { recursive: true })
    const proc = await startServerProcess(
      'master',
      [
        '--dir', this.masterDir(),
        '--port', String(this.masterPort),
        '--dead-after-ms', String(this.opts.deadAfterMs ?? 1500),
        ...this.secretArgs(),
        ...(this.opts.masterArgs ?? []),
      ],
      this.opts.process,
    )
    this.currentMaster = proc
    this.masterPort = proc.port
  }

  async spawnDataServer(i: number): Promise<ServerProcess> {
    await mkdir(this.dataServerDir(i), { recursive: true })
    const opts = this.opts
    const proc = await startServerProcess(
      'dataserver',
      [
        '--dir', this.dataServerDir(i),
        '--port', String(this.dataServerPorts[i] ?? 0),
        '--master', this.masterUrl,
        '--heartbeat-interval-ms', String(opts.heartbeatIntervalMs ?? 200),
        ...(opts.replicateTimeoutMs === undefined ? [] : ['--replicate-timeout-ms', String(opts.replicateTimeoutMs)]),
        ...(opts.racks === undefined ? [] : ['--rack', opts.racks(i)]),
        ...this.secretArgs(),
        ...(opts.dataServerArgs?.(i) ?? []),
      ],
      opts.process,
    )
    this.dataServerPorts[i] = proc.port
    this.dataServers[i] = proc
    return proc
  }

  /** Starts data servers 0 … n-1 together; records each that started, then throws the first failure. */
  async spawnDataServers(n: number): Promise<void> {
    const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => this.spawnDataServer(i)))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  async waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = DEFAULT_WAIT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs
    let lastError: unknown
    for (;;) {
      try {
        const value = await fn()
        if (value !== undefined && value !== false) return value
        lastError = undefined
      } catch (err) {
        lastError = err
      }
      if (Date.now() >= deadline) {
        const last = lastError === undefined ? '' : `; last error: ${(lastError as Error).message ?? String(lastError)}`
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`)
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS))
    }
  }

  async aliveDataServers(): Promise<Set<string>> {
    const res = await request(`${this.masterUrl}/dir/status`, { dispatcher: this.dispatcher })
    const text = await res.body.text()
    if (res.statusCode !== 200) throw new Error(`/dir/status answered ${res.statusCode}: ${text}`)
    const status = JSON.parse(text) as DirStatus
    const alive = new Set<string>()
    for (const dc of status.Topology?.DataCenters ?? []) {
      for (const rack of dc.Racks ?? []) {
        for (const node of rack.DataNodes ?? []) {
          if (node.Alive === true && typeof node.Url === 'string') alive.add(hostOf(node.Url))
        }
      }
    }
    return alive
  }

  dataServerAt(address: string): ServerProcess | undefined {
    const host = hostOf(address)
    return this.dataServers.find((p) => p.address === host)
  }

  /** Waits until the master lists every running, unpaused data server as alive. */
  async waitAllAlive(timeoutMs = this.opts.startTimeoutMs ?? 30_000): Promise<void> {
    const wanted = () => this.dataServers.filter((p) => !p.exited() && !p.paused()).map((p) => p.address)
    await this.waitFor(
      `the master to list ${wanted().join(', ')} as alive`,
      async () => {
        const alive = await this.aliveDataServers()
        return wanted().every((a) => alive.has(a))
      },
      timeoutMs,
    )
  }

  async startMaster(): Promise<void> {
    if (this.currentMaster && !this.currentMaster.exited()) await this.currentMaster.stop()
    await this.spawnMaster()
    await this.waitAllAlive()
  }

  async restartDataServer(i: number): Promise<void> {
    const old = this.dataServers[i]
    if (!old) throw new Error(`there is no data server ${i}`)
    if (!old.exited()) await old.stop()
    const proc = await this.spawnDataServer(i)
    if (this.currentMaster && !this.currentMaster.exited() && !this.currentMaster.paused()) {
      await this.waitFor(`the master to list ${proc.address} as alive`, async () => (await this.aliveDataServers()).has(proc.address), this.opts.startTimeoutMs ?? 30_000)
    }
  }

  async assign(query = ''): Promise<AssignResult> {
    const q = query === '' || query.startsWith('?') ? query : `?${query}`
    return this.waitFor(`/dir/assign${q} to answer 200`, async () => {
      const res = await request(`${this.masterUrl}/dir/assign${q}`, { dispatcher: this.dispatcher })
      const text = await res.body.text()
      if (res.statusCode === 503) throw new Error(`503 ${text}`)
      if (res.statusCode !== 200) throw new Error(`/dir/assign${q} answered ${res.statusCode}: ${text}`)
      return JSON.parse(text) as AssignResult
    })
  }

  stop(): Promise<void> {
    this.stopped ??= this.stopAll()
    return this.stopped
  }

  private async stopAll(): Promise<void> {
    const errors: unknown[] = []
    const settle = async (p: Promise<unknown>) => {
      try {
        await p
      } catch (err) {
        errors.push(err)
      }
    }
    // Data servers first, so that none of them reports a vanished master on its way out.
    await Promise.all(this.dataServers.filter(Boolean).map((p) => settle(p.stop())))
    if (this.currentMaster) await settle(this.currentMaster.stop())
    await settle(this.dispatcher.destroy())
    await settle(rm(this.dir, { recursive: true, force: true }))
    if (errors.length > 0) throw errors[0]
  }
}

/**
 * Starts a master and opts.dataServers data servers (default 3) under a new temporary
 * directory, and waits until the master lists every data server as alive. The test's teardown
 * stops them all and removes the directory.
 */
export async function startCluster(t: Teardown, opts: ClusterOptions = {}): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'ns-cluster-'))
  const cluster = new LocalCluster(dir, opts)
  t.teardown(() => cluster.stop())
  await cluster.spawnMaster()
  await cluster.spawnDataServers(opts.dataServers ?? 3)
  await cluster.waitAllAlive()
  return cluster
}
