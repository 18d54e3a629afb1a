/**
 * A full disk, for real: a volume on a 1 MiB tmpfs is written until the filesystem refuses.
 * Every write either lands whole or fails with NS_ERR_DISK_FULL and leaves nothing behind, and
 * after a restart exactly the acknowledged files are there. Needs root (mount); skipped, with
 * the reason, where mounting is not allowed.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SUPERBLOCK_SIZE } from '../../src/common/format.js'
import { Volume, datPath } from '../../src/dataserver/volume.js'
import { bytesFrom, codeOf, volumeOptions } from '../helpers/volume.js'

async function smallDisk(): Promise<{ dir: string; release: () => Promise<void> } | string> {
  const dir = await mkdtemp(join(tmpdir(), 'ns-full-'))
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { encoding: 'utf8' })
  if (mount.status !== 0) {
    await rm(dir, { recursive: true, force: true })
    return `cannot mount a tmpfs here: ${(mount.stderr || mount.error?.message || '').trim()}`
  }
  return {
    dir,
    release: async () => {
      spawnSync('umount', [dir])
      await rm(dir, { recursive: true, force: true })
    },
  }
}

const disk = await smallDisk()
const skip = typeof disk === 'string' ? disk : false

t.test('writes on a full disk fail cleanly and lose nothing acknowledged', { skip }, async (t) => {
  if (typeof disk === 'string') return
  t.teardown(disk.release)
  const options = volumeOptions(disk.dir, { volumeBytesMax: 64 * 1024 * 1024 })
  const v = await Volume.create(options)
  const acked = new Map<number, Buffer>()
  const failures = new Map<string, number>()
  // Sizes vary so that the disk fills in the middle of a needle, not on a boundary.
  for (let key = 1; key <= 400; key++) {
    const data = bytesFrom(3000 + ((key * 7919) % 9000), key)
    const before = v.datBytes
    const code = await codeOf(v.write({ cookie: key, keyHi: 0, keyLo: key, data }))
    if (code === 'resolved') {
      acked.set(key, data)
      continue
    }
    failures.set(code, (failures.get(code) ?? 0) + 1)
    if (v.datBytes !== before) t.fail(`a failed write of key ${key} changed .dat from ${before} to ${v.datBytes} bytes`)
    if ((await stat(datPath(disk.dir, 1))).size !== before) t.fail(`a failed write of key ${key} left bytes in .dat`)
  }
  t.ok(acked.size > 20, `some writes landed (${acked.size})`)
  t.same([...failures.keys()], ['NS_ERR_DISK_FULL'], 'every refused write says the disk is full')
  for (const [key, data] of acked) {
    const needle = await v.read(0, key, key)
    if (Buffer.compare(needle.data, data) !== 0) t.fail(`key ${key} reads other bytes`)
  }
  // Deletes need room for a tombstone too: they either land or fail cleanly.
  const deleteCode = await codeOf(v.delete(0, 1, 1))
  t.ok(['resolved', 'NS_ERR_DISK_FULL'].includes(deleteCode), `a delete on a full disk: ${deleteCode}`)
  if (deleteCode === 'resolved') acked.delete(1)
  await v.close()

  const again = await Volume.open(options)
  t.teardown(() => again.close())
  t.equal(again.liveCount, acked.size, 'after a restart: exactly the acknowledged files')
  let wrong = 0
  for (const [key, data] of acked) {
    const needle = await again.read(0, key, key)
    if (Buffer.compare(needle.data, data) !== 0) wrong++
  }
  t.equal(wrong, 0, 'every acknowledged file reads back byte-identical')
  t.ok(again.datBytes > SUPERBLOCK_SIZE)
})

t.test('compaction on a full disk: refused up front, or rolled back when the disk fills during the copy', { skip }, async (t) => {
  const disk = await smallDisk()
  if (typeof disk === 'string') return
  const dir = join(disk.dir, 'compact')
  spawnSync('mkdir', ['-p', dir])
  const v = await Volume.create(volumeOptions(dir, { volumeBytesMax: 64 * 1024 * 1024 }))
  // One teardown, in order: the volume's files are closed before the disk is unmounted.
  t.teardown(async () => {
    await v.close()
    await disk.release()
  })
  const files = new Map<number, Buffer>()
  for (let key = 1; key <= 40; key++) {
    const data = bytesFrom(10_000, key)
    await v.write({ cookie: 1, keyHi: 0, keyLo: key, data })
    files.set(key, data)
  }
  // Deleted files inside the undelete grace are copied too: more than the live bytes.
  for (let key = 1; key <= 24; key++) {
    await v.delete(0, key, 1)
    files.delete(key)
  }
  const before = v.datBytes
  t.equal(await codeOf(v.compact({ graceMs: 24 * 3600_000 })), 'NS_ERR_DISK_FULL', 'without room for the live bytes and the slack, refused before writing')
  // Fill the disk until the live bytes fit but what the compaction must copy does not.
  const filler = join(disk.dir, 'filler')
  const free = async () => {
    const { statfs } = await import('node:fs/promises')
    const s = await statfs(disk.dir)
    return s.bavail * s.bsize
  }
  const { open } = await import('node:fs/promises')
  const fh = await open(filler, 'w')
  const room = (await free()) - v.status().liveBytes - 4096 * 4
  if (room > 0) await fh.write(Buffer.alloc(room), 0, room, 0).catch(() => {})
  await fh.close()
  t.ok((await free()) >= v.status().liveBytes, 'the live bytes would fit')
  t.equal(await codeOf(v.compact({ graceMs: 24 * 3600_000, roomSlackBytes: 0 })), 'NS_ERR_DISK_FULL', 'the disk filled during the copy')
  t.equal(v.datBytes, before, 'the volume is as it was')
  t.same((await import('node:fs/promises').then((m) => m.readdir(dir))).sort(), ['1.dat', '1.idx'], 'and the half-made files are gone')
  for (const [key, data] of files) t.ok((await v.read(0, key, 1)).data.equals(data), `file ${key} reads`)
  await rm(filler, { force: true })
  await v.write({ cookie: 1, keyHi: 0, keyLo: 99, data: bytesFrom(100, 99) })
  t.pass('writes go on after the failed compaction')
})
