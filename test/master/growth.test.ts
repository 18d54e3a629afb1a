/**
 * Volume growth is all copies or none: when one data server refuses to create its copy, the
 * copies the others made are deleted again and the master records nothing. A master and three
 * data servers run in this process, on real sockets and real files.
 */
import t from 'tap'
import { startDataServer, type DataServer } from '../../src/dataserver/index.js'
import { startMaster } from '../../src/master/index.js'
import { tempDir } from '../helpers/volume.js'

t.test('a growth that one server refuses leaves no copy anywhere', async (t) => {
  const dir = await tempDir(t, 'ns-growth-')
  const master = await startMaster({ dir: `${dir}/master`, port: 0, log: () => {} })
  t.teardown(() => master.close())
  const servers: DataServer[] = []
  for (let i = 0; i < 3; i++) {
    // Only the heartbeat at start: the master must not learn of the volume made below.
    const server = await startDataServer({ dir: `${dir}/ds${i}`, port: 0, master: master.url, heartbeatIntervalMs: 60_000, log: () => {} })
    t.teardown(() => server.close())
    servers.push(server)
  }
  const deadline = Date.now() + 10_000
  while (master.topology.nodes().length < 3) {
    if (Date.now() > deadline) throw new Error('the data servers did not register')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  // Volume 1 exists on the third server already, unknown to the master: creating it there fails.
  await servers[2]!.store.create(1, 2)

  const refused = await fetch(`${master.url}/vol/grow?count=1&replication=002`, { method: 'POST' })
  const body = (await refused.json()) as { code: string; error: string }
  t.equal(refused.status, 502, `the growth fails: ${body.error}`)
  t.equal(body.code, 'NS_ERR_BAD_GATEWAY')
  t.match(body.error, /refused volume 1/)
  t.equal(servers[0]!.store.get(1), undefined, 'the first copy was removed again')
  t.equal(servers[1]!.store.get(1), undefined, 'the second copy was removed again')
  t.equal(master.topology.volume(1), undefined, 'the master recorded nothing')

  const grown = await fetch(`${master.url}/vol/grow?count=1&replication=002`, { method: 'POST' })
  t.same(await grown.json(), { count: 1 }, 'the next growth takes a fresh id and succeeds')
  t.same(master.topology.volume(2)?.nodes.length, 3)
  for (const server of servers) t.ok(server.store.get(2), `${server.url} holds volume 2`)
})
