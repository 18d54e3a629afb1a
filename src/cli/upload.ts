/**
 * `needlestore upload <paths...>`: files and directories (walked recursively, in a stable
 * order) stored in parallel through the SDK's uploadMany. One result line per file on stdout,
 * in the order of the walk, as soon as it and every file before it are done; failures on
 * stderr. Every file is tried: one that fails does not stop the others, and makes the exit
 * code 1 at the end.
 */
import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs'
import type { NeedleClientError, UploadOptions, UploadResult } from '../client/index.js'
import { COLLECTION_BYTES_MAX, isCollectionName } from '../common/format.js'
import { mimeFromName } from '../common/mime.js'
import { parsePlacement } from '../common/placement.js'
import { clientFlags, positiveInteger, runClientCommand, type ClientArgs } from './client-options.js'
import { EXIT_OK, UsageError, batchExitCode } from './exit-codes.js'
import { ProgressBar } from './progress.js'
import { collectFiles, type FoundFile } from './walk.js'

export interface UploadArgs extends ClientArgs {
  paths: string[]
  concurrency: number
  replication?: string
  collection?: string
  dedup: boolean
}

export const UPLOAD_CONCURRENCY_DEFAULT = 8
export const UPLOAD_CONCURRENCY_MAX = 256

/** One line of `upload --json`. */
export type UploadLine =
  | { path: string; fid: string; url: string; size: number; eTag: string; deduplicated: boolean }
  | { path: string; error: string; code: string }

/** The JSON entry of one file's result. */
export function uploadLine(path: string, result: UploadResult | NeedleClientError): UploadLine {
  if (result instanceof Error) return { path, error: result.message, code: result.code }
  return { path, fid: result.fid, url: result.url, size: result.size, eTag: result.eTag, deduplicated: result.deduplicated }
}

/** The text line of a stored file: `<fid>\t<path>`, and `\t(dedup)` when it shares a stored copy. */
export function uploadText(path: string, result: UploadResult): string {
  return `${result.fid}\t${path}${result.deduplicated ? '\t(dedup)' : ''}`
}

/** The per-upload options every file shares, checked once: a bad value is exit 2 before any upload. */
export function uploadOptions(args: Pick<UploadArgs, 'replication' | 'collection' | 'dedup'>): UploadOptions {
  const replication = args.replication === '' ? undefined : args.replication
  const collection = args.collection === '' ? undefined : args.collection
  if (replication !== undefined) parsePlacement(replication)
  if (collection !== undefined && !isCollectionName(collection)) {
    throw new UsageError(`--collection must be at most ${COLLECTION_BYTES_MAX} letters, digits, "_", "." or "-" (got ${JSON.stringify(collection)})`)
  }
  return { dedup: args.dedup, ...(replication === undefined ? {} : { replication }), ...(collection === undefined ? {} : { collection }) }
}

/**
 * A file's bytes, opened only when the SDK starts on it (so at most `concurrency` files are
 * open at once) and streamed, so that the SDK's size limit stops a huge file early instead of
 * after it was read whole. Each iteration reads the file again from the start.
 */
function fileBody(path: string): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      yield* createReadStream(path) as AsyncIterable<Buffer>
    },
  }
}

/** The upload items, made one by one as the SDK asks for them. */
function* uploadItems(files: readonly FoundFile[], shared: UploadOptions) {
  for (const file of files) {
    const fileName = basename(file.path)
    const contentType = mimeFromName(fileName)
    yield { data: fileBody(file.path), fileName, ...(contentType === undefined ? {} : { contentType }), ...shared }
  }
}

export const uploadCommand: CommandModule<object, UploadArgs> = {
  command: 'upload <paths...>',
  describe: 'store files, and directories recursively; prints "<fid>\\t<path>" per file',
  builder: (y) =>
    clientFlags(y)
      .positional('paths', { type: 'string', array: true, describe: 'files and directories to store' })
      .option('concurrency', { type: 'number', default: UPLOAD_CONCURRENCY_DEFAULT, describe: `files uploaded at once (1 to ${UPLOAD_CONCURRENCY_MAX})` })
      .option('replication', { type: 'string', describe: 'replica placement "xyz", e.g. 002 (default: the master\'s)' })
      .option('collection', { type: 'string', describe: 'collection to store into' })
      .option('dedup', { type: 'boolean', default: true, describe: 'share the stored copy of identical bytes (--no-dedup: always store)' })
      .example('$0 upload photos/', 'store every regular file under photos/')
      .example('$0 upload --json a.jpg b.png > fids.json', 'store two files, results as JSON') as unknown as Argv<UploadArgs>,
  handler: (args: ArgumentsCamelCase<UploadArgs>) =>
    runClientCommand(args, async ({ client, out, explain }) => {
      const concurrency = positiveInteger('--concurrency', args.concurrency, UPLOAD_CONCURRENCY_MAX)
      const shared = uploadOptions(args)
      const { files, skipped, bytes } = await collectFiles(args.paths.map(String))
      for (const s of skipped) out.note(`skipped ${s.path}: ${s.reason}`)
      if (files.length === 0) {
        if (args.json) out.json([])
        else out.note('no regular files to upload')
        return EXIT_OK
      }

      const bar = new ProgressBar({ stream: out.stderr, filesTotal: files.length, bytesTotal: bytes, enabled: out.stderr.isTTY === true && !args.json })
      const results: (UploadResult | NeedleClientError | undefined)[] = new Array(files.length)
      // A result line needs the bar taken off the screen only when stdout is that screen too.
      const printResult = out.stdout.isTTY ? (write: () => void) => bar.around(write) : (write: () => void) => write()
      let printed = 0
      let failed = 0
      // Results arrive in completion order; lines leave in walk order, each as soon as every
      // file before it is done.
      const printReady = () => {
        for (; printed < files.length && results[printed] !== undefined; printed++) {
          const path = files[printed]!.path
          const result = results[printed]!
          if (result instanceof Error) bar.around(() => out.note(`${path}: ${explain(result)}`))
          else if (!args.json) printResult(() => out.line(uploadText(path, result)))
        }
      }
      bar.start()
      const settled = await client.uploadMany(uploadItems(files, shared), {
        concurrency,
        onResult: (index, result) => {
          if (results[index] !== undefined) return
          results[index] = result
          if (result instanceof Error) failed++
          bar.fileDone(result instanceof Error ? 0 : result.size, !(result instanceof Error))
          printReady()
        },
      })
      // uploadMany's answer is the record; onResult only made the output early.
      settled.forEach((result, index) => {
        if (results[index] === undefined) {
          results[index] = result
          if (result instanceof Error) failed++
        }
      })
      printReady()
      bar.finish()
      if (args.json) out.json(settled.map((result, i) => uploadLine(files[i]!.path, result)))
      if (failed > 0) out.note(`${failed} of ${files.length} files failed`)
      return batchExitCode(failed)
    }),
}
