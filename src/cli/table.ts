/**
 * Aligned plain-text tables for terminals and for `grep`/`awk`: one header line, one line per
 * row, columns separated by two spaces, numbers right-aligned, no trailing spaces. Cells are
 * made single-line so a row is always one line.
 */

export interface Column {
  readonly header: string
  /** 'right' for numbers, so that their digits line up; 'left' by default. */
  readonly align?: 'left' | 'right'
}

const GAP = '  '

/** A cell as it is printed: control characters (newlines, tabs) become spaces. */
export function cellText(value: string | number | boolean | undefined | null): string {
  if (value === undefined || value === null) return ''
  return String(value).replace(/[\u0000-\u001f\u007f]/g, ' ')
}

/** The number of terminal columns text takes (code points; no wide-character tables here). */
function width(text: string): number {
  let n = 0
  for (const _ of text) n++
  return n
}

function pad(text: string, to: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, to - width(text)))
  return align === 'right' ? fill + text : text + fill
}

/**
 * The table as lines joined with '\n' (with a final '\n'). A row shorter than the columns gets
 * empty cells; a longer one is a programmer mistake.
 */
export function formatTable(columns: readonly Column[], rows: ReadonlyArray<ReadonlyArray<string | number | boolean | undefined | null>>): string {
  if (columns.length === 0) throw new TypeError('formatTable needs at least one column')
  const cells = rows.map((row) => {
    if (row.length > columns.length) throw new TypeError(`a row has ${row.length} cells for ${columns.length} columns`)
    return columns.map((_, i) => cellText(row[i]))
  })
  const widths = columns.map((c, i) => Math.max(width(c.header), ...cells.map((r) => width(r[i]!))))
  const line = (texts: readonly string[]) =>
    texts
      .map((text, i) => pad(text, widths[i]!, columns[i]!.align ?? 'left'))
      .join(GAP)
      .trimEnd()
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n'
}
