/**
 * `needlestore download <fid> [-o file]`: streams one file to stdout, or to a file. A file is
 * written under a temporary name in the same directory, flushed to disk and then renamed over
 * the target, so a failed download never leaves a half-written file under the target name
 * (and never touches an existing file of that name until the new one is whole).
 */
import { randomBytes } from 'node:crypto'
import { open, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import { checkFids, clientFlags, runClientCommand, type ClientArgs } from './client-options.js'
import { EXIT_OK, UsageError } from './exit-codes.js'

export interface DownloadArgs extends ClientArgs {
  fid: string
  output?: string
}

/** The temporary name a download to `target` is written under: hidden, unique, same directory. */
export function partialName(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.part`)
}

/** Checks that `target` can be a file: its directory exists and it is not itself a directory. */
async function checkTarget(target: string): Promise<void> {
  const dir = dirname(target)
  const dirInfo = await stat(dir).catch(() => undefined)
  if (!dirInfo?.isDirectory()) throw new UsageError(`-o ${target}: no such directory: ${dir}`)
  const info = await stat(target).catch(() => undefined)
  if (info?.isDirectory()) throw new UsageError(`-o ${target}: is a directory; name the file to write`)
}

/** Writes source to target through a temporary file; returns the bytes written. */
export async function writeAtomically(source: NodeJS.ReadableStream, target: string): Promise<number> {
  const partial = partialName(target)
  const file = await open(partial, 'wx')
  try {
    let size = 0
    for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
      for (let done = 0; done < bytes.length; ) done += (await file.write(bytes, done, bytes.length - done)).bytesWritten
      size += bytes.length
    }
    await file.sync()
    await file.close()
    await rename(partial, target)
    return size
  } catch (err) {
    await file.close().catch(() => {})
    await unlink(partial).catch(() => {})
    throw err
  }
}

export const downloadCommand: CommandModule<object, DownloadArgs> = {
  command: 'download <fid>',
  describe: 'fetch a file to stdout, or to a file with -o',
  builder: (y) =>
    clientFlags(y)
      .positional('fid', { type: 'string', describe: 'the file id, e.g. 3,01637037d6' })
      .option('output', { alias: 'o', type: 'string', describe: 'write to this file (atomically) instead of stdout; - is stdout' })
      .example('$0 download 3,01637037d6 -o photo.jpg', 'fetch into photo.jpg') as unknown as Argv<DownloadArgs>,
  handler: (args: ArgumentsCamelCase<DownloadArgs>) =>
    runClientCommand(args, async ({ client, out }) => {
      const [fid] = checkFids([args.fid])
      const target = args.output === undefined || args.output === '-' ? undefined : args.output
      if (target === '') throw new UsageError('-o needs a file name')
      if (target === undefined && args.json) throw new UsageError('--json needs -o: without it stdout carries the file')
      if (target !== undefined) await checkTarget(target)
      const source = await client.downloadStream(fid!)
      if (target === undefined) {
        await pipeline(source, out.stdout, { end: false })
        return EXIT_OK
      }
      const size = await writeAtomically(source, target)
      if (args.json) out.json({ fid, path: target, size })
      return EXIT_OK
    }),
}
