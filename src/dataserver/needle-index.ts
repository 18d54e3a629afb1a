/**
 * The in-memory index of one volume: needle key → (offset, bodySize), at about 10 bytes per
 * needle. Keys are unsigned 64-bit and always travel as two unsigned 32-bit halves (keyHi,
 * keyLo), so the hot path never touches BigInt. Offsets are u32 (units of NEEDLE_ALIGNMENT in
 * `.dat`); a body size is 1 … 0x7fffffff, which leaves the top bit of its u32 free to mark a
 * deleted entry. Only typed arrays hold entries: no per-entry objects, no Map.
 *
 * Entries live in one of three places:
 *
 *   frozen    sorted, immutable-keyed segments of up to SEGMENT_ENTRIES entries. A segment has a
 *             base key and per-entry key deltas from it: 16-bit when its span fits, else 32-bit
 *             (the high halves in a second, lazily allocated array). The deltas, and the offset
 *             and size word of every entry (side by side, so a hit costs one cache miss), are
 *             packed into shared chunks of CHUNK_ENTRIES entries: 10 bytes per entry.
 *   staging   a small mutable tail (full keys, kept sorted) that absorbs appends and slightly
 *             out-of-order keys. When it fills, its lowest keys are frozen into a new segment.
 *   overflow  an open-addressing hash table (linear probing) for new keys that arrive below the
 *             frozen range, which only happens for writes that are very late or arbitrary.
 *
 * Invariants:
 *  1. Every known key is in exactly one place: a frozen segment, staging or overflow.
 *  2. Frozen segments are in increasing key order and never overlap; within a segment, deltas
 *     strictly increase. #lastHi:#lastLo is the largest key ever frozen (#hasFrozen says
 *     whether there is one); frozen keys are never added below it or moved.
 *  3. Every staged key is greater than the last frozen key; staging is strictly increasing.
 *  4. Every overflow key is less than the last frozen key and absent from the frozen segments.
 *  5. A size word is `bodySize | DELETED_BIT` for a deleted entry, `bodySize` for a live one,
 *     and 0 for a vacant frozen slot (a removed key: segments cannot shrink, so the slot stays
 *     and is reused if the key is set again) or an empty overflow slot.
 *  6. A segment never straddles a chunk, so one chunk index and one in-chunk range describe it;
 *     its global position is chunk * CHUNK_ENTRIES + index in chunk.
 *  7. #liveCount + #deletedCount is the number of known keys.
 *
 * Every array grows in bounded steps: the first chunk doubles up to CHUNK_ENTRIES (640 KiB) so
 * a small volume stays small, and later chunks are allocated whole and never copied, so slack
 * stays under one chunk at any size.
 *
 * A lookup finds the segment, then the key within it, by interpolation: keys come from a
 * counter, so they are close to evenly spread. It guesses a position, gallops (steps 1, 2, 4 …)
 * to bracket the key and ends with a binary search, which costs a few cache misses where a plain
 * binary search over an 8 KiB segment takes a dozen, and is never much worse on skewed keys.
 *
 * Vacant frozen slots and overflow entries are never compacted away; a volume compaction
 * rebuilds the index from scratch.
 */

/** Most entries in one frozen segment. */
export const SEGMENT_ENTRIES = 4096
/**
 * Entries kept in staging after a freeze, so that keys arriving up to this many positions late
 * still land in staging rather than in the overflow table.
 */
export const STAGING_SLACK = 1024
/** Staging freezes its lowest SEGMENT_ENTRIES keys when it holds this many. */
export const STAGING_ENTRIES_MAX = SEGMENT_ENTRIES + STAGING_SLACK
const CHUNK_SHIFT = 16
/** Entries per chunk of packed segment storage. */
export const CHUNK_ENTRIES = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_ENTRIES - 1
/**
 * A segment keeps 16-bit deltas if at least this many keys fit in a 16-bit span; below that a
 * 32-bit segment is cheaper than many tiny segments.
 */
const NARROW_ENTRIES_MIN = 64

/** Marks a deleted entry in a size word. */
const DELETED_BIT = 0x8000_0000
const SIZE_MASK = 0x7fff_ffff
/** Marks a segment with 32-bit deltas in its meta word; the low bits are its entry count. */
const WIDE_BIT = 0x8000_0000
const COUNT_MASK = 0x7fff_ffff

