/**
 * Memory, load rate and lookup rate of the needle index, each printed next to its goal and a
 * baseline measured in the same run.
 *
 *   node --expose-gc --import tsx bench/index-memory.ts [--needles N]   (default 10 000 000)
 *
 * Memory is the growth of heapUsed + external after a full GC. Node's `arrayBuffers` figure is
 * already part of `external`, so adding it again would count every typed array twice.
 * The last line is `RESULT {json}` for scripts.
 */
import { seededRandom } from '../test/helpers/random.js'
import { IDX_ENTRY_SIZE, IDX_KEY_HI, IDX_KEY_LO, IDX_OFFSET, IDX_SIZE } from '../src/common/format.js'
import { NeedleIndex } from '../src/dataserver/needle-index.js'

const BYTES_PER_NEEDLE_GOAL = 12
const LOAD_RATE_GOAL = 10_000_000
const MAP_BASELINE_MAX = 1_000_000
const LOAD_RUNS = 3
const LOOKUPS = 2_000_000

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) {
  process.stderr.write('run with: node --expose-gc --import tsx bench/index-memory.ts\n')
  process.exit(2)
}

function parseNeedles(argv: readonly string[]): number {
  const i = argv.indexOf('--needles')
  if (i < 0) return 10_000_000
  const n = Number(argv[i + 1])
  if (!Number.isSafeInteger(n) || n < 1) {
    process.stderr.write(`--needles must be a positive integer, got ${argv[i + 1]}\n`)
    process.exit(2)
  }
  return n
}

const needles = parseNeedles(process.argv.slice(2))


/**
 * Feeds `count` entries in increasing key order to `sink`. Keys step by a random 1 … 8, as when
 * several volumes share one key counter, and start below 2^32 so the run crosses into keyHi 1.
 * Offsets advance by each needle's aligned length, as in a real `.dat` file.
 */
function generate(count: number, sink: (keyHi: number, keyLo: number, offset: number, size: number) => void): void {
  const random = seededRandom(0x5eed)
  let keyHi = 0
  let keyLo = 0x1_0000_0000 - Math.min(count, 20_000_000)
  let offset = 8
  for (let i = 0; i < count; i++) {
    const size = 48 + Math.floor(random() * 2048)
    sink(keyHi, keyLo, offset, size)
    offset = (offset + Math.ceil((size + 32) / 8)) >>> 0
    keyLo += 1 + Math.floor(random() * 8)
    if (keyLo > 0xffff_ffff) {
      keyLo -= 0x1_0000_0000
      keyHi++
    }
  }
}

