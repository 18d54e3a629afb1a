/**
 * Shared pieces of the benchmarks: real server processes, a load generator run, and a report
 * that prints each figure next to a baseline measured in the same run on the same machine.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import autocannon from 'autocannon'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js')

export interface ServerProcess {
  readonly url: string
  readonly child: ChildProcess
  stop(): Promise<void>
}

/** Starts a node script that prints "listening on <url>" when ready. */
export async function startProcess(script: string, args: string[], timeoutMs = 20_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
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
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: opts.url,
    connections: opts.connections,
    duration: opts.durationSec,
    requests: [
      {
        method: opts.method ?? 'GET',
        ...(opts.body ? { body: opts.body } : {}),
        setupRequest: (req) => ({ ...req, path: opts.path() }),
      },
    ],
  })
  return {
    requestsPerSec: result.requests.average,
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

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}