/** Words per staging entry and per overflow slot: keyHi, keyLo, offset, size word. */
const W = 4
const STAGING_INITIAL_ENTRIES = 64
const SEGMENTS_INITIAL = 16
const OVERFLOW_INITIAL_SLOTS = 16

const NOWHERE = 0
const IN_FROZEN = 1
const IN_STAGING = 2
const IN_OVERFLOW = 3

function isU32(x: number): boolean {
  return x >>> 0 === x
}

function badArgument(name: string, value: unknown, what: string): never {
  throw new TypeError(`${name} must be ${what}, got ${String(value)}`)
}

function badSetArguments(keyHi: number, keyLo: number, offset: number, bodySize: number): never {
  checkKey(keyHi, keyLo)
  if (!isU32(offset)) badArgument('offset', offset, 'an unsigned 32-bit integer')
  badArgument('bodySize', bodySize, 'an integer 1 … 0x7fffffff')
}

function checkKey(keyHi: number, keyLo: number): void {
  if (!isU32(keyHi)) badArgument('keyHi', keyHi, 'an unsigned 32-bit integer')
  if (!isU32(keyLo)) badArgument('keyLo', keyLo, 'an unsigned 32-bit integer')
}

/** A 32-bit hash of a 64-bit key (murmur3's finalizer), so sequential keys spread out. */
function hashKey(keyHi: number, keyLo: number): number {
  let h = Math.imul(keyHi ^ 0x9e37_79b9, 0x85eb_ca6b) ^ keyLo
  h = Math.imul(h ^ (h >>> 16), 0x85eb_ca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2_ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** Whether the base key of segment `i` is at most keyHi:keyLo. */
function baseAtMost(baseHis: Uint32Array, baseLos: Uint32Array, i: number, keyHi: number, keyLo: number): boolean {
  const h = baseHis[i]
  return h < keyHi || (h === keyHi && baseLos[i] <= keyLo)
}

/** The delta at index `i` of a segment: 16-bit, or 32-bit split across two arrays. */
function deltaAt(lo16: Uint16Array, hi16: Uint16Array | undefined, i: number): number {
  return hi16 === undefined ? lo16[i] : hi16[i] * 0x1_0000 + lo16[i]
}

/**
 * The index of `delta` among the `count` increasing deltas at `start`, or -1. `span` is the
 * last delta and `delta` is at most `span`. The first probe is where `delta` would be if keys
 * were evenly spread; from there the search gallops (steps 1, 2, 4 …) to bracket the delta and
 * finishes with a binary search, so it is never worse than about twice a binary search.
 */
function searchDeltas(
  lo16: Uint16Array,
  hi16: Uint16Array | undefined,
  start: number,
  count: number,
  span: number,
  delta: number,
): number {
  const end = start + count - 1
  const guess = span === 0 ? start : start + Math.floor((delta * (count - 1)) / span)
  const d = deltaAt(lo16, hi16, guess)
  if (d === delta) return guess
  let a: number
  let b: number
  if (d < delta) {
    a = guess + 1
    b = end
    for (let step = 1; guess + step < end; step *= 2) {
      const probe = guess + step
      if (deltaAt(lo16, hi16, probe) >= delta) {
        b = probe
        break
      }
      a = probe + 1
    }
  } else {
    a = start
    b = guess - 1
    for (let step = 1; guess - step > start; step *= 2) {
      const probe = guess - step
      if (deltaAt(lo16, hi16, probe) <= delta) {
        a = probe
        break
      }
      b = probe - 1
    }
  }
  while (a <= b) {
    const m = (a + b) >>> 1
    const v = deltaAt(lo16, hi16, m)
    if (v < delta) a = m + 1
    else if (v > delta) b = m - 1
    else return m
  }
  return -1
}

/** Counts of the internal structures, for tests and metrics. */
export interface NeedleIndexStats {
  readonly segments: number
  readonly wideSegments: number
  /** Slots in frozen segments, vacant ones (removed keys) included. */
  readonly frozenSlots: number
  readonly stagingEntries: number
  readonly overflowEntries: number
  readonly chunks: number
}

export class NeedleIndex {
  /** Set by a successful lookup(): the entry's offset in NEEDLE_ALIGNMENT units. */
  foundOffset = 0
  /** Set by a successful lookup(): the entry's body size, without the deleted bit. */
  foundSize = 0
  /** Set by a successful lookup(): whether the entry is marked deleted. */
  foundDeleted = false

  #liveCount = 0
  #deletedCount = 0

  // Frozen segments: one slot per segment in each of these, #segCount in use.
  #segCount = 0
  #segBaseHi: Uint32Array = new Uint32Array(0)
  #segBaseLo: Uint32Array = new Uint32Array(0)
  /** Global position of the segment's first entry. */
  #segPos: Uint32Array = new Uint32Array(0)
  /** Entry count, plus WIDE_BIT for 32-bit deltas. */
  #segMeta: Uint32Array = new Uint32Array(0)
  /** Delta of the segment's last key, the scale for interpolation. */
  #segSpan: Uint32Array = new Uint32Array(0)
  // Packed storage of every segment, indexed by position within the chunk.
  /** Two words per entry: offset, then size word. */
  #entryChunks: Uint32Array[] = []
  /** Low 16 bits of each key's delta from its segment's base. */
  #deltaChunks: Uint16Array[] = []
  /** High 16 bits of the deltas of wide segments; allocated only for chunks that hold one. */
  #deltaHiChunks: (Uint16Array | undefined)[] = []
  /** Next free global position; the last chunk is filled up to it. */
  #nextPos = 0
  #hasFrozen = false
  #lastHi = 0
  #lastLo = 0

  // Staging: W words per entry, #stageCount in use, sorted by key.
  #stage: Uint32Array = new Uint32Array(0)
  #stageCount = 0

  // Overflow: W words per slot, a power-of-two slot count; a size word of 0 marks a free slot.
  #table: Uint32Array = new Uint32Array(0)
  #tableMask = 0
  #overflowCount = 0

  /** Where the last #find() found its key: a global position, staging index or table slot. */
  #at = 0
  /** Where the last #slot() found its entry: the words holding it and the index of its size. */
  #slotWords: Uint32Array = new Uint32Array(0)
  #slotSize = 0

  /**
   * Insert or replace key → (offset, bodySize); clears a deleted mark. Answers the body size the
   * key had while live before (0 if it was unknown or deleted), so callers can keep byte counts
   * without a lookup of their own; found* may change. Throws TypeError on out-of-range args.
   */
  set(keyHi: number, keyLo: number, offset: number, bodySize: number): number {
    if (
      keyHi >>> 0 !== keyHi ||
      keyLo >>> 0 !== keyLo ||
      offset >>> 0 !== offset ||
      (bodySize | 0) !== bodySize ||
      bodySize < 1
    ) {
      badSetArguments(keyHi, keyLo, offset, bodySize)
    }
    // Start-up and steady writes append above every staged key (hence above the frozen range
    // too). That case is kept here, small enough for V8 to inline into the caller's loop.
    const n = this.#stageCount
    const stage = this.#stage
    const at = n * W
    if (n > 0 && at < stage.length && n + 1 < STAGING_ENTRIES_MAX) {
      const h = stage[at - W]
      if (keyHi > h || (keyHi === h && keyLo > stage[at - W + 1])) {
        stage[at] = keyHi
        stage[at + 1] = keyLo
        stage[at + 2] = offset
        stage[at + 3] = bodySize
        this.#stageCount = n + 1
        this.#liveCount++
        return 0
      }
    }
    // Not an append: the key may be known. Its old size is what the caller's accounting needs.
    const previous = this.lookup(keyHi, keyLo) && !this.foundDeleted ? this.foundSize : 0
    this.#setSlow(keyHi, keyLo, offset, bodySize)
    return previous
  }

  /**
   * Mark the key deleted but keep its offset and size (deleted entries can still be looked up).
   * Returns true if it was live. Unknown key → returns false and records nothing.
   */
  markDeleted(keyHi: number, keyLo: number): boolean {
    if (!this.#slot(keyHi, keyLo)) return false
    const words = this.#slotWords
    const word = words[this.#slotSize]
    if ((word & DELETED_BIT) !== 0) return false
    words[this.#slotSize] = word | DELETED_BIT
    this.#liveCount--
    this.#deletedCount++
    return true
  }

  /** Forget the key entirely (live or deleted). Returns true if it was known. */
  remove(keyHi: number, keyLo: number): boolean {
    checkKey(keyHi, keyLo)
    const where = this.#find(keyHi, keyLo)
    if (where === NOWHERE) return false
    const at = this.#at
    if (where === IN_FROZEN) {
      // Segments cannot shrink, so the slot stays, vacant, and is reused if the key returns.
      const entries = this.#entryChunks[at >>> CHUNK_SHIFT]
      const i = (at & CHUNK_MASK) * 2 + 1
      const word = entries[i]
      if (word === 0) return false
      this.#forget(word)
      entries[i] = 0
    } else if (where === IN_STAGING) {
      const stage = this.#stage
      this.#forget(stage[at * W + 3])
      stage.copyWithin(at * W, (at + 1) * W, this.#stageCount * W)
      this.#stageCount--
    } else {
      this.#forget(this.#table[at * W + 3])
      this.#deleteSlot(at)
      this.#overflowCount--
    }
    return true
  }

  /** Look up without allocating: returns true if the key is known (live or deleted) and sets
   *  this.foundOffset, this.foundSize (bodySize, without the deleted bit) and this.foundDeleted. */
  lookup(keyHi: number, keyLo: number): boolean {
    if (!this.#slot(keyHi, keyLo)) return false
    const words = this.#slotWords
    const word = words[this.#slotSize]
    this.foundOffset = words[this.#slotSize - 1]
    this.foundSize = word & SIZE_MASK
    this.foundDeleted = (word & DELETED_BIT) !== 0
    return true
  }

  /**
   * Finds the entry of a known key (live or deleted) and points #slotWords / #slotSize at its
   * size word; in every layout the offset word sits just before it. False for an unknown key
   * or a vacant frozen slot.
   */
  #slot(keyHi: number, keyLo: number): boolean {
    checkKey(keyHi, keyLo)
    const where = this.#find(keyHi, keyLo)
    if (where === NOWHERE) return false
    const at = this.#at
    if (where === IN_FROZEN) {
      this.#slotWords = this.#entryChunks[at >>> CHUNK_SHIFT]
      this.#slotSize = (at & CHUNK_MASK) * 2 + 1
    } else {
      this.#slotWords = where === IN_STAGING ? this.#stage : this.#table
      this.#slotSize = at * W + 3
    }
    return this.#slotWords[this.#slotSize] !== 0
  }

  /** Live (not deleted) entries. */
  get liveCount(): number {
    return this.#liveCount
  }

  /** Known deleted entries. */
  get deletedCount(): number {
    return this.#deletedCount
  }

  /**
   * Every known entry, in increasing key order. `fn` must not modify the index. Allocates one
   * Uint32Array the size of the overflow table, to sort it. With `after`, frozen segments whose
   * keys are all at or below it are skipped (a walk for one page of keys); some entries at or
   * below `after` may still be given to fn, which filters them.
   */
  forEach(fn: (keyHi: number, keyLo: number, offset: number, bodySize: number, deleted: boolean) => void, after?: { readonly keyHi: number; readonly keyLo: number }): void {
    // The overflow keys interleave with the frozen ones, so they are sorted and merged in. All
    // of them are below the last frozen key, so none is left once the segments are done.
    const table = this.#table
    const order = new Uint32Array(this.#overflowCount)
    let n = 0
    for (let slot = 0; slot * W < table.length; slot++) {
      if (table[slot * W + 3] !== 0) order[n++] = slot
    }
    order.sort((a, b) => {
      const ah = table[a * W]
      const bh = table[b * W]
      if (ah !== bh) return ah < bh ? -1 : 1
      return table[a * W + 1] < table[b * W + 1] ? -1 : 1
    })
    let next = 0
    const emitOverflowBelow = (hi: number, lo: number): void => {
      while (next < n) {
        const at = order[next] * W
        const oh = table[at]
        const ol = table[at + 1]
        if (oh > hi || (oh === hi && ol > lo)) return
        const word = table[at + 3]
        fn(oh, ol, table[at + 2], word & SIZE_MASK, (word & DELETED_BIT) !== 0)
        next++
      }
    }

    for (let s = 0; s < this.#segCount; s++) {
      // Every key of a segment is below the next segment's base (invariant 2).
      if (after && s + 1 < this.#segCount) {
        const nextHi = this.#segBaseHi[s + 1]
        if (nextHi < after.keyHi || (nextHi === after.keyHi && this.#segBaseLo[s + 1] <= after.keyLo)) continue
      }
      const baseHi = this.#segBaseHi[s]
      const baseLo = this.#segBaseLo[s]
      const pos = this.#segPos[s]
      const meta = this.#segMeta[s]
      const c = pos >>> CHUNK_SHIFT
      const start = pos & CHUNK_MASK
      const end = start + (meta & COUNT_MASK)
      const deltas = this.#deltaChunks[c]
      const deltasHi = (meta & WIDE_BIT) !== 0 ? this.#deltaHiChunks[c] : undefined
      const entries = this.#entryChunks[c]
      for (let i = start; i < end; i++) {
        const delta = deltasHi === undefined ? deltas[i] : deltasHi[i] * 0x1_0000 + deltas[i]
        let lo = baseLo + delta
        let hi = baseHi
        if (lo > 0xffff_ffff) {
          lo -= 0x1_0000_0000
          hi++
        }
        emitOverflowBelow(hi, lo)
        const word = entries[i * 2 + 1]
        if (word !== 0) fn(hi, lo, entries[i * 2], word & SIZE_MASK, (word & DELETED_BIT) !== 0)
      }
    }

    const stage = this.#stage
    for (let i = 0; i < this.#stageCount; i++) {
      const at = i * W
      const word = stage[at + 3]
      fn(stage[at], stage[at + 1], stage[at + 2], word & SIZE_MASK, (word & DELETED_BIT) !== 0)
    }
  }

  /** Approximate bytes held by the typed arrays. */
  memoryBytes(): number {
    let bytes =
      this.#segBaseHi.byteLength +
      this.#segBaseLo.byteLength +
      this.#segPos.byteLength +
      this.#segMeta.byteLength +
      this.#segSpan.byteLength +
      this.#stage.byteLength +
      this.#table.byteLength
    for (let c = 0; c < this.#entryChunks.length; c++) {
      bytes += this.#entryChunks[c].byteLength + this.#deltaChunks[c].byteLength
      bytes += this.#deltaHiChunks[c]?.byteLength ?? 0
    }
    return bytes
  }

  /** Counts of the internal structures, for tests and metrics. */
  stats(): NeedleIndexStats {
    let wideSegments = 0
    for (let s = 0; s < this.#segCount; s++) if ((this.#segMeta[s] & WIDE_BIT) !== 0) wideSegments++
    return {
      segments: this.#segCount,
      wideSegments,
      frozenSlots: this.#nextPos,
      stagingEntries: this.#stageCount,
      overflowEntries: this.#overflowCount,
      chunks: this.#entryChunks.length,
    }
  }

  // -------------------------------------------------------------------------------------------
  // Internals.

  /** Adjusts the counts for an entry whose size word `word` is about to be dropped. */
  #forget(word: number): void {
    if (word === 0) return
    if ((word & DELETED_BIT) !== 0) this.#deletedCount--
    else this.#liveCount--
  }

  /** Where the key lives (IN_* or NOWHERE), with its index in #at. A vacant frozen slot counts as found. */
  #find(keyHi: number, keyLo: number): number {
    if (!this.#hasFrozen || keyHi > this.#lastHi || (keyHi === this.#lastHi && keyLo > this.#lastLo)) {
      const i = this.#searchStage(keyHi, keyLo)
      if (i < 0) return NOWHERE
      this.#at = i
      return IN_STAGING
    }
    const pos = this.#findFrozen(keyHi, keyLo)
    if (pos >= 0) {
      this.#at = pos
      return IN_FROZEN
    }
    if (this.#overflowCount === 0) return NOWHERE
    const slot = this.#findSlot(keyHi, keyLo)
    if (slot < 0) return NOWHERE
    this.#at = slot
    return IN_OVERFLOW
  }

  /** The global position of the key in the frozen segments, or -1. */
  #findFrozen(keyHi: number, keyLo: number): number {
    const n = this.#segCount
    const baseHis = this.#segBaseHi
    const baseLos = this.#segBaseLo
    if (n === 0 || keyHi < baseHis[0] || (keyHi === baseHis[0] && keyLo < baseLos[0])) return -1
    // The last segment whose base is at most the key is the only one that can hold it. Bases
    // are spread about evenly, so interpolate a first guess, gallop to bracket the answer in
    // [low, high], then binary-search: a plain binary search mispredicts a branch per step.
    let low = 0
    let high = n - 1
    if (baseAtMost(baseHis, baseLos, high, keyHi, keyLo)) {
      low = high
    } else if (n > 2) {
      const first = baseHis[0] * 0x1_0000_0000 + baseLos[0]
      const last = baseHis[high] * 0x1_0000_0000 + baseLos[high]
      // Doubles round keys above 2^53, so the guess may be off or NaN; it only has to be close.
      let guess = Math.floor(((keyHi * 0x1_0000_0000 + keyLo - first) / (last - first)) * high)
      if (!(guess >= 0)) guess = 0
      if (guess > high - 1) guess = high - 1
      if (baseAtMost(baseHis, baseLos, guess, keyHi, keyLo)) {
        low = guess
        for (let step = 1; guess + step < high; step *= 2) {
          if (!baseAtMost(baseHis, baseLos, guess + step, keyHi, keyLo)) {
            high = guess + step - 1
            break
          }
          low = guess + step
        }
      } else {
        high = guess - 1
        for (let step = 1; guess - step > 0; step *= 2) {
          if (baseAtMost(baseHis, baseLos, guess - step, keyHi, keyLo)) {
            low = guess - step
            break
          }
          high = guess - step - 1
        }
      }
    }
    while (low < high) {
      const mid = (low + high + 1) >>> 1
      if (baseAtMost(baseHis, baseLos, mid, keyHi, keyLo)) low = mid
      else high = mid - 1
    }
    const baseLo = baseLos[low]
    // A 64-bit subtraction in halves; a key more than 2^32 - 1 past the base is not there.
    if (keyHi - baseHis[low] - (keyLo < baseLo ? 1 : 0) !== 0) return -1
    const delta = (keyLo - baseLo) >>> 0
    if (delta > this.#segSpan[low]) return -1
    const pos = this.#segPos[low]
    const meta = this.#segMeta[low]
    const c = pos >>> CHUNK_SHIFT
    const start = pos & CHUNK_MASK
    const i = searchDeltas(
      this.#deltaChunks[c],
      (meta & WIDE_BIT) !== 0 ? this.#deltaHiChunks[c] : undefined,
      start,
      meta & COUNT_MASK,
      this.#segSpan[low],
      delta,
    )
    return i < 0 ? -1 : pos + (i - start)
  }

  /** The staging index of the key, or -(insertion point) - 1. */
  #searchStage(keyHi: number, keyLo: number): number {
    const stage = this.#stage
    let a = 0
    let b = this.#stageCount - 1
    while (a <= b) {
      const m = (a + b) >>> 1
      const h = stage[m * W]
      const l = stage[m * W + 1]
      if (h < keyHi || (h === keyHi && l < keyLo)) a = m + 1
      else if (h > keyHi || l > keyLo) b = m - 1
      else return m
    }
    return -a - 1
  }

  /** set() for every case but a plain append: staging inserts, overwrites, low keys. */
  #setSlow(keyHi: number, keyLo: number, offset: number, bodySize: number): void {
    if (!this.#hasFrozen || keyHi > this.#lastHi || (keyHi === this.#lastHi && keyLo > this.#lastLo)) {
      this.#setStaged(keyHi, keyLo, offset, bodySize)
      return
    }
    const pos = this.#findFrozen(keyHi, keyLo)
    if (pos >= 0) {
      const entries = this.#entryChunks[pos >>> CHUNK_SHIFT]
      const at = (pos & CHUNK_MASK) * 2
      this.#forget(entries[at + 1])
      entries[at] = offset
      entries[at + 1] = bodySize
      this.#liveCount++
      return
    }
    this.#setOverflow(keyHi, keyLo, offset, bodySize)
  }

  #setStaged(keyHi: number, keyLo: number, offset: number, bodySize: number): void {
    const n = this.#stageCount
    let stage = this.#stage
    let at = n * W
    // The common case, a key above every staged key, is a plain append.
    if (n > 0) {
      const h = stage[at - W]
      if (keyHi < h || (keyHi === h && keyLo <= stage[at - W + 1])) {
        const i = this.#searchStage(keyHi, keyLo)
        if (i >= 0) {
          this.#forget(stage[i * W + 3])
          stage[i * W + 2] = offset
          stage[i * W + 3] = bodySize
          this.#liveCount++
          return
        }
        at = (-i - 1) * W
      }
    }
    if (n * W === stage.length) {
      const grown = new Uint32Array(Math.min(Math.max(n * 2, STAGING_INITIAL_ENTRIES), STAGING_ENTRIES_MAX) * W)
      grown.set(stage)
      this.#stage = stage = grown
    }
    if (at < n * W) stage.copyWithin(at + W, at, n * W)
    stage[at] = keyHi
    stage[at + 1] = keyLo
    stage[at + 2] = offset
    stage[at + 3] = bodySize
    this.#stageCount = n + 1
    this.#liveCount++
    if (n + 1 === STAGING_ENTRIES_MAX) this.#freeze()
  }

  /** Moves the lowest staged keys into a new frozen segment. */
  #freeze(): void {
    const stage = this.#stage
    const n = this.#stageCount
    const pos = this.#nextPos
    const c = pos >>> CHUNK_SHIFT
    const start = pos & CHUNK_MASK
    const limit = Math.min(SEGMENT_ENTRIES, CHUNK_ENTRIES - start, n)

    // Deltas grow along the sorted keys, so the segment ends at the first key too far from the
    // base: for 16-bit deltas past 0xffff, for 32-bit deltas past 0xffffffff. Usually the last
    // candidate is close enough, and then so are all the others.
    const baseHi = stage[0]
    const baseLo = stage[1]
    let narrowCount = limit
    let wideCount = limit
    const lastLo = stage[(limit - 1) * W + 1]
    const lastNear =
      stage[(limit - 1) * W] - baseHi - (lastLo < baseLo ? 1 : 0) === 0 && ((lastLo - baseLo) | 0) >>> 0 <= 0xffff
    for (let i = lastNear ? limit : 1; i < limit; i++) {
      const lo = stage[i * W + 1]
      if (stage[i * W] - baseHi - (lo < baseLo ? 1 : 0) !== 0) {
        wideCount = i
        break
      }
      if (narrowCount === limit && ((lo - baseLo) | 0) >>> 0 > 0xffff) narrowCount = i
    }
    if (narrowCount > wideCount) narrowCount = wideCount
    const wide = narrowCount < wideCount && narrowCount < NARROW_ENTRIES_MIN
    const count = wide ? wideCount : narrowCount

    this.#reserve(c, start + count, wide)
    const entries = this.#entryChunks[c]
    const deltas = this.#deltaChunks[c]
    for (let i = 0; i < count; i++) {
      const at = i * W
      deltas[start + i] = (stage[at + 1] - baseLo) | 0
      entries[(start + i) * 2] = stage[at + 2]
      entries[(start + i) * 2 + 1] = stage[at + 3]
    }
    if (wide) {
      const deltasHi = this.#deltaHiChunks[c]!
      for (let i = 0; i < count; i++) deltasHi[start + i] = ((stage[i * W + 1] - baseLo) >>> 0) >>> 16
    }

    const s = this.#segCount
    if (s === this.#segMeta.length) this.#growSegments()
    this.#segBaseHi[s] = baseHi
    this.#segBaseLo[s] = baseLo
    this.#segPos[s] = pos
    this.#segMeta[s] = wide ? count | WIDE_BIT : count
    this.#segSpan[s] = stage[(count - 1) * W + 1] - baseLo
    this.#segCount = s + 1
    this.#nextPos = pos + count
    this.#hasFrozen = true
    this.#lastHi = stage[(count - 1) * W]
    this.#lastLo = stage[(count - 1) * W + 1]
    stage.copyWithin(0, count * W, n * W)
    this.#stageCount = n - count
  }

  /**
   * Makes chunk `c` hold at least `entries` entries (and high delta halves if `wide`). Only the
   * first chunk grows, by doubling up to CHUNK_ENTRIES, so that a small volume stays small;
   * later chunks are allocated whole, because copying them would touch every page twice.
   */
  #reserve(c: number, entries: number, wide: boolean): void {
    if (c === this.#entryChunks.length) {
      const length = c === 0 ? 0 : CHUNK_ENTRIES
      this.#entryChunks.push(new Uint32Array(length * 2))
      this.#deltaChunks.push(new Uint16Array(length))
      this.#deltaHiChunks.push(undefined)
    }
    const have = this.#deltaChunks[c].length
    if (entries > have) {
      let length = Math.max(have * 2, SEGMENT_ENTRIES)
      while (length < entries) length *= 2
      length = Math.min(length, CHUNK_ENTRIES)
      const grownEntries = new Uint32Array(length * 2)
      grownEntries.set(this.#entryChunks[c])
      this.#entryChunks[c] = grownEntries
      const grownDeltas = new Uint16Array(length)
      grownDeltas.set(this.#deltaChunks[c])
      this.#deltaChunks[c] = grownDeltas
      const hi = this.#deltaHiChunks[c]
      if (hi !== undefined) {
        const grownHi = new Uint16Array(length)
        grownHi.set(hi)
        this.#deltaHiChunks[c] = grownHi
      }
    }
    if (wide && this.#deltaHiChunks[c] === undefined) {
      this.#deltaHiChunks[c] = new Uint16Array(this.#deltaChunks[c].length)
    }
  }

  #growSegments(): void {
    const length = Math.max(this.#segMeta.length * 2, SEGMENTS_INITIAL)
    const grow = (old: Uint32Array): Uint32Array => {
      const fresh = new Uint32Array(length)
      fresh.set(old)
      return fresh
    }
    this.#segBaseHi = grow(this.#segBaseHi)
    this.#segBaseLo = grow(this.#segBaseLo)
    this.#segPos = grow(this.#segPos)
    this.#segMeta = grow(this.#segMeta)
    this.#segSpan = grow(this.#segSpan)
  }

  // Overflow table.

  /** The slot holding the key, or -1. */
  #findSlot(keyHi: number, keyLo: number): number {
    const table = this.#table
    const mask = this.#tableMask
    let slot = hashKey(keyHi, keyLo) & mask
    while (table[slot * W + 3] !== 0) {
      if (table[slot * W] === keyHi && table[slot * W + 1] === keyLo) return slot
      slot = (slot + 1) & mask
    }
    return -1
  }

  #setOverflow(keyHi: number, keyLo: number, offset: number, bodySize: number): void {
    // Linear probing stays short while the table is at most three quarters full.
    if ((this.#overflowCount + 1) * 4 > (this.#tableMask + 1) * 3 || this.#table.length === 0) this.#growTable()
    const table = this.#table
    const mask = this.#tableMask
    let slot = hashKey(keyHi, keyLo) & mask
    for (;;) {
      const at = slot * W
      const word = table[at + 3]
      if (word === 0) {
        table[at] = keyHi
        table[at + 1] = keyLo
        this.#overflowCount++
        break
      }
      if (table[at] === keyHi && table[at + 1] === keyLo) {
        this.#forget(word)
        break
      }
      slot = (slot + 1) & mask
    }
    table[slot * W + 2] = offset
    table[slot * W + 3] = bodySize
    this.#liveCount++
  }

  #growTable(): void {
    const old = this.#table
    const slots = old.length === 0 ? OVERFLOW_INITIAL_SLOTS : (old.length / W) * 2
    const table = new Uint32Array(slots * W)
    const mask = slots - 1
    for (let at = 0; at < old.length; at += W) {
      if (old[at + 3] === 0) continue
      let slot = hashKey(old[at], old[at + 1]) & mask
      while (table[slot * W + 3] !== 0) slot = (slot + 1) & mask
      table.set(old.subarray(at, at + W), slot * W)
    }
    this.#table = table
    this.#tableMask = mask
  }

  /**
   * Empties a slot without tombstones: later entries of the same probe run move back into the
   * hole when their home slot allows it, so every remaining key stays reachable from its home.
   */
  #deleteSlot(slot: number): void {
    const table = this.#table
    const mask = this.#tableMask
    let hole = slot
    let j = slot
    for (;;) {
      j = (j + 1) & mask
      if (table[j * W + 3] === 0) break
      const home = hashKey(table[j * W], table[j * W + 1]) & mask
      // The entry at j may move to the hole only if its home is not cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j
      if (stays) continue
      table.copyWithin(hole * W, j * W, j * W + W)
      hole = j
    }
    table.fill(0, hole * W, hole * W + W)
  }
}
