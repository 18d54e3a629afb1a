/**
 * The volumes in one data server's directory.
 *
 * Invariants:
 * - At most one process uses a directory: a LOCK file names the owner's pid, and a lock whose
 *   owner is gone (a crash) is taken over.
 * - Every `<vid>.dat` in the directory is opened at start-up. A volume that cannot be opened is
 *   kept out of service and reported, never deleted or rewritten.
 * - Leftover `<vid>.dat.new` files are volume creations that a crash interrupted before their
 *   rename; they hold no acknowledged data and are removed.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { NeedleError, diskError } from '../common/errors.js'
import { Volume, compactDatPath, compactIdxPath, compactMarkerPath, datPath, idxPath, syncDir, type VolumeOptions, type VolumeSettings, type VolumeStatus } from './volume.js'


export interface StoreOptions {
  readonly dir: string
  readonly volume: VolumeSettings
  /** Volumes this server holds at most. */
  readonly volumesMax: number
  readonly log: (message: string) => void
}

export interface BrokenVolume {
  readonly id: number
  readonly error: string
}

const DAT_NAME = /^([0-9]+)\.dat$/
const NEW_NAME = /^([0-9]+)\.dat\.new$/
/** Files of a volume copy from another server that a crash interrupted (see volume-copy.ts). */
const COPYING_NAME = /^([0-9]+)\.(dat|idx)\.copying$/

export class Store {
  readonly dir: string
  readonly #opts: StoreOptions
  readonly #volumes = new Map<number, Volume>()
  readonly #broken = new Map<number, string>()
  readonly #creating = new Set<number>()
  #closed = false

  private constructor(opts: StoreOptions) {
    this.dir = opts.dir
    this.#opts = opts
  }

  static async open(opts: StoreOptions): Promise<Store> {
    const store = new Store(opts)
    try {
      await mkdir(opts.dir, { recursive: true })
      await takeLock(opts.dir)
    } catch (err) {
      throw diskError(err, `open data directory ${opts.dir}`)
    }
    const names = await readdir(opts.dir)
    for (const name of names) {
      if (NEW_NAME.test(name) || COPYING_NAME.test(name)) await rm(join(opts.dir, name), { force: true })
    }
    const ids = names.flatMap((name) => {
      const m = DAT_NAME.exec(name)
      return m ? [Number(m[1])] : []
    })
    for (const id of ids.sort((a, b) => a - b)) {
      try {
        store.#volumes.set(id, await Volume.open(store.#volumeOptions(id)))
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        store.#broken.set(id, message)
        opts.log(`volume ${id} is out of service: ${message}`)
      }
    }
    return store
  }

  #volumeOptions(volumeId: number): VolumeOptions {
    return { ...this.#opts.volume, dir: this.dir, volumeId, onRecovery: (message) => this.#opts.log(message) }
  }

  get(volumeId: number): Volume | undefined {
    return this.#volumes.get(volumeId)
  }

  /** The volume, or NS_ERR_VOLUME_NOT_FOUND. */
  volume(volumeId: number): Volume {
    const volume = this.#volumes.get(volumeId)
    if (!volume) throw new NeedleError('NS_ERR_VOLUME_NOT_FOUND', `volume ${volumeId} is not on this server`)
    return volume
  }

  /** Holds the id and a volume slot for a volume being made; #creating releases it. */
  #reserve(volumeId: number): void {
    if (this.#closed) throw new NeedleError('NS_ERR_VOLUME_CLOSED', 'the store is closed')
    if (this.#volumes.has(volumeId) || this.#broken.has(volumeId) || this.#creating.has(volumeId)) {
      throw new NeedleError('NS_ERR_VOLUME_EXISTS', `volume ${volumeId} already exists`)
    }
    if (this.#volumes.size + this.#creating.size >= this.#opts.volumesMax) {
      throw new NeedleError('NS_ERR_BAD_REQUEST', `this server holds at most ${this.#opts.volumesMax} volumes`)
    }
    this.#creating.add(volumeId)
  }

