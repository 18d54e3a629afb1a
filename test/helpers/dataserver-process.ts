/**
 * Runs a real data server as a child process (`node dist/src/cli/main.js dataserver …`), for
 * tests that need real sockets, signals or a `kill -9`. The compiled CLI must exist: `npm test`
 * builds it with `tsc -p .` before tap runs.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'

export interface DataServerProcess {
  /** `http://127.0.0.1:PORT`, as the server printed it. */
  readonly url: string
  readonly pid: number
  readonly child: ChildProcess
  /** Everything the process wrote to stderr so far (for failure messages). */
  stderr(): string
  /** True once the process has exited. */
  exited(): boolean
  /** SIGTERM, then waits for the exit; SIGKILL if it has not exited within stopTimeoutMs. */
  stop(): Promise<ProcessExit>
  /** SIGKILL, then waits for the exit. */
  kill9(): Promise<ProcessExit>
}

export interface ProcessExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface StartOptions {
  /** Extra CLI flags, for example ['--request-timeout-ms', '1000']. */
  readonly args?: readonly string[]
  /** Time to wait for the "listening on" line. */
  readonly startTimeoutMs?: number
  /** Time stop() waits after SIGTERM before it gives up and kills. */
  readonly stopTimeoutMs?: number
}

const LISTENING = /needlestore dataserver listening on (http:\/\/\S+)/
const STDERR_KEPT_BYTES = 64 * 1024

/** The repository root: the nearest directory above this file with needlestore's package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'needlestore') return dir
    const parent = dirname(dir)
    if (parent === dir) throw new Error('cannot find the needlestore repository root')
    dir = parent
  }
}

export const CLI_PATH = join(repoRoot(), 'dist', 'src', 'cli', 'main.js')

/** Starts `needlestore dataserver --dir dir --port 0 …args` and waits until it listens. */
export async function startDataServerProcess(dir: string, opts: StartOptions = {}): Promise<DataServerProcess> {
  if (!existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} is missing; build with "npx tsc -p ." first`)
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000
  // NEEDLESTORE_* variables would become flags (yargs .env()); a test must not inherit them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NEEDLESTORE_')))
  const child = spawn(process.execPath, [CLI_PATH, 'dataserver', '--dir', dir, '--port', '0', ...(opts.args ?? [])], {
    cwd: repoRoot(),
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8')
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEPT_BYTES)
  })
  const exit = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  const hasExited = () => child.exitCode !== null || child.signalCode !== null

  const waitExit = async (timeoutMs: number): Promise<ProcessExit | undefined> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs)
    })
    try {
      return await Promise.race([exit, timeout])
    } finally {
      clearTimeout(timer)
    }
  }
  const kill9 = async (): Promise<ProcessExit> => {
    if (!hasExited()) child.kill('SIGKILL')
    const result = await waitExit(10_000)
    if (!result) throw new Error(`process ${child.pid} did not exit after SIGKILL`)
    return result
  }

  const url = await new Promise<string>((resolve, reject) => {
    const fail = (why: string) => {
      cleanup()
      // Wait for the child to be gone, so that the caller may remove its directory at once.
      const gone = hasExited() ? Promise.resolve() : (child.kill('SIGKILL'), waitExit(10_000))
      void gone.then(() => reject(new Error(`needlestore dataserver (pid ${child.pid}) ${why}\nstdout:\n${stdout}\nstderr:\n${stderr}`)))
    }
    const onData = (chunk: string) => {
      stdout = (stdout + chunk).slice(-STDERR_KEPT_BYTES)
      const m = LISTENING.exec(stdout)
      if (m) {
        cleanup()
        resolve(m[1]!)
      }
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => fail(`exited (code ${code}, signal ${signal}) before it listened`)
    const onError = (err: Error) => fail(`could not be started: ${err.message}`)
    const timer = setTimeout(() => fail(`did not print "listening on" within ${startTimeoutMs} ms`), startTimeoutMs)
    const cleanup = () => {
      clearTimeout(timer)
      child.stdout!.off('data', onData)
      child.off('exit', onExit)
      child.off('error', onError)
    }
    child.stdout!.on('data', onData)
    child.once('exit', onExit)
    child.once('error', onError)
  })
  // Keep draining stdout so that the child never blocks on a full pipe.
  child.stdout!.on('data', () => {})

  return {
    url,
    pid: child.pid!,
    child,
    stderr: () => stderr,
    exited: hasExited,
    kill9,
    async stop() {
      if (!hasExited()) child.kill('SIGTERM')
      const result = await waitExit(stopTimeoutMs)
      if (result) return result
      await kill9()
      throw new Error(`process ${child.pid} did not exit within ${stopTimeoutMs} ms of SIGTERM; killed it\nstderr:\n${stderr}`)
    },
  }
}

/** Creates volume `id` on the data server at url (`POST /admin/assign_volume`). */
export async function createVolume(url: string, id: number, opts: { replication?: string; secret?: string } = {}): Promise<void> {
  const res = await request(`${url}/admin/assign_volume?volume=${id}&replication=${opts.replication ?? '000'}`, {
    method: 'POST',
    headers: opts.secret === undefined ? {} : { authorization: `Bearer ${opts.secret}` },
  })
  const text = await res.body.text()
  if (res.statusCode !== 201) throw new Error(`assign_volume ${id} answered ${res.statusCode}: ${text}`)
}
