import { readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t from 'tap'
import { partialName, writeAtomically } from '../../src/cli/download.js'
import { tempDir } from '../helpers/volume.js'

t.test('a download is written whole under a temporary name, then renamed', async (t) => {
  const dir = await tempDir(t, 'ns-dl-')
  const target = join(dir, 'photo.jpg')
  const size = await writeAtomically(Readable.from([Buffer.from('hello, '), Buffer.from('world')]), target)
  t.equal(size, 12)
  t.equal(await readFile(target, 'utf8'), 'hello, world')
  t.same(await readdir(dir), ['photo.jpg'], 'no temporary file left')
  t.match(partialName(target), new RegExp(`^${dir}/\\.photo\\.jpg\\.[0-9a-f]{12}\\.part$`))
})

t.test('a download that fails midway leaves no file, and an existing one untouched', async (t) => {
  const dir = await tempDir(t, 'ns-dl-')
  const target = join(dir, 'photo.jpg')
  await writeFile(target, 'the old bytes')
  async function* failing() {
    yield Buffer.from('half of it')
    throw Object.assign(new Error('the data server went away'), { code: 'ECONNRESET' })
  }
  await t.rejects(writeAtomically(Readable.from(failing()), target), /went away/)
  t.equal(await readFile(target, 'utf8'), 'the old bytes')
  t.same(await readdir(dir), ['photo.jpg'], 'the temporary file is removed')

  await t.rejects(writeAtomically(Readable.from(failing()), join(dir, 'new.bin')), /went away/)
  t.same(await readdir(dir), ['photo.jpg'], 'no half file under the new name')
})
