/**
 * Where each volume lives, as the master last said: volume id → its copies, with an expiry.
 *
 * Invariants: at most `entriesMax` volumes are kept; a Map keeps them in order of last use
 * (a hit moves its entry to the end), so the first entry is always the one to evict. An expired
 * entry is not served by get() but stays until it is replaced, evicted or deleted, so that a
 * read may still use it when the master cannot be reached (see peek()).
 */

export interface Location {
  /** `host:port` the cluster reaches the data server at. */
  readonly url: string
  /** `host:port` clients should use. */
  readonly publicUrl: string
}

export interface LocationCacheOptions {
  readonly ttlMs: number
  readonly entriesMax: number
  readonly now: () => number
}

interface Entry {
  readonly locations: readonly Location[]
  readonly expiresAtMs: number
}

export class LocationCache {
  readonly #entries = new Map<number, Entry>()
  readonly #ttlMs: number
  readonly #entriesMax: number
  readonly #now: () => number

  constructor(o: LocationCacheOptions) {
    if (!Number.isInteger(o.entriesMax) || o.entriesMax < 1) throw new TypeError('entriesMax must be a positive integer')
    if (!Number.isFinite(o.ttlMs) || o.ttlMs < 0) throw new TypeError('ttlMs must be a non-negative number')
    this.#ttlMs = o.ttlMs
    this.#entriesMax = o.entriesMax
    this.#now = o.now
  }

  get size(): number {
    return this.#entries.size
  }

  /** The copies of a volume, unless unknown or expired. A hit counts as a use. */
  get(volumeId: number): readonly Location[] | undefined {
    const entry = this.#entries.get(volumeId)
    if (entry === undefined || entry.expiresAtMs <= this.#now()) return undefined
    this.#entries.delete(volumeId)
    this.#entries.set(volumeId, entry)
    return entry.locations
  }

  /** The copies of a volume even when expired: the last word of the master, for when it is away. */
  peek(volumeId: number): readonly Location[] | undefined {
    return this.#entries.get(volumeId)?.locations
  }

  set(volumeId: number, locations: readonly Location[]): void {
    this.#entries.delete(volumeId)
    this.#entries.set(volumeId, { locations: Object.freeze([...locations]), expiresAtMs: this.#now() + this.#ttlMs })
    while (this.#entries.size > this.#entriesMax) {
      const oldest = this.#entries.keys().next().value as number
      this.#entries.delete(oldest)
    }
  }

  delete(volumeId: number): void {
    this.#entries.delete(volumeId)
  }

  clear(): void {
    this.#entries.clear()
  }
}
