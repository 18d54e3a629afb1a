/**
 * The durability contract under `kill -9`: a data server (default group-commit fsync) takes
 * concurrent random uploads and deletes, is killed with writes in flight, and restarted on the
 * same directory, three times over.
 *
 * - An acknowledged write (201) is readable afterwards and byte-identical.
 * - An acknowledged delete (202) stays deleted (404).
 * - A write or delete that was in flight may have happened or not, but a file that reads is
 *   whole and correct; once a restart has settled its fate, it keeps it across later crashes.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Agent, request, type Dispatcher } from 'undici'
import { formatFid } from '../../src/common/fid.js'
import { createVolume, startDataServerProcess, type DataServerProcess } from '../helpers/dataserver-process.js'

t.setTimeout(90_000)

const VID = 7
const WRITERS = 16
const CYCLES = 3
/** A cycle kills the server once this many writes were acknowledged in it, or after CYCLE_MS. */
const ACKED_PER_CYCLE = 300
const CYCLE_MS = 2000
const BODY_BYTES_MAX = 64 * 1024
const DELETE_SHARE = 0.15

/**
 * What the test knows about one fid.
 * - writing: the upload was sent and no answer came (in flight at the kill);
 * - acked: 201 seen, or a restart showed the whole file;
 * - deleting: a delete of an acked file was sent and no answer came;
 * - deleted: 202 seen, or a restart showed it gone after an unanswered delete;
 * - absent: an unanswered upload that a restart showed did not happen.
 */
type State = 'writing' | 'acked' | 'deleting' | 'deleted' | 'absent'

interface FileRecord {
  readonly fid: string
  readonly size: number
  readonly sha256: string
  state: State
}

/** mulberry32: a small seeded generator, so that a failing run's sizes and bodies can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 0x1_0000_0000
  }
}

function randomBody(random: () => number, size: number): Buffer {
  const words = new Uint32Array(Math.ceil(size / 4))
  for (let i = 0; i < words.length; i++) words[i] = (random() * 0x1_0000_0000) >>> 0
  return Buffer.from(words.buffer, 0, size)
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

interface CycleResult {
  readonly acked: number
  readonly deleted: number
  readonly inFlightAtKill: number
  readonly unexpected: readonly string[]
}

/**
 * Runs WRITERS concurrent loops of uploads (and some deletes) against proc until the kill
 * condition, then `kill -9`s it while requests are in flight and waits for every loop to end.
 */
