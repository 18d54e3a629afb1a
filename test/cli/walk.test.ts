import { spawnSync } from 'node:child_process'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { UsageError } from '../../src/cli/exit-codes.js'
import { collectFiles } from '../../src/cli/walk.js'
import { tempDir, type Teardown } from '../helpers/volume.js'

/** A small tree whose files were created out of name order. */
async function tree(t: Teardown): Promise<string> {
  const dir = await tempDir(t, 'ns-walk-')
  await mkdir(join(dir, 'd', 'b-sub', 'deeper'), { recursive: true })
  await mkdir(join(dir, 'd', 'empty'))
  await writeFile(join(dir, 'd', 'c.txt'), 'ccc')
  await writeFile(join(dir, 'd', 'a.txt'), 'a')
  await writeFile(join(dir, 'd', 'B.txt'), 'BB')
  await writeFile(join(dir, 'd', 'b-sub', 'x.bin'), Buffer.alloc(10))
  await writeFile(join(dir, 'd', 'b-sub', 'deeper', 'y'), '')
  await writeFile(join(dir, 'top.jpg'), 'jpg!')
  return dir
}

t.test('directories are walked depth-first in name order, arguments in the order given', async (t) => {
  const dir = await tree(t)
  const result = await collectFiles([join(dir, 'top.jpg'), join(dir, 'd')])
  t.same(
    result.files.map((f) => [f.path.slice(dir.length + 1), f.size]),
    [
      ['top.jpg', 4],
      ['d/B.txt', 2],
      ['d/a.txt', 1],
      ['d/b-sub/deeper/y', 0],
      ['d/b-sub/x.bin', 10],
      ['d/c.txt', 3],
    ],
  )
  t.equal(result.bytes, 20)
  t.same(result.skipped, [])
  const again = await collectFiles([join(dir, 'top.jpg'), join(dir, 'd')])
  t.same(again, result, 'the same tree gives the same list')
})

t.test('paths keep the form the user gave', async (t) => {
  const dir = await tree(t)
  const cwd = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(cwd))
  const rel = await collectFiles(['./d/b-sub/', './top.jpg'])
  t.same(rel.files.map((f) => f.path), ['d/b-sub/deeper/y', 'd/b-sub/x.bin', './top.jpg'])
})

t.test('a file named twice, or inside a named directory, is uploaded once', async (t) => {
  const dir = await tree(t)
  const result = await collectFiles([join(dir, 'd', 'a.txt'), join(dir, 'd'), join(dir, 'd', 'a.txt')])
  t.same(result.files.map((f) => f.path.slice(dir.length + 1)), ['d/a.txt', 'd/B.txt', 'd/b-sub/deeper/y', 'd/b-sub/x.bin', 'd/c.txt'])
})

t.test('links, FIFOs and sockets inside a directory are skipped; a named link is followed', async (t) => {
  const dir = await tree(t)
  await symlink(join(dir, 'd'), join(dir, 'd', 'b-sub', 'loop'))
  await symlink(join(dir, 'top.jpg'), join(dir, 'd', 'link.jpg'))
  const fifo = spawnSync('mkfifo', [join(dir, 'd', 'pipe')])
  const result = await collectFiles([join(dir, 'd'), join(dir, 'd', 'link.jpg')])
  t.same(result.files.map((f) => f.path.slice(dir.length + 1)), ['d/B.txt', 'd/a.txt', 'd/b-sub/deeper/y', 'd/b-sub/x.bin', 'd/c.txt', 'd/link.jpg'])
  const skipped = result.skipped.map((s) => [s.path.slice(dir.length + 1), s.reason])
  t.same(skipped, [['d/b-sub/loop', 'a symbolic link'], ['d/link.jpg', 'a symbolic link'], ...(fifo.status === 0 ? [['d/pipe', 'a FIFO']] : [])])
  if (fifo.status === 0) {
    const named = await collectFiles([join(dir, 'd', 'pipe')])
    t.same(named.skipped.map((s) => s.reason), ['a FIFO'], 'a named FIFO is skipped too')
  }
})

t.test('a missing path is a usage error naming it; nothing is listed', async (t) => {
  const dir = await tree(t)
  const missing = join(dir, 'nope')
  await t.rejects(collectFiles([join(dir, 'd'), missing]), new UsageError(`no such file or directory: ${missing}`))
  await t.rejects(collectFiles([join(dir, 'top.jpg', 'below')]), UsageError, 'a path below a file')
  await t.rejects(collectFiles(['']), UsageError)
  await symlink(join(dir, 'gone'), join(dir, 'dangling'))
  await t.rejects(collectFiles([join(dir, 'dangling')]), UsageError, 'a named link to nothing')
})

t.test('filesMax bounds the list', async (t) => {
  const dir = await tree(t)
  t.equal((await collectFiles([join(dir, 'd')], { filesMax: 5 })).files.length, 5)
  await t.rejects(collectFiles([join(dir, 'd')], { filesMax: 4 }), { name: 'UsageError', message: /more than 4 files/ })
})
