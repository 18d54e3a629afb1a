import t from 'tap'
import { formatBytes, formatProgress, formatRate, ProgressBar, type ProgressState } from '../../src/cli/progress.js'

t.test('formatBytes: bytes below 1 KiB, then one decimal in binary units', async (t) => {
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(1023), '1023 B')
  t.equal(formatBytes(1024), '1.0 KiB')
  t.equal(formatBytes(1536), '1.5 KiB')
  t.equal(formatBytes(12 * 1024 ** 2), '12.0 MiB')
  t.equal(formatBytes(3 * 1024 ** 3), '3.0 GiB')
  t.equal(formatBytes(2 * 1024 ** 6), '2048.0 PiB', 'the largest unit keeps growing')
  t.throws(() => formatBytes(-1), TypeError)
  t.throws(() => formatBytes(Number.NaN), TypeError)
})

t.test('formatRate: bytes per second, a dash before any time has passed', async (t) => {
  t.equal(formatRate(1024 * 1024, 1000), '1.0 MiB/s')
  t.equal(formatRate(1024, 500), '2.0 KiB/s')
  t.equal(formatRate(100, 0), '- B/s')
})

const state = (over: Partial<ProgressState> = {}): ProgressState => ({
  filesDone: 512,
  filesTotal: 1000,
  bytesDone: 2 * 1024 * 1024,
  bytesTotal: 4 * 1024 * 1024,
  failed: 0,
  elapsedMs: 2000,
  ...over,
})

t.test('formatProgress: bar, files, bytes, rate, failures', async (t) => {
  t.equal(formatProgress(state(), 100), `[${'#'.repeat(15)}${'-'.repeat(15)}]  512/1000 files  2.0 MiB/4.0 MiB  1.0 MiB/s`)
  t.match(formatProgress(state({ failed: 2 }), 100), /  2 failed$/)
  t.match(formatProgress(state({ filesDone: 1000 }), 100), /^\[#{30}\]/, 'full at the end')
  t.match(formatProgress(state({ filesDone: 0, filesTotal: 0 }), 100), /^\[#{30}\]/, 'nothing to do is done')
})

t.test('formatProgress never reaches the last column; the bar goes first when room is short', async (t) => {
  for (const columns of [200, 80, 60, 50, 40, 20, 5, 1]) {
    const line = formatProgress(state({ failed: 3 }), columns)
    t.ok(line.length <= columns - 1 || (columns <= 1 && line.length === 0), `${columns} columns: ${line.length} chars`)
  }
  t.notMatch(formatProgress(state(), 40), /\[/, 'no bar in 40 columns')
})

function fakeStream(isTTY: boolean) {
  const writes: string[] = []
  return { stream: { isTTY, columns: 100, write: (s: string) => writes.push(s) }, writes }
}

t.test('ProgressBar draws nothing when the stream is not a terminal', async (t) => {
  const { stream, writes } = fakeStream(false)
  const bar = new ProgressBar({ stream, filesTotal: 2, bytesTotal: 10 })
  t.equal(bar.enabled, false)
  bar.start()
  bar.fileDone(5)
  let wrote = false
  bar.around(() => (wrote = true))
  t.ok(wrote, 'around still runs the write')
  bar.finish()
  t.same(writes, [])
})

t.test('ProgressBar on a terminal: throttled redraws, results printed around it, a final line', async (t) => {
  const { stream, writes } = fakeStream(true)
  let now = 1000
  const bar = new ProgressBar({ stream, filesTotal: 3, bytesTotal: 30, intervalMs: 100, now: () => now })
  t.equal(bar.enabled, true)
  bar.start()
  t.equal(writes.length, 1)
  t.match(writes[0], /^\r\x1b\[2K\[-+\]  0\/3 files/)
  now += 10
  bar.fileDone(10)
  t.equal(writes.length, 1, 'no redraw within the interval')
  t.same(bar.state, { filesDone: 1, filesTotal: 3, bytesDone: 10, bytesTotal: 30, failed: 0, elapsedMs: 10 })
  now += 100
  bar.fileDone(0, false)
  t.equal(writes.length, 2, 'a redraw once the interval passed')
  t.match(writes[1], /2\/3 files .* 1 failed$/)

  const order: string[] = []
  now += 10
  bar.fileDone(4)
  t.equal(writes.length, 2, 'throttled')
  bar.around(() => order.push('stdout'))
  t.same(order, ['stdout'])
  t.same(writes.slice(2).map((w) => w.slice(0, 6)), ['\r\x1b[2K', '[#####'], 'cleared, then drawn again')
  t.match(writes[3], /3\/3 files/, 'with the current state, even within the interval')

  writes.length = 0
  bar.finish()
  t.equal(writes.length, 2)
  t.match(writes[0], /3\/3 files/, 'the final state is drawn even within the interval')
  t.equal(writes[1], '\n')
  bar.finish()
  bar.fileDone(1)
  bar.around(() => order.push('after'))
  t.equal(writes.length, 2, 'nothing drawn after finish')
  t.same(order, ['stdout', 'after'], 'but writes still run')
})

t.test('a terminal that reports 0 columns gets 80', async (t) => {
  const writes: string[] = []
  const bar = new ProgressBar({ stream: { isTTY: true, columns: 0, write: (s: string) => writes.push(s) }, filesTotal: 1, bytesTotal: 1 })
  bar.start()
  t.match(writes[0], /\[-+\]  0\/1 files/)
})

t.test('ProgressBar can be forced off on a terminal (--json)', async (t) => {
  const { stream, writes } = fakeStream(true)
  const bar = new ProgressBar({ stream, filesTotal: 1, bytesTotal: 1, enabled: false })
  bar.start()
  bar.fileDone(1)
  bar.finish()
  t.same(writes, [])
})