function memoryNow(): number {
  gc!()
  gc!()
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

// (1) Memory per live needle, and the same for a Map of objects as the baseline.
let before = memoryNow()
let index: NeedleIndex | undefined = new NeedleIndex()
const building = index
generate(needles, (hi, lo, offset, size) => building.set(hi, lo, offset, size))
const indexBytes = memoryNow() - before
const bytesPerNeedle = indexBytes / index.liveCount
const arrayBytesPerNeedle = index.memoryBytes() / index.liveCount
const stats = index.stats()
index = undefined

const mapNeedles = Math.min(needles, MAP_BASELINE_MAX)
before = memoryNow()
let map: Map<bigint, { offset: number; size: number }> | undefined = new Map()
const filling = map
generate(mapNeedles, (hi, lo, offset, size) => filling.set((BigInt(hi) << 32n) | BigInt(lo), { offset, size }))
const mapBytesPerNeedle = (memoryNow() - before) / map.size
map = undefined

// (2) Load rate from an in-memory `.idx` image, against a loop that only reads the same words.
const idx = Buffer.alloc(needles * IDX_ENTRY_SIZE)
const words = new Uint32Array(idx.buffer, idx.byteOffset, idx.length / 4)
const KEY_LO = IDX_KEY_LO / 4
const KEY_HI = IDX_KEY_HI / 4
const OFFSET = IDX_OFFSET / 4
const SIZE = IDX_SIZE / 4
const STRIDE = IDX_ENTRY_SIZE / 4
{
  let at = 0
  generate(needles, (hi, lo, offset, size) => {
    words[at + KEY_LO] = lo
    words[at + KEY_HI] = hi
    words[at + OFFSET] = offset
    words[at + SIZE] = size
    at += STRIDE
  })
}

function load(): NeedleIndex {
  const loaded = new NeedleIndex()
  const end = needles * STRIDE
  for (let at = 0; at < end; at += STRIDE) {
    loaded.set(words[at + KEY_HI], words[at + KEY_LO], words[at + OFFSET], words[at + SIZE])
  }
  return loaded
}

function sumWords(): number {
  let sum = 0
  const end = needles * STRIDE
  for (let at = 0; at < end; at += STRIDE) {
    sum = (sum + words[at + KEY_HI] + words[at + KEY_LO] + words[at + OFFSET] + words[at + SIZE]) >>> 0
  }
  return sum
}

interface Rate {
  /** Entries per second of wall time, fastest of LOAD_RUNS runs. */
  readonly wall: number
  /**
   * Entries per second of process CPU time (all threads, GC and compiler included), fastest run.
   * Other processes on a busy machine lower the wall-time rate but not this one.
   */
  readonly cpu: number
  /** Entries per second of wall time of the first, cold run. */
  readonly first: number
}

function rate<T>(run: () => T, count: number): { rate: Rate; last: T } {
  let wallNs = Infinity
  let cpuUs = Infinity
  let firstNs = 0
  let last!: T
  for (let i = 0; i < LOAD_RUNS; i++) {
    const cpuStart = process.cpuUsage()
    const start = process.hrtime.bigint()
    last = run()
    const ns = Number(process.hrtime.bigint() - start)
    const cpu = process.cpuUsage(cpuStart)
    if (i === 0) firstNs = ns
    wallNs = Math.min(wallNs, ns)
    cpuUs = Math.min(cpuUs, cpu.user + cpu.system)
  }
  return { rate: { wall: count / (wallNs / 1e9), cpu: count / (cpuUs / 1e6), first: count / (firstNs / 1e9) }, last }
}

gc()
const { rate: loadRate, last: loaded } = rate(load, needles)
const { rate: sumRate } = rate(sumWords, needles)

// (3) Lookups of random present keys, checked against the image they came from.
const random = seededRandom(0xbeef)
const probes = new Uint32Array(LOOKUPS)
for (let i = 0; i < LOOKUPS; i++) probes[i] = Math.floor(random() * needles) * STRIDE
let wrong = 0
const lookupStart = process.hrtime.bigint()
for (let i = 0; i < LOOKUPS; i++) {
  const at = probes[i]
  if (!loaded.lookup(words[at + KEY_HI], words[at + KEY_LO]) || loaded.foundOffset !== words[at + OFFSET]) wrong++
}
const lookupRate = LOOKUPS / (Number(process.hrtime.bigint() - lookupStart) / 1e9)
// The floor: fetching each probe's key from the image is one random memory access already.
let probeSum = 0
const readStart = process.hrtime.bigint()
for (let i = 0; i < LOOKUPS; i++) probeSum = (probeSum + words[probes[i] + KEY_LO]) >>> 0
const readRate = LOOKUPS / (Number(process.hrtime.bigint() - readStart) / 1e9)
if (wrong !== 0 || loaded.liveCount !== needles) {
  process.stderr.write(`index is wrong: ${wrong} failed lookups, ${loaded.liveCount} live of ${needles}\n`)
  process.exit(1)
}

const memoryOk = bytesPerNeedle <= BYTES_PER_NEEDLE_GOAL
const loadOk = loadRate.wall >= LOAD_RATE_GOAL
console.log(`needle index, ${needles.toLocaleString('en-US')} needles, keys +1…8 apart, node ${process.version}`)
console.log(
  `memory  ${fmt(bytesPerNeedle)} B/needle (goal ≤ ${BYTES_PER_NEEDLE_GOAL}: ${memoryOk ? 'ok' : 'MISSED'}; ` +
    `Map<bigint, object> ${fmt(mapBytesPerNeedle)} B/needle on ${mapNeedles.toLocaleString('en-US')}, ` +
    `${fmt(mapBytesPerNeedle / bytesPerNeedle)}× more; typed arrays ${fmt(arrayBytesPerNeedle)} B/needle)`,
)
console.log(
  `load    ${fmt(loadRate.wall / 1e6)} M entries/s (goal ≥ ${LOAD_RATE_GOAL / 1e6}: ${loadOk ? 'ok' : 'MISSED'}; ` +
    `bare summing loop ${fmt(sumRate.wall / 1e6)} M/s; best of ${LOAD_RUNS}, first run ${fmt(loadRate.first / 1e6)})`,
)
console.log(
  `lookup  ${fmt(lookupRate / 1e6, 2)} M lookups/s of random present keys ` +
    `(bare random read of the .idx image ${fmt(readRate / 1e6, 2)} M/s; ${LOOKUPS.toLocaleString('en-US')} probes)`,
)
console.log(
  `layout  ${stats.segments} segments (${stats.wideSegments} wide), ${stats.chunks} chunks, ` +
    `${stats.stagingEntries} staged, ${stats.overflowEntries} in overflow`,
)
console.log(
  'RESULT ' +
    JSON.stringify({
      needles,
      bytesPerNeedle: Number(bytesPerNeedle.toFixed(2)),
      arrayBytesPerNeedle: Number(arrayBytesPerNeedle.toFixed(2)),
      mapBytesPerNeedle: Number(mapBytesPerNeedle.toFixed(2)),
      mapNeedles,
      loadPerSecond: Math.round(loadRate.wall),
      loadPerCpuSecond: Math.round(loadRate.cpu),
      loadFirstRunPerSecond: Math.round(loadRate.first),
      sumPerSecond: Math.round(sumRate.wall),
      lookupPerSecond: Math.round(lookupRate),
      randomReadPerSecond: Math.round(readRate),
      probeSum,
      memoryOk,
      loadOk,
    }),
)
