/**
 * The `needlestore` client commands as a script uses them: each run is a child process of the
 * compiled CLI (`node dist/src/cli/main.js …`) against a real local cluster of a master and
 * three data servers. One cluster serves every step, in order: upload a tree of 1 000 small
 * files (some identical), download some, delete them all, undelete one, status; then the exit
 * codes and one-line messages of usage mistakes and of an unreachable master.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startCluster } from '../helpers/cluster.js'
import { CLI_PATH, repoRoot } from '../helpers/dataserver-process.js'
import { seededRandom } from '../helpers/random.js'
import { tempDir } from '../helpers/volume.js'

t.setTimeout(120_000)

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The environment without NEEDLESTORE_* variables, so the flags given are the only ones. */
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NEEDLESTORE_')))

/** A CLI run, stdout kept as bytes; killed (and failing the test) if it takes longer than timeoutMs. */
function cliBytes(args: readonly string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: repoRoot(), env: cleanEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    const stdout: Buffer[] = []
    const stderr: Buffer[] = []
    child.stdout!.on('data', (d: Buffer) => stdout.push(d))
    child.stderr!.on('data', (d: Buffer) => stderr.push(d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`needlestore ${args.join(' ').slice(0, 200)} did not finish within ${timeoutMs} ms`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8') })
    })
  })
}

/** A CLI run with its stdout as text. */
async function cli(args: readonly string[], timeoutMs?: number): Promise<Run> {
  const run = await cliBytes(args, timeoutMs)
  return { ...run, stdout: run.stdout.toString('utf8') }
}

function md5(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}

/** A user mistake or failure: exactly one line `needlestore: …` on stderr, no stack trace. */
function oneClearLine(t: Test, run: Run, what: string): void {
  const lines = run.stderr.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 1, `${what}: one line on stderr (${JSON.stringify(run.stderr.slice(0, 400))})`)
  t.match(lines[0], /^needlestore: \S/, `${what}: it starts with "needlestore: "`)
  t.notMatch(run.stderr, /\n\s+at |Error:|node:internal/, `${what}: no stack trace`)
}

type UploadEntry = { path: string; fid: string; url: string; size: number; eTag: string; deduplicated: boolean } | { path: string; error: string; code: string }

const FILES = 1000
const DIRS = 10

