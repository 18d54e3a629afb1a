/**
 * `npm start` runs `needlestore dev`: a master and three data servers, each its own process.
 * This runs it on free ports, stores a file through it, reads every copy, and stops it with
 * SIGINT as Ctrl-C would: every process must be gone afterwards.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import t from 'tap'
import { request } from 'undici'
import { CLI_PATH, repoRoot } from '../helpers/dataserver-process.js'
import { tempDir } from '../helpers/volume.js'

t.setTimeout(60_000)

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('needlestore dev: a working 3-copy cluster that Ctrl-C stops completely', async (t) => {
  const dir = await tempDir(t, 'ns-dev-')
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NEEDLESTORE_')))
  const child = spawn(process.execPath, [CLI_PATH, 'dev', '--dir', dir, '--master-port', '0', '--port', '0'], { cwd: repoRoot(), env, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let out = ''
  let err = ''
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const banner = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner within 30 s\n${out}\n${err}`)), 30_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /local cluster: master (http:\S+), data servers (.+) \(data in/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m)
      }
    })
  })
  const master = banner[1]!.replace(/,$/, '')
  const servers = banner[2]!.split(', ')
  t.equal(servers.length, 3, 'three data servers')
  const pids = (/pids ([\d, ]+)\)/.exec(out)?.[1] ?? '').split(', ').map(Number)
  t.equal(pids.length, 4, 'a master and three data servers, each a process')

  // The data servers register with their first heartbeat; until all three have, a 3-copy
  // assign may be refused.
  const body = Buffer.from('hello, needlestore')
  let stored: { fid: string; size: number } | undefined
  const deadline = Date.now() + 20_000
  while (!stored) {
    const res = await request(`${master}/submit?filename=hello.txt`, { method: 'POST', body, headers: { 'content-type': 'text/plain' } })
    if (res.statusCode === 201) stored = (await res.body.json()) as { fid: string; size: number }
    else await res.body.dump()
    if (!stored && Date.now() > deadline) throw new Error(`submit kept failing (${res.statusCode})`)
    if (!stored) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(stored.size, body.length)
  const md5 = createHash('md5').update(body).digest('hex')
  for (const server of servers) {
    const res = await request(`${server}/${stored.fid}`)
    const got = Buffer.from(await res.body.arrayBuffer())
    t.equal(res.statusCode, 200, `${server} has a copy`)
    t.equal(createHash('md5').update(got).digest('hex'), md5)
  }

  child.kill('SIGINT')
  t.equal(await exited, 0, 'exits cleanly on Ctrl-C')
  for (const pid of pids) t.notOk(isAlive(pid), `child ${pid} is gone`)
})
