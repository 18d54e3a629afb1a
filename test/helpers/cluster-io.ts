/**
 * Raw-HTTP helpers for the multi-process cluster tests: one call with a deadline (a SIGSTOPped
 * server never answers, so every call has one), lookups and volume status from the master,
 * seeded bodies, and the parts of a file id.
 *
 *   const http = new HttpClient(t)
 *   const res = await http.call('POST', `http://${url}/${fid}`, { body })
 */
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { Agent, request, type Dispatcher, type FormData } from 'undici'
import type { Teardown } from './cluster.js'

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE'

export interface Reply {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
  text(): string
  json<T = Record<string, unknown>>(): T
}

export interface CallOptions {
  readonly body?: Buffer | FormData | string
  readonly headers?: Record<string, string>
  /** The whole call must finish within this (default 10 s); a longer one throws. */
  readonly timeoutMs?: number
}

/** One undici pool for a test file; its teardown closes it. */
export class HttpClient {
  readonly dispatcher: Dispatcher

  constructor(t: Teardown, connections = 32) {
    this.dispatcher = new Agent({ connections, headersTimeout: 60_000, bodyTimeout: 60_000, keepAliveTimeout: 2000 })
    t.teardown(() => this.dispatcher.destroy())
  }

  /** One request; throws on a connection error or when no whole answer came within timeoutMs. */
  async call(method: Method, url: string, opts: CallOptions = {}): Promise<Reply> {
    const timeoutMs = opts.timeoutMs ?? 10_000
    const signal = AbortSignal.timeout(timeoutMs)
    const res = await request(url, {
      dispatcher: this.dispatcher,
      method,
      body: opts.body,
      headers: opts.headers,
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    })
    const body = Buffer.from(await res.body.arrayBuffer())
    return {
      status: res.statusCode,
      headers: res.headers,
      body,
      text: () => body.toString('utf8'),
      json: <T>() => JSON.parse(body.toString('utf8')) as T,
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Master answers.

export interface Location {
  readonly url: string
  readonly publicUrl: string
}

export interface VolumeStatus {
  readonly Id: number
  readonly Collection: string
  readonly ReplicaPlacement: string
  readonly Copies: number
  readonly Size: number
  readonly FileCount: number
  readonly Writable: boolean
  readonly Reason: string
  readonly Locations: ReadonlyArray<{ url: string; publicUrl: string; alive: boolean }>
}

/** `/dir/lookup?volumeId=…`: the live locations, or undefined on a 404. Throws on anything else. */
export async function lookup(http: HttpClient, masterUrl: string, vidOrFid: string, timeoutMs = 5000): Promise<Location[] | undefined> {
  const res = await http.call('GET', `${masterUrl}/dir/lookup?volumeId=${encodeURIComponent(vidOrFid)}`, { timeoutMs })
  if (res.status === 404) return undefined
  if (res.status !== 200) throw new Error(`/dir/lookup?volumeId=${vidOrFid} answered ${res.status}: ${res.text()}`)
  return res.json<{ locations: Location[] }>().locations
}

/** `/vol/status`, by volume id. */
export async function volumeStatuses(http: HttpClient, masterUrl: string): Promise<Map<number, VolumeStatus>> {
  const res = await http.call('GET', `${masterUrl}/vol/status`, { timeoutMs: 5000 })
  if (res.status !== 200) throw new Error(`/vol/status answered ${res.status}: ${res.text()}`)
  return new Map(res.json<{ Volumes: VolumeStatus[] }>().Volumes.map((v) => [v.Id, v]))
}

/** `POST /vol/grow?count=&replication=`; answers how many volumes were created. */
export async function growVolumes(http: HttpClient, masterUrl: string, count: number, replication: string): Promise<number> {
  const res = await http.call('POST', `${masterUrl}/vol/grow?count=${count}&replication=${replication}`, { timeoutMs: 20_000 })
  if (res.status !== 200) throw new Error(`/vol/grow answered ${res.status}: ${res.text()}`)
  return res.json<{ count: number }>().count
}

// ---------------------------------------------------------------------------------------------
// File ids.

/** The parts of `<vid>,<key hex><cookie as 8 hex>[_d]` as strings and numbers. */
export interface FidParts {
  readonly volumeId: number
  /** The key, with the `_d` suffix added. */
  readonly key: bigint
  readonly cookieHex: string
}

export function fidParts(fid: string): FidParts {
  const m = /^([0-9]+),([0-9a-f]+)([0-9a-f]{8})(?:_([0-9]+))?$/.exec(fid)
  if (!m) throw new Error(`malformed fid ${fid}`)
  return { volumeId: Number(m[1]), key: BigInt(`0x${m[2]}`) + BigInt(m[4] ?? 0), cookieHex: m[3]! }
}

export function volumeOf(fid: string): number {
  return fidParts(fid).volumeId
}

/** The same key and cookie in another volume: a fresh fid there, as the key is globally unique. */
export function moveFid(fid: string, volumeId: number): string {
  return `${volumeId}${fid.slice(fid.indexOf(','))}`
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/** size bytes from a seeded generator giving numbers in [0, 1). */
export function randomBody(random: () => number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size)
  let i = 0
  for (; i + 4 <= size; i += 4) out.writeUInt32LE((random() * 0x1_0000_0000) >>> 0, i)
  for (; i < size; i++) out[i] = (random() * 256) & 0xff
  return out
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

export function md5Hex(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex')
}

/** Runs worker over items with at most `concurrency` at a time. */
export async function forEachLimit<T>(items: readonly T[], concurrency: number, worker: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  const run = async () => {
    while (next < items.length) {
      const i = next++
      await worker(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, () => run()))
}

/** The host:port of an address given as host:port or URL. */
export function hostOf(address: string): string {
  return address.includes('://') ? new URL(address).host : address
}
