/**
 * Runs compactions on a data server: one volume at a time, whether an operator asked for it or
 * a volume's garbage ratio passed the threshold (checked every compactCheckIntervalMs).
 *
 * With faultStep (`--fault-compact <step>`, or `NEEDLESTORE_FAULT_COMPACT=<step>`, a hidden
 * flag for the crash tests), the process kills itself with SIGKILL at that step of every
 * compaction, as a crash there would stop it.
 */
import { NeedleError } from '../common/errors.js'
import type { Store } from './store.js'
import { COMPACT_STEPS, type CompactResult, type CompactStep } from './volume.js'

export interface CompactorOptions {
  readonly graceMs: number
  readonly bytesPerSecond: number
  /** Garbage ratio past which a volume is compacted by itself; 0 turns that off. */
  readonly garbageThreshold: number
  readonly checkIntervalMs: number
  readonly log: (message: string) => void
  readonly faultStep?: CompactStep
}

function crashAt(step: CompactStep | undefined): ((at: CompactStep) => void) | undefined {
  if (step === undefined) return undefined
  if (!COMPACT_STEPS.includes(step)) throw new TypeError(`the compaction fault step must be one of ${COMPACT_STEPS.join(', ')}`)
  return (at) => {
    if (at === step) process.kill(process.pid, 'SIGKILL')
  }
}

export class Compactor {
  readonly #store: Store
  readonly #opts: CompactorOptions
  readonly #fault: ((at: CompactStep) => void) | undefined
  /** The compaction running now; the next waits for it. */
  #running: Promise<unknown> = Promise.resolve()
  #queued = 0
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(store: Store, opts: CompactorOptions) {
    this.#store = store
    this.#opts = opts
    this.#fault = crashAt(opts.faultStep)
  }

  start(): void {
    if (this.#opts.garbageThreshold <= 0) return
    const tick = () => {
      if (this.#closed) return
      void this.#compactGarbage()
      this.#timer = setTimeout(tick, this.#opts.checkIntervalMs)
      this.#timer.unref()
    }
    this.#timer = setTimeout(tick, this.#opts.checkIntervalMs)
    this.#timer.unref()
  }

  /** Compacts a volume, after the compactions queued before it. */
  compact(volumeId: number): Promise<CompactResult> {
    const volume = this.#store.volume(volumeId)
    if (volume.compacting) return Promise.reject(new NeedleError('NS_ERR_COMPACTING', `volume ${volumeId} is being compacted`))
    if (this.#queued >= 64) return Promise.reject(new NeedleError('NS_ERR_OVERLOADED', `${this.#queued} compactions are queued`))
    this.#queued++
    const run = this.#running.then(() => {
      if (this.#closed) throw new NeedleError('NS_ERR_VOLUME_CLOSED', 'the server is stopping')
      return this.#store.volume(volumeId).compact({
        graceMs: this.#opts.graceMs,
        bytesPerSecond: this.#opts.bytesPerSecond,
        ...(this.#fault ? { fault: this.#fault } : {}),
      })
    })
    this.#running = run.catch(() => {}).finally(() => this.#queued--)
    return run.then((result) => {
      this.#opts.log(`volume ${volumeId} compacted: ${result.beforeBytes} → ${result.afterBytes} bytes, ${result.needles} needles, in ${result.ms} ms`)
      return result
    })
  }

  /** The volume with the most garbage past the threshold, if no compaction runs. */
  async #compactGarbage(): Promise<void> {
    if (this.#queued > 0) return
    const candidate = this.#store
      .statuses()
      .filter((s) => s.garbageRatio > this.#opts.garbageThreshold)
      .sort((a, b) => b.garbageRatio - a.garbageRatio)[0]
    if (!candidate) return
    try {
      await this.compact(candidate.id)
    } catch (err) {
      this.#opts.log(`volume ${candidate.id}: compaction failed: ${(err as Error).message}`)
    }
  }

  /** Stops starting compactions; one running stops when its volume closes (and cleans up). */
  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }
}
