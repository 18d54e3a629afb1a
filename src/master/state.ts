/**
 * The master's durable state, in level: the key and volume-id high-water marks, the data
 * servers it has known (so that a restarted master can tell when its view is complete), and the
 * MD5 dedup index (which stored file holds the bytes with a given MD5, per collection and
 * replication).
 *
 * Invariants:
 * - No key is handed out twice, also across a crash: keys are handed out only below a limit
 *   that is on disk (a synchronous write) before the first of them leaves the process. After a
 *   restart, handing out starts at the stored limit, skipping whatever the crash left unused.
 * - Volume ids work the same way, and the limit is also raised past every id a heartbeat reports.
 * - The dedup index is a hint, never trusted: the data server checks the stored file (alive,
 *   same MD5) before it links to it. So its writes need no fsync, and a stale entry costs only a
 *   full upload, after which the entry names the new file.
 */
import { mkdir } from 'node:fs/promises'
import { Level } from 'level'
import { diskError } from '../common/errors.js'

const KEY_LIMIT = 'keys/limit'
const VOLUME_ID_LIMIT = 'volumes/limit'
const SERVER_PREFIX = 'servers/'
const DEDUP_PREFIX = 'dedup/'
/** Copies that re-replication replaced: `retired/<volume>@<url>`, deleted once the server dropped it. */
const RETIRED_PREFIX = 'retired/'

/** Where the bytes with an MD5 are stored, as the dedup index says. */
export interface DedupEntry {
  readonly collection: string
  readonly replication: string
  /** 32 lowercase hex digits. */
  readonly md5: string
  readonly fid: string
  readonly size: number
}

/** Dedup entries kept in memory, most recently used last (level holds them all). */
const DEDUP_CACHE_MAX = 100_000

function dedupKey(collection: string, replication: string, md5: string): string {
  return `${DEDUP_PREFIX}${collection}/${replication}/${md5}`
}

export interface KnownServer {
  readonly url: string
  readonly dataCenter: string
  readonly rack: string
}

export class MasterState {
  readonly #db: Level<string, string>
  /** Keys below #keyLimit and at or above #nextKey may be handed out. */
  #nextKey: number
  #keyLimit: number
  readonly #keyLease: number
  #nextVolumeId: number
  #volumeIdLimit: number
  /** Serializes writes of the limits, so that a slower write never lowers a faster one. */
  #writing: Promise<unknown> = Promise.resolve()
  readonly #known = new Map<string, KnownServer>()
  readonly #retired: Array<{ volume: number; url: string }> = []
  /** A write-through cache of the dedup index: hot images are asked for again and again. */
  readonly #dedupCache = new Map<string, string>()

  private constructor(db: Level<string, string>, keyLimit: number, volumeIdLimit: number, keyLease: number) {
    this.#db = db
    this.#nextKey = keyLimit
    this.#keyLimit = keyLimit
    this.#keyLease = keyLease
    this.#nextVolumeId = volumeIdLimit
    this.#volumeIdLimit = volumeIdLimit
  }

  static async open(dir: string, keyLease: number): Promise<MasterState> {
    let db: Level<string, string> | undefined
    try {
      await mkdir(dir, { recursive: true })
      db = new Level<string, string>(dir, { valueEncoding: 'utf8' })
      await db.open()
      const keyLimit = Number((await db.get(KEY_LIMIT)) ?? '1')
      const volumeIdLimit = Number((await db.get(VOLUME_ID_LIMIT)) ?? '1')
      const state = new MasterState(db, keyLimit, volumeIdLimit, keyLease)
      for await (const [key, value] of db.iterator({ gt: SERVER_PREFIX, lt: `${SERVER_PREFIX}\xff` })) {
        state.#known.set(key.slice(SERVER_PREFIX.length), JSON.parse(value) as KnownServer)
      }
      for await (const key of db.keys({ gt: RETIRED_PREFIX, lt: `${RETIRED_PREFIX}\xff` })) {
        const m = /^([0-9]+)@(.+)$/.exec(key.slice(RETIRED_PREFIX.length))
        if (m) state.#retired.push({ volume: Number(m[1]), url: m[2]! })
      }
      return state
    } catch (err) {
      await db?.close().catch(() => {})
      throw diskError(err, `open the master's state in ${dir}`)
    }
  }