  async create(volumeId: number, placement: number, collection = ''): Promise<Volume> {
    this.#reserve(volumeId)
    try {
      const volume = await Volume.create({ ...this.#volumeOptions(volumeId), placement, collection })
      this.#volumes.set(volumeId, volume)
      return volume
    } finally {
      this.#creating.delete(volumeId)
    }
  }

  /**
   * Takes a volume whose files `fill` puts in place (a copy from another server): the id and a
   * volume slot are held while it runs, then the volume is opened (recovery checks `.idx`
   * against `.dat`), checked, and only then served. If any step fails, nothing is left under
   * the volume's names.
   */
  async adopt(volumeId: number, fill: (dir: string) => Promise<void>, check: (volume: Volume) => Promise<void> = async () => {}): Promise<Volume> {
    this.#reserve(volumeId)
    try {
      let volume: Volume
      try {
        await fill(this.dir)
        volume = await Volume.open(this.#volumeOptions(volumeId))
        await check(volume).catch(async (err: unknown) => {
          await volume.close().catch(() => {})
          throw err
        })
      } catch (err) {
        await this.#removeFiles(volumeId).catch(() => {})
        throw err
      }
      this.#volumes.set(volumeId, volume)
      return volume
    } finally {
      this.#creating.delete(volumeId)
    }
  }

  /**
   * Closes a volume and deletes its files (the master undoing a volume creation that did not
   * reach every copy). `.dat` goes first: a leftover `.idx` alone is never opened.
   */
  async remove(volumeId: number): Promise<void> {
    const volume = this.volume(volumeId)
    this.#volumes.delete(volumeId)
    await volume.close()
    try {
      await this.#removeFiles(volumeId)
    } catch (err) {
      throw diskError(err, `remove volume ${volumeId}`)
    }
  }

  /** Deletes every file of a volume, durably. */
  async #removeFiles(volumeId: number): Promise<void> {
    // The marker first: without it, half-made compaction files are never renamed into place.
    await rm(compactMarkerPath(this.dir, volumeId), { force: true })
    for (const path of [datPath(this.dir, volumeId), idxPath(this.dir, volumeId), compactDatPath(this.dir, volumeId), compactIdxPath(this.dir, volumeId)]) {
      await rm(path, { force: true })
    }
    await syncDir(this.dir)
  }

  list(): Volume[] {
    return [...this.#volumes.values()].sort((a, b) => a.id - b.id)
  }

  statuses(): VolumeStatus[] {
    return this.list().map((v) => v.status())
  }

  broken(): BrokenVolume[] {
    return [...this.#broken].map(([id, error]) => ({ id, error }))
  }

  get volumesMax(): number {
    return this.#opts.volumesMax
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.allSettled(this.list().map((v) => v.close()))
    await releaseLock(this.dir)
  }
}

/** Directories whose lock a Store of this process holds. */
const lockedHere = new Set<string>()

/** Takes the directory's lock, or fails if a live process (this one included) holds it. */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, 'LOCK')
  const key = resolve(dir)
  if (lockedHere.has(key)) throw new NeedleError('NS_ERR_BAD_OPTION', `${dir} is in use by this process`)
  await takeFileLock(dir, path)
  lockedHere.add(key)
}

function releaseLock(dir: string): Promise<void> {
  lockedHere.delete(resolve(dir))
  return rm(join(dir, 'LOCK'), { force: true })
}

async function takeFileLock(dir: string, path: string): Promise<void> {
  try {
    await writeFile(path, `${process.pid}\n`, { flag: 'wx' })
    return
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10)
  if (Number.isInteger(owner) && owner !== process.pid && isAlive(owner)) {
    throw new NeedleError('NS_ERR_BAD_OPTION', `${dir} is in use by process ${owner}`)
  }
  await writeFile(path, `${process.pid}\n`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
