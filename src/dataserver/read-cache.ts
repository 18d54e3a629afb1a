/**
 * A bounded cache of recently read needles, shared by the volumes of one data server, so that a
 * hot file is served without a disk read. It never weakens a read's checks: the index is
 * consulted first on every read (so a deleted or replaced file is never served from here), and
 * the caller verifies the cached needle's checksum on every hit, so a damaged copy is never
 * served either.
 *
 * Invariants:
 * - An entry is keyed by the volume instance and the needle's offset. `.dat` is append-only, so
 *   the bytes at an offset never change while that volume instance is open; a volume that is
 *   rewritten (compaction) comes back as a new instance with a new id.
 * - The entries' buffers add up to at most bytesMax; eviction goes in insertion order and
 *   gives an entry read since it was last passed a second chance (CLOCK).
 * - Each cached needle owns its buffer (never a slice of a shared slab), so an entry pins only
 *   its own bytes.
 */
import type { Needle } from '../common/format.js'

export interface CachedNeedle {
  readonly needle: Needle
  /** The needle's bytes as on disk. */
  readonly raw: Buffer
}

interface Entry extends CachedNeedle {
  /** Read since the eviction sweep last passed it (a second chance, as in CLOCK). */
  hot: boolean
}

/** Volume ids stay below this, so that id * 2^32 + offset is an exact number key. */
const VOLUME_IDS = 2 ** 21

export class ReadCache {
  readonly bytesMax: number
  readonly #entries = new Map<number, Entry>()
  #bytes = 0
  #nextVolume = 1
  hits = 0
  misses = 0

  constructor(bytesMax: number) {
    if (!Number.isInteger(bytesMax) || bytesMax < 0) throw new TypeError('bytesMax must be a non-negative integer')
    this.bytesMax = bytesMax
  }

  /** A fresh id for a volume instance, to key its entries; 0 (never cached) once ids run out. */
  volumeId(): number {
    return this.#nextVolume < VOLUME_IDS ? this.#nextVolume++ : 0
  }

  get bytes(): number {
    return this.#bytes
  }

  get size(): number {
    return this.#entries.size
  }

  get(volume: number, offsetUnits: number): CachedNeedle | undefined {
    const entry = this.#entries.get(volume * 0x1_0000_0000 + offsetUnits)
    if (!entry) {
      this.misses++
      return undefined
    }
    this.hits++
    entry.hot = true
    return entry
  }

  /** Whether a needle of this many bytes would be kept. */
  admits(bytes: number): boolean {
    return bytes <= this.bytesMax / 16
  }

  set(volume: number, offsetUnits: number, cached: CachedNeedle): void {
    if (volume === 0 || !this.admits(cached.raw.length)) return
    const key = volume * 0x1_0000_0000 + offsetUnits
    this.delete(volume, offsetUnits)
    this.#entries.set(key, { ...cached, hot: false })
    this.#bytes += cached.raw.length
    // The map iterates oldest first: an entry read since it was last passed gets moved to the
    // end once, and the first cold one goes. Each pass moves an entry at most once.
    for (const [k, e] of this.#entries) {
      if (this.#bytes <= this.bytesMax) break
      this.#entries.delete(k)
      if (e.hot && k !== key) {
        e.hot = false
        this.#entries.set(k, e)
      } else {
        this.#bytes -= e.raw.length
      }
    }
  }

  delete(volume: number, offsetUnits: number): void {
    const key = volume * 0x1_0000_0000 + offsetUnits
    const old = this.#entries.get(key)
    if (!old) return
    this.#bytes -= old.raw.length
    this.#entries.delete(key)
  }
}
