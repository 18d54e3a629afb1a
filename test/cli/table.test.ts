import t from 'tap'
import { cellText, formatTable } from '../../src/cli/table.js'

t.test('columns line up, numbers to the right, no trailing spaces', async (t) => {
  const text = formatTable(
    [{ header: 'ID', align: 'right' }, { header: 'URL' }, { header: 'FILES', align: 'right' }, { header: 'WRITABLE' }],
    [
      [1, '127.0.0.1:8080', 12, 'yes'],
      [10, 'b:1', 3456, ''],
    ],
  )
  t.equal(
    text,
    ['ID  URL             FILES  WRITABLE', ' 1  127.0.0.1:8080     12  yes', '10  b:1              3456'].join('\n') + '\n',
  )
  for (const line of text.split('\n')) t.equal(line, line.trimEnd(), 'no trailing spaces')
})

t.test('a table with no rows is its header', async (t) => {
  t.equal(formatTable([{ header: 'A' }, { header: 'B' }], []), 'A  B\n')
})

t.test('short rows get empty cells; long rows and no columns are programmer mistakes', async (t) => {
  t.equal(formatTable([{ header: 'A' }, { header: 'B' }], [['x']]), 'A  B\nx\n')
  t.throws(() => formatTable([{ header: 'A' }], [['x', 'y']]), TypeError)
  t.throws(() => formatTable([], []), TypeError)
})

t.test('cells are one line: control characters become spaces; nothing prints as empty', async (t) => {
  t.equal(cellText('a\nb\tc\u001b[31m'), 'a b c [31m')
  t.equal(cellText(undefined), '')
  t.equal(cellText(null), '')
  t.equal(cellText(false), 'false')
  t.equal(cellText(0), '0')
  const text = formatTable([{ header: 'NAME' }, { header: 'N', align: 'right' }], [['two\nlines', 1]])
  t.equal(text.split('\n').length, 3, 'header, one row, final newline')
})

t.test('width counts code points, so non-ASCII names still align', async (t) => {
  const text = formatTable([{ header: 'NAME' }, { header: 'X' }], [['héllo', 1], ['日本', 2]])
  t.equal(text, 'NAME   X\nhéllo  1\n日本     2\n')
})
