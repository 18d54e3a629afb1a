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
