/**
 * A one-line progress bar for long batch commands, drawn on stderr and only when stderr is a
 * terminal: piped or redirected output never gets control characters, and stdout keeps only
 * results. The text itself comes from pure functions, tested without a terminal.
 */

const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const

/** A byte count for people: `512 B`, `1.5 KiB`, `12.0 MiB` (binary units). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) throw new TypeError(`formatBytes needs a byte count, got ${bytes}`)
  if (bytes < 1024) return `${Math.round(bytes)} B`
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(1)} ${BYTE_UNITS[unit]}`
}

/** A transfer rate, `1.3 MiB/s`; `-` until some time has passed. */
export function formatRate(bytes: number, elapsedMs: number): string {
  if (elapsedMs <= 0) return '- B/s'
  return `${formatBytes((bytes * 1000) / elapsedMs)}/s`
}

export interface ProgressState {
  readonly filesDone: number
  readonly filesTotal: number
  readonly bytesDone: number
  readonly bytesTotal: number
  readonly failed: number
  readonly elapsedMs: number
  /** What is counted (default 'files'). */
  readonly unit?: string
}

const BAR_WIDTH_MAX = 30
const BAR_WIDTH_MIN = 10

/**
 * The progress line, at most `columns - 1` characters (a line that fills the terminal's last
 * column wraps on some terminals, and the next redraw would then leave a copy behind):
 *
 *   [###########-------------------]  512/1000 files  2.1/4.0 MiB  1.3 MiB/s  2 failed
 */
export function formatProgress(state: ProgressState, columns = 80): string {
  const fraction = state.filesTotal > 0 ? Math.min(1, state.filesDone / state.filesTotal) : 1
  const counts = `${state.filesDone}/${state.filesTotal} ${state.unit ?? 'files'}`
  const bytes = `${formatBytes(state.bytesDone)}/${formatBytes(state.bytesTotal)}`
  const rate = formatRate(state.bytesDone, state.elapsedMs)
  const failed = state.failed > 0 ? `  ${state.failed} failed` : ''
  const text = `${counts}  ${bytes}  ${rate}${failed}`
  const room = columns - 1 - text.length - 4
  const barWidth = Math.min(BAR_WIDTH_MAX, room)
  if (barWidth < BAR_WIDTH_MIN) return text.slice(0, Math.max(0, columns - 1))
  const filled = Math.round(fraction * barWidth)
  return `[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]  ${text}`
}

/** What ProgressBar needs of a stream: process.stderr, or a fake in tests. */
export interface ProgressStream {
  readonly isTTY?: boolean
  readonly columns?: number
  write(text: string): unknown
}

export interface ProgressBarOptions {
  readonly stream: ProgressStream
  readonly filesTotal: number
  readonly bytesTotal: number
  /** Draw at all (default: when the stream is a terminal). */
  readonly enabled?: boolean
  /** Least time between two redraws (default 100 ms). */
  readonly intervalMs?: number
  readonly now?: () => number
  /** What is counted (default 'files'). */
  readonly unit?: string
}

/** Erases the current terminal line and returns to its start. */
const CLEAR_LINE = '\r\x1b[2K'

export class ProgressBar {
  readonly enabled: boolean
  readonly #stream: ProgressStream
  readonly #filesTotal: number
  readonly #bytesTotal: number
  readonly #intervalMs: number
  readonly #now: () => number
  readonly #unit: string | undefined
  readonly #startMs: number
  #filesDone = 0
  #bytesDone = 0
  #failed = 0
  #lastDrawMs = -Infinity
  /** The line on screen now, or '' when nothing is drawn. */
  #shown = ''
  #finished = false

  constructor(opts: ProgressBarOptions) {
    this.#stream = opts.stream
    this.enabled = opts.enabled ?? opts.stream.isTTY === true
    this.#filesTotal = opts.filesTotal
    this.#bytesTotal = opts.bytesTotal
    this.#intervalMs = opts.intervalMs ?? 100
    this.#now = opts.now ?? Date.now
    this.#unit = opts.unit
    this.#startMs = this.#now()
  }

  get state(): ProgressState {
    return {
      filesDone: this.#filesDone,
      filesTotal: this.#filesTotal,
      bytesDone: this.#bytesDone,
      bytesTotal: this.#bytesTotal,
      failed: this.#failed,
      elapsedMs: this.#now() - this.#startMs,
      ...(this.#unit !== undefined ? { unit: this.#unit } : {}),
    }
  }

  /** Draws the bar at 0, before the first file finishes. */
  start(): void {
    if (!this.#finished) this.#draw(false)
  }

  /** One file finished: its bytes count (0 for a failure). Redraws at most every intervalMs. */
  fileDone(bytes: number, ok = true): void {
    this.#filesDone++
    this.#bytesDone += bytes
    if (!ok) this.#failed++
    if (!this.#finished) this.#draw(false)
  }

  /**
   * Runs write (which prints to the same terminal: a note on stderr, or a result on stdout
   * when stdout is the terminal too) with the bar taken off the screen, then draws it again:
   * a line never ends up glued to the bar.
   */
  around(write: () => void): void {
    if (!this.enabled || this.#shown === '') {
      write()
      return
    }
    this.#stream.write(CLEAR_LINE)
    write()
    this.#shown = this.#render()
    this.#stream.write(this.#shown)
  }

  /** Draws the final state and ends the line, so that what follows starts on a line of its own. */
  finish(): void {
    if (this.#finished) return
    this.#finished = true
    if (!this.enabled) return
    this.#draw(true)
    this.#stream.write('\n')
    this.#shown = ''
  }

  #draw(force: boolean): void {
    if (!this.enabled) return
    const now = this.#now()
    if (!force && now - this.#lastDrawMs < this.#intervalMs) return
    this.#lastDrawMs = now
    this.#shown = this.#render()
    this.#stream.write(CLEAR_LINE + this.#shown)
  }

  #render(): string {
    // A terminal of unknown size (a pty nobody sized) reports 0 columns.
    return formatProgress(this.state, this.#stream.columns || 80)
  }
}
