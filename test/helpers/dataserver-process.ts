/**
 * Runs real servers as child processes (`node dist/src/cli/main.js master|dataserver …`), for
 * tests that need real sockets, signals or a `kill -9`. The compiled CLI must exist: `npm test`
 * builds it with `tsc -p .` before tap runs.
 *
 * startServerProcess starts either role; startDataServerProcess is the data-server shorthand
 * (`--dir dir --port 0`). test/helpers/cluster.ts builds a whole cluster on top of them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'

export type ServerRole = 'master' | 'dataserver'

export interface ServerProcess {
  readonly role: ServerRole
  /** `http://127.0.0.1:PORT`, as the server printed it. */
  readonly url: string
  /** `127.0.0.1:PORT`: the url without its scheme, as SeaweedFS-style answers spell addresses. */
  readonly address: string
  /** The port it listens on (what `--port 0` turned into). */
  readonly port: number
  readonly pid: number
  readonly child: ChildProcess
  /** Everything the process wrote to stdout so far (its last 64 KiB). */
  stdout(): string
  /** Everything the process wrote to stderr so far (its last 64 KiB; for failure messages). */
  stderr(): string
  /** True once the process has exited. */
  exited(): boolean
  /** True between sigstop() and sigcont(). */
  paused(): boolean
  /** SIGTERM (after a SIGCONT if it is paused), then waits for the exit; SIGKILL if it has not
   *  exited within stopTimeoutMs, and then throws. An exited process answers its exit at once. */
  stop(): Promise<ProcessExit>
  /** SIGKILL, then waits for the exit. */
  kill9(): Promise<ProcessExit>
  /** SIGSTOP: the process freezes (its sockets stay open, nothing answers). Resolves once the
   *  kernel shows it stopped (Linux; elsewhere at once). */
  sigstop(): Promise<void>
  /** SIGCONT: a paused process runs again. Resolves once it no longer shows stopped. */
  sigcont(): Promise<void>
}

/** The data server as the existing tests know it. */
export type DataServerProcess = ServerProcess

export interface ProcessExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface ProcessOptions {
  /** Time to wait for the "listening on" line. */
  readonly startTimeoutMs?: number
  /** Time stop() waits after SIGTERM before it gives up and kills. */
  readonly stopTimeoutMs?: number
  /** Environment variables for the process, beyond the test's own (NEEDLESTORE_* are not passed on). */
  readonly env?: Readonly<Record<string, string>>
}

export interface StartOptions extends ProcessOptions {
  /** Extra CLI flags, for example ['--request-timeout-ms', '1000']. */
  readonly args?: readonly string[]
}

const OUTPUT_KEPT_CHARS = 64 * 1024

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

/** The environment of a child: ours without NEEDLESTORE_* (yargs .env() would make them flags). */
function childEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NEEDLESTORE_'))), ...extra }
}

/** The state letter of /proc/<pid>/stat ('T' when stopped); undefined without /proc. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name is in parentheses and may hold spaces; the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

/**
 * Starts `needlestore <role> …args` and waits until it prints
 * `needlestore <role> listening on http://…`. args are the whole command line after the role
 * (`--dir`, `--port`, …). If it fails to start, it is killed and gone before this rejects, so
 * the caller may remove its directory at once.
 */
export async function startServerProcess(role: ServerRole, args: readonly string[], opts: ProcessOptions = {}): Promise<ServerProcess> {
  if (!existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} is missing; build with "npx tsc -p ." first`)
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000
  const listening = new RegExp(`needlestore ${role} listening on (http://\\S+)`)
  const child = spawn(process.execPath, [CLI_PATH, role, ...args], {
    cwd: repoRoot(),
    env: childEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  let paused = false
  child.stdout!.setEncoding('utf8')
  child.stderr!.setEncoding('utf8')
  // Keep draining both pipes, so that the child never blocks on a full one.
  child.stdout!.on('data', (chunk: string) => {
    stdout = (stdout + chunk).slice(-OUTPUT_KEPT_CHARS)
  })
  child.stderr!.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-OUTPUT_KEPT_CHARS)
  })
  const exit = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  const hasExited = () => child.exitCode !== null || child.signalCode !== null
  const describe = () => `needlestore ${role} (pid ${child.pid})`

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
    if (!result) throw new Error(`${describe()} did not exit after SIGKILL`)
    paused = false
    return result
  }
  /** Polls /proc until the process is (or is no longer) stopped; without /proc, returns. */
  const waitState = async (stopped: boolean): Promise<void> => {
    const deadline = Date.now() + 5000
    for (;;) {
      const state = procState(child.pid!)
      if (state === undefined || hasExited() || (state === 'T') === stopped) return
      if (Date.now() > deadline) throw new Error(`${describe()} is in state ${state}, not ${stopped ? 'stopped' : 'running'}, 5 s after the signal`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }

  const url = await new Promise<string>((resolve, reject) => {
    const fail = (why: string) => {
      cleanup()
      // Wait for the child to be gone, so that the caller may remove its directory at once.
      const gone = hasExited() ? Promise.resolve() : (child.kill('SIGKILL'), waitExit(10_000))
      void gone.then(() => reject(new Error(`${describe()} ${why}\nargs: ${args.join(' ')}\nstdout:\n${stdout}\nstderr:\n${stderr}`)))
    }
    const onData = () => {
      const m = listening.exec(stdout)
      if (m) {
        cleanup()
        resolve(m[1]!)
      }
    }
    // 'close' comes after the exit and the last output, so the message holds all of it.
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => fail(`exited (code ${code}, signal ${signal}) before it listened`)
    const onError = (err: Error) => fail(`could not be started: ${err.message}`)
    const timer = setTimeout(() => fail(`did not print "listening on" within ${startTimeoutMs} ms`), startTimeoutMs)
    const cleanup = () => {
      clearTimeout(timer)
      child.stdout!.off('data', onData)
      child.off('close', onExit)
      child.off('error', onError)
    }
    // Registered after the collecting listener above, so stdout already holds the chunk.
    child.stdout!.on('data', onData)
    child.once('close', onExit)
    child.once('error', onError)
  })
  const parsed = new URL(url)

  return {
    role,
    url,
    address: parsed.host,
    port: Number(parsed.port),
    pid: child.pid!,
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited: hasExited,
    paused: () => paused && !hasExited(),
    kill9,
    async sigstop() {
      if (hasExited()) throw new Error(`${describe()} has exited; it cannot be paused`)
      process.kill(child.pid!, 'SIGSTOP')
      paused = true
      await waitState(true)
    },
    async sigcont() {
      if (hasExited()) return
      process.kill(child.pid!, 'SIGCONT')
      paused = false
      await waitState(false)
    },
    async stop() {
      if (!hasExited()) {
        // A stopped process would keep SIGTERM pending forever.
        if (paused) {
          process.kill(child.pid!, 'SIGCONT')
          paused = false
        }
        child.kill('SIGTERM')
      }
      const result = await waitExit(stopTimeoutMs)
      if (result) return result
      await kill9()
      throw new Error(`${describe()} did not exit within ${stopTimeoutMs} ms of SIGTERM; killed it\nstderr:\n${stderr}`)
    },
  }
}

/** Starts `needlestore dataserver --dir dir --port 0 …args` and waits until it listens. */
export async function startDataServerProcess(dir: string, opts: StartOptions = {}): Promise<DataServerProcess> {
  return startServerProcess('dataserver', ['--dir', dir, '--port', '0', ...(opts.args ?? [])], opts)
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
