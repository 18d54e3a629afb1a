/**
 * GET of 10 KiB files through the master's redirect (GET master/<fid> → 302 → GET data
 * server/<fid>, as `curl -L` or a browser does) against GET straight from the data server.
 * Both loads come from the same undici client in this process, so they are measured alike;
 * rounds alternate and the medians are compared.
 *
 *   node dist/bench/get-redirect.js [--files 1000] [--bytes 10240] [--connections 32] [--seconds 3] [--rounds 5]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { fmt, median, parseArgs, report, startLocalCluster } from './lib.js'

const args = parseArgs({ files: 1000, bytes: 10 * 1024, connections: 32, seconds: 3, rounds: 5 })
const dir = await mkdtemp(join(tmpdir(), 'needlestore-bench-redirect-'))
const cluster = await startLocalCluster(dir, 1)
const agent = new Agent({ connections: args.connections, pipelining: 1 })

interface Rate {
  readonly requestsPerSec: number
  readonly errors: number
}

/** connections workers fetching files for seconds; counts whole fetches (bodies read). */
async function run(fetchOne: (fid: string) => Promise<boolean>, fids: string[], seconds: number): Promise<Rate> {
  const until = Date.now() + seconds * 1000
  let done = 0
  let errors = 0
  await Promise.all(
    Array.from({ length: args.connections }, async () => {
      while (Date.now() < until) {
        if (await fetchOne(fids[Math.floor(Math.random() * fids.length)]!).catch(() => false)) done++
        else errors++
      }
    }),
  )
  return { requestsPerSec: done / seconds, errors }
}

try {
  const fids: string[] = []
  for (let i = 0; i < args.files; i++) {
    const res = await request(`${cluster.master.url}/submit?replication=000`, { method: 'POST', body: randomBytes(args.bytes), headers: { 'content-type': 'image/jpeg' } })
    const { fid } = (await res.body.json()) as { fid: string }
    if (res.statusCode !== 201) throw new Error(`submit failed: ${res.statusCode}`)
    fids.push(fid)
  }
  const server = cluster.dataServers[0]!.url
  const get = async (url: string): Promise<{ status: number; location?: string }> => {
    const res = await request(url, { dispatcher: agent })
    await res.body.dump()
    const location = res.headers.location
    return { status: res.statusCode, ...(typeof location === 'string' ? { location } : {}) }
  }
  const direct = async (fid: string) => (await get(`${server}/${fid}`)).status === 200
  const redirected = async (fid: string) => {
    const first = await get(`${cluster.master.url}/${fid}`)
    return first.status === 302 && first.location !== undefined && (await get(first.location)).status === 200
  }
  await run(direct, fids, 1)
  await run(redirected, fids, 1)
  const d: Rate[] = []
  const r: Rate[] = []
  for (let i = 0; i < args.rounds; i++) {
    d.push(await run(direct, fids, args.seconds))
    r.push(await run(redirected, fids, args.seconds))
  }
  const dRps = median(d.map((x) => x.requestsPerSec))
  const rRps = median(r.map((x) => x.requestsPerSec))
  const errors = (xs: Rate[]) => xs.reduce((n, x) => n + x.errors, 0)
  report('GET 10 KiB: via the master redirect vs straight from the data server', [
    `direct from the data server: ${fmt(dRps)} fetches/s (median of ${args.rounds}), errors ${errors(d)}`,
    `via the master's 302:        ${fmt(rRps)} fetches/s (median of ${args.rounds}), errors ${errors(r)}`,
    `ratio: ${fmt(rRps / dRps, 2)}`,
  ], { direct: dRps, redirect: rRps, ratio: rRps / dRps })
} finally {
  await agent.close()
  await cluster.stop()
  await rm(dir, { recursive: true, force: true })
}
