/**
 * Comparing the copies of one key across the replicas of a volume, and deciding what repairs
 * them. Pure: no I/O, no clock (the time is passed in), so the rules are tested on their own.
 *
 * The rules, for one key seen on n copies:
 * - Deleted or absent everywhere: nothing to do.
 * - Deleted on some copy and live on others: the delete wins. Every replicated write, delete or
 *   undelete that fails part-way is reconciled by deleting its key on every copy, so copies that
 *   disagree about a delete converge on "deleted"; the live copies get a tombstone.
 * - Live (whole or damaged) on fewer than half of the copies: the write never reached most
 *   copies (a failed write's leftover), so it is deleted where it is ("extra").
 * - Live on at least half of the copies: it belongs. The whole copies vote on its content
 *   (cookie, size, MD5); the largest group is the good one, and every other copy — damaged,
 *   missing, or whole with other content ("mismatch") — gets the good one's file.
 * - No whole copy at all: the file is lost; it is reported and nothing is done.
 *
 * Missing, extra, mismatched and half-deleted keys may be writes or deletes still in flight, so
 * they are acted on only once every needle involved is older than the settle time. A damaged
 * needle is repaired at once: its bytes are bad whatever is in flight.
 */

/** What one copy holds for one key, on the wire of `GET /admin/volume/scan`. */
export interface KeyState {
  /** The 64-bit key as 16 hex digits (fixed width, so that string order is key order). */
  readonly key: string
  /** The cookie as 8 hex digits; for a damaged needle, what its header says. */
  readonly cookie: string
  readonly state: 'live' | 'damaged' | 'deleted'
  readonly size: number
  /** MD5 of a live file's bytes, 32 hex digits ('' when not live). */
  readonly md5: string
  readonly appendAtMs: number
  readonly error?: string
}

export type Problem = 'damaged' | 'missing' | 'mismatch' | 'extra' | 'deleted' | 'lost'

/** One copy's problem with one key, and the repair for it. */
export interface Finding {
  /** Index of the copy with the problem. */
  readonly copy: number
  readonly problem: Problem
  /** copy: store the file of copy `from` here; delete: append a tombstone here; none: report only. */
  readonly action: 'copy' | 'delete' | 'none'
  /** For a copy: the copy whose file is good. */
  readonly from?: number
  /** The cookie of the file to copy, or of the file to delete. */
  readonly cookie: string
  /** Why: one short sentence for the report. */
  readonly why: string
}

/** Hex of a 64-bit key given as halves: 16 digits. */
export function keyHex(keyHi: number, keyLo: number): string {
  return keyHi.toString(16).padStart(8, '0') + keyLo.toString(16).padStart(8, '0')
}

/** The halves of a key given as hex (at most 16 digits); undefined when malformed. */
export function parseKeyHex(text: string): { keyHi: number; keyLo: number } | undefined {
  if (!/^[0-9a-fA-F]{1,16}$/.test(text)) return undefined
  const full = text.padStart(16, '0')
  return { keyHi: Number.parseInt(full.slice(0, 8), 16), keyLo: Number.parseInt(full.slice(8), 16) }
}

/**
 * The problems of one key, one finding per copy that needs a repair (or cannot get one).
 * `copies[i]` is what copy i holds (undefined: the key is unknown there).
 */
export function compareKey(copies: readonly (KeyState | undefined)[], nowMs: number, settleMs: number): Finding[] {
  const n = copies.length
  const present = copies.flatMap((c, i) => (c ? [{ c, i }] : []))
  const live = present.filter(({ c }) => c.state !== 'deleted')
  if (live.length === 0) return []
  const deleted = present.filter(({ c }) => c.state === 'deleted')
  const settled = present.every(({ c }) => c.appendAtMs <= nowMs - settleMs)
  const unsettled = settled ? '' : ' (recent: left until it settles)'
  const names = (xs: { i: number }[]) => xs.map(({ i }) => `#${i}`).join(', ')

  if (deleted.length > 0) {
    return live.map(({ c, i }) => ({
      copy: i,
      problem: 'deleted',
      action: settled ? 'delete' : 'none',
      cookie: c.cookie,
      why: `live here, deleted on ${names(deleted)}: the delete wins${unsettled}`,
    }))
  }
  if (live.length * 2 < n) {
    return live.map(({ c, i }) => ({
      copy: i,
      problem: 'extra',
      action: settled ? 'delete' : 'none',
      cookie: c.cookie,
      why: `on ${live.length} of ${n} copies only: a write that never reached most copies${unsettled}`,
    }))
  }
  const whole = live.filter(({ c }) => c.state === 'live')
  if (whole.length === 0) {
    return live.map(({ c, i }) => ({ copy: i, problem: 'lost', action: 'none', cookie: c.cookie, why: 'damaged on every copy that holds it: nothing to repair it from' }))
  }
  // The whole copies vote on the content; the first of the largest group is the source.
  const groups = new Map<string, number[]>()
  for (const { c, i } of whole) {
    const vote = `${c.cookie}/${c.size}/${c.md5}`
    const group = groups.get(vote)
    if (group) group.push(i)
    else groups.set(vote, [i])
  }
  let best: number[] = []
  for (const group of groups.values()) if (group.length > best.length) best = group
  const from = best[0]!
  const good = copies[from]!
  const findings: Finding[] = []
  for (let i = 0; i < n; i++) {
    if (best.includes(i)) continue
    const c = copies[i]
    if (c === undefined) {
      findings.push({ copy: i, problem: 'missing', action: settled ? 'copy' : 'none', from, cookie: good.cookie, why: `absent here, live on ${live.length} of ${n} copies${unsettled}` })
    } else if (c.state === 'damaged') {
      findings.push({ copy: i, problem: 'damaged', action: 'copy', from, cookie: good.cookie, why: c.error ?? 'fails its checksum' })
    } else {
      findings.push({
        copy: i,
        problem: 'mismatch',
        action: settled ? 'copy' : 'none',
        from,
        cookie: good.cookie,
        why: `other content here (cookie ${c.cookie}, ${c.size} bytes, MD5 ${c.md5}) than on ${best.length} of ${n} copies${unsettled}`,
      })
    }
  }
  return findings
}