  /**
   * The first of count consecutive fresh keys. Most calls return at once; one in keyLease
   * waits for the next lease to be written.
   */
  async takeKeys(count: number): Promise<number> {
    while (this.#nextKey + count > this.#keyLimit) {
      const limit = Math.max(this.#keyLimit, this.#nextKey + count) + this.#keyLease
      await this.#persist(KEY_LIMIT, limit, () => this.#keyLimit, (v) => (this.#keyLimit = v))
    }
    const first = this.#nextKey
    this.#nextKey += count
    return first
  }

  /** count fresh volume ids. */
  async takeVolumeIds(count: number): Promise<number[]> {
    const first = this.#nextVolumeId
    this.#nextVolumeId += count
    if (this.#nextVolumeId > this.#volumeIdLimit) {
      await this.#persist(VOLUME_ID_LIMIT, this.#nextVolumeId, () => this.#volumeIdLimit, (v) => (this.#volumeIdLimit = v))
    }
    return Array.from({ length: count }, (_, i) => first + i)
  }

  /** Makes sure ids up to volumeId are never handed out (a heartbeat reported it). */
  observeVolumeId(volumeId: number): void {
    if (volumeId >= this.#nextVolumeId) this.#nextVolumeId = volumeId + 1
  }

  /** Writes limit under key, durably, unless a larger one is already there. */
  #persist(key: string, limit: number, current: () => number, set: (v: number) => void): Promise<void> {
    const write = this.#writing.then(async () => {
      if (current() >= limit) return
      try {
        await this.#db.put(key, String(limit), { sync: true })
      } catch (err) {
        throw diskError(err, `persist ${key}`)
      }
      set(limit)
    })
    this.#writing = write.catch(() => {})
    return write
  }

  knownServers(): KnownServer[] {
    return [...this.#known.values()]
  }

  /** Remembers a data server; written only when it is new or moved. */
  async rememberServer(server: KnownServer): Promise<void> {
    const old = this.#known.get(server.url)
    if (old && old.dataCenter === server.dataCenter && old.rack === server.rack) return
    this.#known.set(server.url, server)
    // Synchronous, like the leases: a restarted master must know every server to wait for.
    await this.#db.put(`${SERVER_PREFIX}${server.url}`, JSON.stringify(server), { sync: true }).catch((err) => {
      throw diskError(err, 'remember a data server')
    })
  }

  /** The replaced copies recorded when this state was opened. */
  retiredCopies(): Array<{ volume: number; url: string }> {
    return [...this.#retired]
  }

  /** Records that url's copy of volume was replaced and must never serve again. */
  async retireCopy(volume: number, url: string): Promise<void> {
    await this.#db.put(`${RETIRED_PREFIX}${volume}@${url}`, '', { sync: true }).catch((err) => {
      throw diskError(err, 'record a replaced copy')
    })
  }

  /** Forgets a replaced copy once its server no longer holds it. */
  async forgetRetired(volume: number, url: string): Promise<void> {
    await this.#db.del(`${RETIRED_PREFIX}${volume}@${url}`).catch(() => {})
  }

  /** The stored file with these bytes, if the index knows one. */
  async dedupGet(collection: string, replication: string, md5: string): Promise<{ fid: string; size: number } | undefined> {
    const key = dedupKey(collection, replication, md5)
    let value = this.#dedupCache.get(key)
    if (value !== undefined) {
      this.#dedupCache.delete(key)
      this.#dedupCache.set(key, value)
    } else {
      try {
        value = await this.#db.get(key)
      } catch (err) {
        throw diskError(err, 'read the dedup index')
      }
      if (value === undefined) return undefined
      this.#cacheDedup(key, value)
    }
    const [fid, size] = value.split(' ')
    return { fid: fid!, size: Number(size) }
  }

  /** Records where bytes are stored (the newest report for an MD5 wins). */
  async dedupPut(entries: readonly DedupEntry[]): Promise<void> {
    if (entries.length === 0) return
    const puts = entries.map((e) => ({ type: 'put' as const, key: dedupKey(e.collection, e.replication, e.md5), value: `${e.fid} ${e.size}` }))
    try {
      await this.#db.batch(puts)
    } catch (err) {
      throw diskError(err, 'write the dedup index')
    }
    for (const p of puts) if (this.#dedupCache.has(p.key)) this.#cacheDedup(p.key, p.value)
  }

  #cacheDedup(key: string, value: string): void {
    this.#dedupCache.delete(key)
    this.#dedupCache.set(key, value)
    if (this.#dedupCache.size > DEDUP_CACHE_MAX) this.#dedupCache.delete(this.#dedupCache.keys().next().value!)
  }

  async close(): Promise<void> {
    await this.#writing
    await this.#db.close()
  }
}