async function writeAndKill(proc: DataServerProcess, files: Map<string, FileRecord>, nextKey: { value: number }, random: () => number): Promise<CycleResult> {
  const dispatcher: Dispatcher = new Agent({ connections: WRITERS, headersTimeout: 15_000, bodyTimeout: 15_000 })
  let killed = false
  let inFlight = 0
  let acked = 0
  let deleted = 0
  const unexpected: string[] = []
  const started = Date.now()

  const deleteOne = async (): Promise<boolean> => {
    const candidates = [...files.values()].filter((f) => f.state === 'acked')
    if (candidates.length === 0) return false
    const file = candidates[Math.floor(random() * candidates.length)]!
    file.state = 'deleting'
    inFlight++
    try {
      const res = await request(`${proc.url}/${file.fid}`, { dispatcher, method: 'DELETE' })
      const text = await res.body.text()
      if (res.statusCode === 202 && JSON.parse(text).size === file.size) {
        file.state = 'deleted'
        deleted++
      } else if (!killed) {
        unexpected.push(`DELETE ${file.fid}: ${res.statusCode} ${text}`)
      }
    } catch (err) {
      // Only the kill may break a request; the delete stays unanswered ('deleting').
      if (!killed) unexpected.push(`DELETE ${file.fid}: ${(err as Error).message}`)
    } finally {
      inFlight--
    }
    return true
  }

  const writeOne = async (): Promise<void> => {
    const size = 1 + Math.floor(random() * BODY_BYTES_MAX)
    const body = randomBody(random, size)
    const cookie = (random() * 0x1_0000_0000) >>> 0
    const fid = formatFid({ volumeId: VID, keyHi: 0, keyLo: nextKey.value++, cookie })
    const file: FileRecord = { fid, size, sha256: sha256(body), state: 'writing' }
    files.set(fid, file)
    inFlight++
    try {
      const res = await request(`${proc.url}/${fid}`, { dispatcher, method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
      const text = await res.body.text()
      // The acknowledgement is recorded only once the whole 201 answer has arrived.
      if (res.statusCode === 201 && JSON.parse(text).size === size) {
        file.state = 'acked'
        acked++
      } else if (!killed) {
        unexpected.push(`POST ${fid}: ${res.statusCode} ${text}`)
      }
    } catch (err) {
      if (!killed) unexpected.push(`POST ${fid}: ${(err as Error).message}`)
    } finally {
      inFlight--
    }
  }

  const writer = async () => {
    while (!killed) {
      if (random() < DELETE_SHARE && (await deleteOne())) continue
      await writeOne()
    }
  }
  const loops = Array.from({ length: WRITERS }, () => writer())

  // Poll for the kill condition; the writers keep requests in flight all along.
  while (acked < ACKED_PER_CYCLE && Date.now() - started < CYCLE_MS && unexpected.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const inFlightAtKill = inFlight
  killed = true
  const exit = await proc.kill9()
  if (exit.signal !== 'SIGKILL') unexpected.push(`the process ended with ${JSON.stringify(exit)}, not by SIGKILL`)
  await Promise.all(loops)
  await dispatcher.destroy()
  return { acked, deleted, inFlightAtKill, unexpected }
}

/** Checks every file the test knows of against the restarted server; settles the unknowns. */
async function verify(proc: DataServerProcess, files: Map<string, FileRecord>): Promise<{ failures: string[]; counts: Record<State, number> }> {
  const dispatcher: Dispatcher = new Agent({ connections: WRITERS, headersTimeout: 15_000, bodyTimeout: 15_000 })
  const failures: string[] = []
  const queue = [...files.values()]
  const reader = async () => {
    for (let file = queue.pop(); file; file = queue.pop()) {
      const res = await request(`${proc.url}/${file.fid}`, { dispatcher })
      const body = Buffer.from(await res.body.arrayBuffer())
      const whole = res.statusCode === 200 && body.length === file.size && sha256(body) === file.sha256
      const gone = res.statusCode === 404
      if (res.statusCode === 200 && !whole) {
        failures.push(`${file.fid} (${file.state}) reads ${body.length} bytes that are not what was sent (${file.size} bytes)`)
        continue
      }
      if (!whole && !gone) {
        failures.push(`${file.fid} (${file.state}) answers ${res.statusCode}: ${body.toString().slice(0, 200)}`)
        continue
      }
      switch (file.state) {
        case 'acked':
          if (!whole) failures.push(`${file.fid}: an acknowledged write of ${file.size} bytes is lost (404)`)
          break
        case 'deleted':
        case 'absent':
          if (!gone) failures.push(`${file.fid}: ${file.state === 'deleted' ? 'an acknowledged delete' : 'a write that a restart showed lost'} came back`)
          break
        case 'writing':
          file.state = whole ? 'acked' : 'absent'
          break
        case 'deleting':
          file.state = whole ? 'acked' : 'deleted'
          break
      }
    }
  }
  await Promise.all(Array.from({ length: WRITERS }, () => reader()))
  await dispatcher.destroy()
  const counts: Record<State, number> = { writing: 0, acked: 0, deleting: 0, deleted: 0, absent: 0 }
  for (const f of files.values()) counts[f.state]++
  return { failures, counts }
}

// Both policies acknowledge a write only once it is in the kernel (group: also on the disk), so
// both must survive the death of the process; only power loss tells them apart.
for (const fsync of ['group', 'interval'] as const) {
t.test(`--fsync ${fsync}: acknowledged writes and deletes survive kill -9 with writes in flight, ${CYCLES} times`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'needlestore-crash-'))
  let proc: DataServerProcess | undefined
  // tap runs teardowns last in, first out: the process dies before its directory goes.
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  t.teardown(async () => {
    if (proc && !proc.exited()) await proc.kill9()
  })
  const seed = Number(process.env.NEEDLESTORE_CRASH_SEED ?? Date.now() % 0x1_0000_0000)
  t.comment(`seed ${seed} (NEEDLESTORE_CRASH_SEED replays the sizes, bodies and choices; the interleaving follows timing)`)
  const random = prng(seed)
  const files = new Map<string, FileRecord>()
  const nextKey = { value: 1 }

  const args = ['--fsync', fsync]
  proc = await startDataServerProcess(dir, { args })
  await createVolume(proc.url, VID)

  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const cycleStart = Date.now()
    const result = await writeAndKill(proc, files, nextKey, random)
    t.same(result.unexpected, [], `cycle ${cycle}: no request failed before the kill`)
    t.ok(result.acked > 0, `cycle ${cycle}: ${result.acked} writes and ${result.deleted} deletes acknowledged`)
    t.ok(result.inFlightAtKill > 0, `cycle ${cycle}: ${result.inFlightAtKill} requests in flight at the kill`)

    const stderrBefore = proc.stderr()
    proc = await startDataServerProcess(dir, { args })
    const { failures, counts } = await verify(proc, files)
    t.same(failures, [], `cycle ${cycle}: every file reads as the contract says (${JSON.stringify(counts)})`)
    if (failures.length > 0) t.comment(`stderr of the killed server:\n${stderrBefore}\nstderr after restart:\n${proc.stderr()}`)
    t.equal(counts.writing + counts.deleting, 0, `cycle ${cycle}: the restart settled every unanswered request`)
    t.ok(counts.deleted > 0, `cycle ${cycle}: ${counts.deleted} deleted files are part of the check`)

    const status = (await (await request(`${proc.url}/status`)).body.json()) as { volumes: Array<{ id: number; fileCount: number; readOnly: boolean }> }
    const volume = status.volumes.find((v) => v.id === VID)
    t.equal(volume?.fileCount, counts.acked, `cycle ${cycle}: the volume counts exactly the live files`)
    t.equal(volume?.readOnly, false, `cycle ${cycle}: the volume still takes writes`)
    t.comment(`cycle ${cycle}: ${Date.now() - cycleStart} ms`)
  }

  const exit = await proc.stop()
  t.same(exit, { code: 0, signal: null }, 'the last server stops cleanly')
})
}
