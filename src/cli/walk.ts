/**
 * The files an upload names: each argument is a file or a directory walked recursively. The
 * order is stable (arguments in the order given, each directory's entries sorted by name, a
 * subdirectory's files at its place), so two runs over the same tree upload and print the same
 * sequence.
 *
 * Only regular files are uploaded. Inside a directory, everything else is skipped: symbolic
 * links (so a link cycle cannot make the walk endless), sockets, FIFOs, devices. An argument
 * itself is followed if it is a link, since the user named it.
 */
import { readdir, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { UsageError } from './exit-codes.js'

export interface FoundFile {
  /** The path as the user would write it: the argument, joined with the names below it. */
  readonly path: string
  readonly size: number
}

export interface SkippedPath {
  readonly path: string
  readonly reason: string
}

export interface WalkResult {
  readonly files: FoundFile[]
  readonly skipped: SkippedPath[]
  /** The sum of the files' sizes. */
  readonly bytes: number
}

export interface WalkOptions {
  /** More files than this is refused before anything is uploaded (default 1 000 000). */
  readonly filesMax?: number
}

export const WALK_FILES_MAX = 1_000_000

/** Sorts by UTF-16 code units, the same on every machine and locale. */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** What kind of thing a non-regular file is, for the skipped list. */
function kindOf(entry: { isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean }): string {
  if (entry.isSymbolicLink()) return 'a symbolic link'
  if (entry.isFIFO()) return 'a FIFO'
  if (entry.isSocket()) return 'a socket'
  if (entry.isBlockDevice() || entry.isCharacterDevice()) return 'a device'
  return 'not a regular file'
}

/**
 * The regular files under paths, in a stable order, each once. A path that does not exist is
 * a UsageError; a directory that cannot be read fails with the system's error.
 */
export async function collectFiles(paths: readonly string[], opts: WalkOptions = {}): Promise<WalkResult> {
  const filesMax = opts.filesMax ?? WALK_FILES_MAX
  const files: FoundFile[] = []
  const skipped: SkippedPath[] = []
  const seen = new Set<string>()
  let bytes = 0

  const addFile = (path: string, size: number) => {
    const key = resolve(path)
    if (seen.has(key)) return
    seen.add(key)
    if (files.length >= filesMax) throw new UsageError(`more than ${filesMax} files to upload; upload them in parts`)
    files.push({ path, size })
    bytes += size
  }

  const walkDir = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true })
    entries.sort((a, b) => byName(a.name, b.name))
    for (const entry of entries) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) await walkDir(path)
      else if (entry.isFile()) addFile(path, (await stat(path)).size)
      else skipped.push({ path, reason: kindOf(entry) })
    }
  }

  for (const path of paths) {
    if (path === '') throw new UsageError('an empty path was given')
    let info
    try {
      info = await stat(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new UsageError(`no such file or directory: ${path}`)
      throw err
    }
    if (info.isDirectory()) await walkDir(path)
    else if (info.isFile()) addFile(path, info.size)
    else skipped.push({ path, reason: kindOf(info) })
  }
  return { files, skipped, bytes }
}