t.test('upload a tree, download, delete, undelete, status; exit codes', async (t) => {
  const t0 = Date.now()
  const work = await tempDir(t, 'ns-cli-')
  const cluster = await startCluster(t, { dataServers: 3 })
  let last = t0
  /** Notes how long the step that just ended took: the run is slow on a busy machine. */
  const lap = (what: string) => {
    const now = Date.now()
    t.comment(`${what}: ${now - last} ms`)
    last = now
  }
  lap('cluster up')
  const master = ['--master', cluster.masterUrl]

  // 1 000 files of 1–8 KiB in ten directories; every 25th is a copy of one shared file.
  const random = seededRandom(4)
  const randomBytes = (n: number) => {
    const bytes = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) bytes[i] = Math.floor(random() * 256)
    return bytes
  }
  const shared = randomBytes(3000)
  const tree = join(work, 'tree')
  const contents = new Map<string, Buffer>()
  for (let d = 0; d < DIRS; d++) await mkdir(join(tree, `d${d}`), { recursive: true })
  await Promise.all(
    Array.from({ length: FILES }, async (_, i) => {
      const size = 1024 + Math.floor(random() * 7 * 1024)
      const bytes = i % 25 === 0 ? shared : randomBytes(size)
      const path = join(tree, `d${i % DIRS}`, `f${String(i).padStart(4, '0')}.bin`)
      contents.set(path, bytes)
      await writeFile(path, bytes)
    }),
  )

  lap('files written')

  // Upload: exit 0, one entry per file, in the walk's order (directories, then names).
  const up = await cli(['upload', tree, '--json', '--concurrency', '16', ...master], 60_000)
  t.equal(up.code, 0, `upload exits 0 (${up.stderr.slice(0, 400)})`)
  t.equal(up.stderr, '', 'nothing on stderr: no progress bar without a terminal')
  const entries = JSON.parse(up.stdout) as UploadEntry[]
  t.equal(entries.length, FILES, 'a result per file')
  const expectedOrder = [...contents.keys()].sort()
  t.same(entries.map((e) => e.path), expectedOrder, 'in the stable walk order')
  const stored = entries.filter((e): e is Extract<UploadEntry, { fid: string }> => 'fid' in e)
  t.equal(stored.length, FILES, 'every file stored')
  t.equal(new Set(stored.map((e) => e.fid)).size, FILES, 'a fid of its own for every file')
  for (const e of stored) {
    const bytes = contents.get(e.path)!
    if (e.size !== bytes.length || e.eTag !== md5(bytes)) {
      t.fail(`${e.path}: size ${e.size} eTag ${e.eTag}, expected ${bytes.length} ${md5(bytes)}`)
      break
    }
  }
  const copies = stored.filter((e) => contents.get(e.path) === shared)
  t.equal(copies.length, FILES / 25)
  const deduplicated = copies.filter((e) => e.deduplicated)
  t.ok(deduplicated.length >= 1, `the identical files share a stored copy (${deduplicated.length} of ${copies.length} deduplicated)`)
  t.notOk(stored.some((e) => e.deduplicated && contents.get(e.path) !== shared), 'only identical files are deduplicated')

  lap('upload')

  // Download some with -o (one of them a deduplicated file), and one to stdout; and a
  // text-mode upload of two files; all at once.
  const out = join(work, 'out')
  await mkdir(out)
  const picks = [stored[0]!, deduplicated[deduplicated.length - 1] ?? stored[25]!, stored[333]!, stored[999]!]
  const twoFiles = [join(tree, 'd0', 'f0000.bin'), join(tree, 'd1', 'f0001.bin')]
  const [downloads, toStdout, textUp] = await Promise.all([
    Promise.all(picks.map((e, i) => cli(['download', e.fid, '-o', join(out, `file${i}`), ...master]))),
    cliBytes(['download', picks[3]!.fid, ...master]),
    cli(['upload', ...twoFiles, '--no-dedup', ...master]),
  ])
  for (const [i, run] of downloads.entries()) {
    t.equal(run.code, 0, `download ${picks[i]!.fid} exits 0 (${run.stderr})`)
    t.ok((await readFile(join(out, `file${i}`))).equals(contents.get(picks[i]!.path)!), `${picks[i]!.path}: the same bytes`)
  }
  t.same((await readdir(out)).sort(), picks.map((_, i) => `file${i}`), 'no temporary files left')
  t.equal(toStdout.code, 0, 'download to stdout exits 0')
  t.ok(toStdout.stdout.equals(contents.get(picks[3]!.path)!), 'download to stdout: the same bytes')
  // Text output: "<fid>\t<path>" per file, in the order given; with --no-dedup, no shared copies.
  t.equal(textUp.code, 0, textUp.stderr)
  const lines = textUp.stdout.trimEnd().split('\n')
  t.equal(lines.length, 2)
  for (const [i, line] of lines.entries()) {
    const [fid, path, ...rest] = line.split('\t')
    t.match(fid, /^\d+,[0-9a-f]{9,}$/)
    t.equal(path, twoFiles[i])
    t.same(rest, [], '--no-dedup: stored again, not marked (dedup)')
  }

  lap('downloads and text upload')
  // Delete all 1 000 in one command: exit 0, then downloads fail with exit 1.
  const del = await cli(['delete', ...stored.map((e) => e.fid), ...master], 60_000)
  t.equal(del.code, 0, `delete exits 0 (${del.stderr.slice(0, 400)})`)
  t.equal(del.stdout.trimEnd().split('\n').length, FILES, 'a line per fid')
  t.match(del.stdout, new RegExp(`^${stored[0]!.fid}\\tdeleted$`, 'm'))
  lap('delete')
  const gone = await Promise.all([picks[0]!, picks[2]!].map((e) => cli(['download', e.fid, '-o', join(out, 'gone'), ...master])))
  for (const run of gone) {
    t.equal(run.code, 1, 'a deleted file: download exits 1')
    oneClearLine(t, run, 'download of a deleted file')
  }
  t.notOk((await readdir(out)).some((name) => name.includes('gone')), 'a failed download leaves no file')

  lap('downloads of deleted files')
  // Undelete one and download it again.
  const target = picks[2]!
  const undel = await cli(['undelete', target.fid, '--json', ...master])
  t.equal(undel.code, 0, `undelete exits 0 (${undel.stderr})`)
  t.same(JSON.parse(undel.stdout), [{ fid: target.fid, ok: true, size: target.size, undeleted: true }])
  const back = await cli(['download', target.fid, '-o', join(out, 'back'), ...master])
  t.equal(back.code, 0, `the undeleted file downloads (${back.stderr})`)
  t.ok((await readFile(join(out, 'back'))).equals(contents.get(target.path)!), 'with its bytes')

  lap('undelete and download')
  // The rest is independent: run it at once.
  const unreachableMaster = ['--master', 'http://127.0.0.1:1']
  const usage: Array<[string, string[]]> = [
    ['an unknown flag', ['upload', tree, '--bogus-flag', ...master]],
    ['a missing path', ['upload', join(work, 'missing'), ...master]],
    ['a malformed fid to download', ['download', 'not-a-fid', ...master]],
    ['a malformed fid among good ones', ['delete', target.fid, '3,zz', ...master]],
  ]
  const unreachable: Array<[string, string[]]> = [
    ['status', ['status', ...unreachableMaster]],
    ['download', ['download', stored[0]!.fid, ...unreachableMaster]],
    ['upload', ['upload', twoFiles[0]!, ...unreachableMaster]],
  ]
  const [status, table, impossible, notBuilt, usageRuns, unreachableRuns] = await Promise.all([
    cli(['status', '--json', ...master]),
    cli(['status', ...master]),
    // Files that fail: every one is still tried, and the exit code is 1.
    cli(['upload', ...twoFiles, '--replication', '200', '--concurrency', '2', '--json', ...master]),
    cli(['rebalance', '--dry-run', ...master]),
    Promise.all(usage.map(([, args]) => cli(args))),
    Promise.all(unreachable.map(([, args]) => cli(args))),
  ])

  lap('status, failures, usage mistakes, unreachable master')
  // Status: --json parses; the tables list every server and volume.
  t.equal(status.code, 0, status.stderr)
  const parsed = JSON.parse(status.stdout) as { cluster: { Topology: { DataCenters: unknown[] } }; volumes: { Volumes: Array<{ Id: number }> } }
  t.ok(parsed.cluster.Topology.DataCenters.length >= 1, 'the /dir/status answer')
  t.ok(parsed.volumes.Volumes.length >= 1, 'the /vol/status answer')
  t.equal(table.code, 0, table.stderr)
  for (const server of cluster.dataServers) t.match(table.stdout, server.address, `lists ${server.address}`)
  for (const v of parsed.volumes.Volumes) t.match(table.stdout, new RegExp(`^ *${v.Id}  `, 'm'), `lists volume ${v.Id}`)

  t.equal(impossible.code, 1, `an upload whose files fail exits 1 (${impossible.stderr.slice(0, 300)})`)
  const failed = JSON.parse(impossible.stdout) as UploadEntry[]
  t.same(failed.map((e) => e.path), twoFiles, 'a result for every file')
  t.ok(failed.every((e) => 'error' in e && /^NS_ERR_/.test(e.code)), 'each names its failure')
  t.equal(impossible.stderr.trimEnd().split('\n').length, 3, 'a line per failed file and a summary on stderr')
  t.match(impossible.stderr, /needlestore: 2 of 2 files failed\n$/)

  t.equal(notBuilt.code, 1, 'rebalance: not built, exit 1')
  oneClearLine(t, notBuilt, 'rebalance')

  // Usage mistakes: exit 2, one clear line, nothing done.
  for (const [i, run] of usageRuns.entries()) {
    t.equal(run.code, 2, `${usage[i]![0]}: exit 2`)
    t.equal(run.stdout, '', `${usage[i]![0]}: nothing on stdout`)
    oneClearLine(t, run, usage[i]![0])
  }
  t.equal(usageRuns[0]!.stderr, 'needlestore: Unknown argument: bogus-flag\n', 'the flag named once, as typed')
  t.equal(usageRuns[1]!.stderr, `needlestore: no such file or directory: ${join(work, 'missing')}\n`)
  const stillThere = await cli(['download', target.fid, '-o', join(out, 'still'), ...master])
  t.equal(stillThere.code, 0, 'the good fid next to a malformed one was not deleted')

  // An unreachable master: exit 1, and a clear message without a stack trace.
  for (const [i, run] of unreachableRuns.entries()) {
    t.equal(run.code, 1, `${unreachable[i]![0]} with the master unreachable: exit 1`)
    t.match(run.stderr, /^needlestore: (\S+: )?cannot reach the master at http:\/\/127\.0\.0\.1:1: connection refused$/m, `${unreachable[i]![0]}: says so`)
    t.notMatch(run.stderr, /\n\s+at /, `${unreachable[i]![0]}: no stack trace`)
  }
  oneClearLine(t, unreachableRuns[0]!, 'status with the master unreachable')
  oneClearLine(t, unreachableRuns[1]!, 'download with the master unreachable')
  lap('last download')
})
