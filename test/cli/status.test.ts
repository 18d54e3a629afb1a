import t from 'tap'
import { compactionCandidates } from '../../src/cli/operations.js'
import { clusterLine, formatStatus, serverRows, volumeRows } from '../../src/cli/status.js'

/** /dir/status and /vol/status as the master answers them (src/master/status.ts). */
const dirStatus = {
  Version: 'needlestore 0.1.0',
  Topology: {
    Max: 256,
    Free: 250,
    DataCenters: [
      {
        Id: 'dc1',
        Racks: [
          {
            Id: 'rack1',
            DataNodes: [
              { Url: '127.0.0.1:8081', PublicUrl: '127.0.0.1:8081', Volumes: 3, Max: 128, Free: 125, Alive: true, LastHeartbeatAgeMs: 180 },
              { Url: '127.0.0.1:8080', PublicUrl: '127.0.0.1:8080', Volumes: 3, Max: 128, Free: 125, Alive: true, LastHeartbeatAgeMs: 20 },
            ],
          },
          { Id: 'rack2', DataNodes: [{ Url: '127.0.0.1:8082', Volumes: 0, Max: 128, Free: 128, Alive: false, LastHeartbeatAgeMs: 15_000 }] },
        ],
      },
    ],
  },
}

const volStatus = {
  Version: 'needlestore 0.1.0',
  Volumes: [
    {
      Id: 12, Collection: 'pics', ReplicaPlacement: '001', Copies: 2, Size: 3 * 1024 * 1024, FileCount: 300, DeleteCount: 120,
      DeletedByteCount: 1024 * 1024, GarbageRatio: 1 / 3, ReadOnly: false, Writable: false, Reason: 'it has 1 of 2 copies alive',
      Locations: [{ url: '127.0.0.1:8080', publicUrl: '127.0.0.1:8080', alive: true }, { url: '127.0.0.1:8082', publicUrl: '127.0.0.1:8082', alive: false }],
    },
    {
      Id: 3, Collection: '', ReplicaPlacement: '000', Copies: 1, Size: 512, FileCount: 2, DeleteCount: 0,
      DeletedByteCount: 0, GarbageRatio: 0, ReadOnly: false, Writable: true, Reason: '',
      Locations: [{ url: '127.0.0.1:8081', publicUrl: '127.0.0.1:8081', alive: true }],
    },
  ],
}

t.test('servers: sorted by address, with their data center and rack', async (t) => {
  const rows = serverRows(dirStatus)
  t.same(rows.map((r) => [r.url, r.dataCenter, r.rack, r.alive]), [
    ['127.0.0.1:8080', 'dc1', 'rack1', true],
    ['127.0.0.1:8081', 'dc1', 'rack1', true],
    ['127.0.0.1:8082', 'dc1', 'rack2', false],
  ])
})

t.test('volumes: sorted by id, copies alive counted from the locations', async (t) => {
  const rows = volumeRows(volStatus)
  t.same(rows.map((r) => [r.id, r.copiesAlive, r.copies, r.writable]), [[3, 1, 1, true], [12, 1, 2, false]])
})

t.test('the whole status as text', async (t) => {
  const text = formatStatus('http://127.0.0.1:9333', dirStatus, volStatus)
  t.equal(
    text,
    [
      'master http://127.0.0.1:9333 (needlestore 0.1.0), servers 2/3 alive, volumes 2 (1 writable), free slots 250/256, files 302, size 3.0 MiB',
      '',
      'SERVER          DC   RACK   ALIVE  VOLUMES  MAX  FREE  HEARTBEAT',
      '127.0.0.1:8080  dc1  rack1  yes          3  128   125       0.0s',
      '127.0.0.1:8081  dc1  rack1  yes          3  128   125       0.2s',
      '127.0.0.1:8082  dc1  rack2  no           0  128   128      15.0s',
      '',
      'VOLUME  COLLECTION  REPLICATION     SIZE  FILES  DELETED  GARBAGE  COPIES  WRITABLE',
      '     3  -           000            512 B      2        0     0.0%     1/1  yes',
      '    12  pics        001          3.0 MiB    300      120    33.3%     1/2  no: it has 1 of 2 copies alive',
      '',
    ].join('\n'),
  )
})

t.test('odd answers show as empty cells, never as a crash', async (t) => {
  for (const odd of [undefined, null, 42, 'text', [], { Topology: 'x' }, { Topology: { DataCenters: [null, { Racks: [{ DataNodes: [7] }] }] } }]) {
    t.doesNotThrow(() => formatStatus('http://m', odd, odd), JSON.stringify(odd) ?? 'undefined')
  }
  t.equal(clusterLine('http://m', {}, [], []), 'master http://m, servers 0/0 alive, volumes 0 (0 writable), free slots ?/?, files 0, size 0 B')
})

t.test('compaction candidates: garbage strictly above the threshold, as the master\'s /vol/vacuum', async (t) => {
  t.same(compactionCandidates(volStatus, 0.3).map((c) => c.id), [12])
  t.same(compactionCandidates(volStatus, 1 / 3).map((c) => c.id), [], 'equal is not above')
  t.same(compactionCandidates(volStatus, 0).map((c) => c.id), [12])
  t.same(compactionCandidates(volStatus, 0, 3).map((c) => c.id), [], 'only the volume asked for')
  t.same(compactionCandidates(volStatus, 0.1, 12), [{ id: 12, garbageRatio: 1 / 3, size: 3 * 1024 * 1024 }])
})
