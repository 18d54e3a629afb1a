/**
 * Helpers shared by the data server and format tests: a fixed clock, volume settings sized for
 * tests, temporary directories, deterministic bytes and the error code a promise ends in.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isNeedleError } from '../../src/common/errors.js'
import type { CreateVolumeOptions, VolumeSettings } from '../../src/dataserver/volume.js'

/** The time (milliseconds since the epoch) the test volumes' clock always answers. */
export const CLOCK_MS = 1_700_000_000_000

/** What tempDir needs of a test: a tap `Test`, or anything else with `teardown`. */
export interface Teardown {
  teardown(fn: () => unknown): void
}

/** A new directory under the OS temp dir, removed with everything in it when the test ends. */
export async function tempDir(t: Teardown, prefix = 'ns-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Volume settings for tests (what a Store gets as `volume`): small limits, the fixed clock. */
export const volumeDefaults: VolumeSettings = {
  volumeBytesMax: 64 * 1024 * 1024,
  fsync: 'group',
  fsyncIntervalMs: 50,
  writeQueueMax: 1024,
  writeBatchBytesMax: 1 << 20,
  writeBatchMax: 1024,
  // Small needles are read synchronously, larger ones through the pool: tests cover both.
  syncReadBytesMax: 4096,
  now: () => CLOCK_MS,
}

/** Options for Volume.create / Volume.open: volume 1, placement 0, volumeDefaults; `over` wins. */
export function volumeOptions(dir: string, over: Partial<CreateVolumeOptions> = {}): CreateVolumeOptions {
  return { dir, volumeId: 1, placement: 0, ...volumeDefaults, ...over }
}

/** Deterministic pseudo-random bytes (xorshift32): the same size and seed give the same bytes. */
export function bytesFrom(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size)
  let x = (seed * 2654435761) | 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** The code of the NeedleError `p` rejects with; 'resolved' if it fulfils. */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    return isNeedleError(err) ? err.code : `non-NeedleError: ${String(err)}`
  }
  return 'resolved'
}

/** The code of the NeedleError fn throws, 'returned' if it throws nothing. */
export function codeOfCall(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    return isNeedleError(err) ? err.code : `non-NeedleError: ${String(err)}`
  }
  return 'returned'
}
