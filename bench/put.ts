/**
 * PUT of 10 KiB files to one data server with group-commit fsync (one fsync covers the writes
 * that arrived together), against the same server doing an fsync for every write
 * (--write-batch-max 1), measured in the same run.
 *
 *   node dist/bench/put.js [--bytes 10240] [--connections 64] [--seconds 10]
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { fmt, load, parseArgs, report, startDataServerProcess, type LoadResult } from './lib.js'

const args = parseArgs({ bytes: 10 * 1024, connections: 64, seconds: 10 })
const body = randomBytes(args.bytes)

async function run(name: string, flags: string[]): Promise<LoadResult> {
  const dir = await mkdtemp(join(tmpdir(), `needlestore-bench-put-${name}-`))
  const server = await startDataServerProcess(dir, flags)
  try {
    await request(`${server.url}/admin/assign_volume?volume=1`, { method: 'POST' }).then((r) => r.body.dump())
    let key = 1
    const path = () => `/1,${(key++).toString(16)}1234abcd`
    await load({ url: server.url, connections: args.connections, durationSec: 2, method: 'PUT', body, path })
    return await load({ url: server.url, connections: args.connections, durationSec: args.seconds, method: 'PUT', body, path })
  } finally {
    await server.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

const perWrite = await run('each', ['--write-batch-max', '1'])
const group = await run('group', [])
const ratio = group.requestsPerSec / perWrite.requestsPerSec
report('PUT 10 KiB: group fsync vs fsync per write', [
  `fsync per write: ${fmt(perWrite.requestsPerSec)} req/s, p99 ${perWrite.p99Ms} ms, errors ${perWrite.errors + perWrite.non2xx}`,
  `group fsync:     ${fmt(group.requestsPerSec)} req/s, p99 ${group.p99Ms} ms, errors ${group.errors + group.non2xx}`,
  `ratio: ${fmt(ratio, 2)}`,
], { perWrite: perWrite.requestsPerSec, group: group.requestsPerSec, ratio })
