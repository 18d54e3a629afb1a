import fc from 'fast-check'
import t from 'tap'
import { KIND_DELETE, KIND_LINK, KIND_UNDELETE, KIND_WRITE, RECORD_HEADER_SIZE, decodeOps, encodeOp, type ReplicaOp } from '../../src/dataserver/replica-batch.js'
import { codeOfCall } from '../helpers/volume.js'

const u32 = fc.integer({ min: 0, max: 0xffff_ffff })
const opArb: fc.Arbitrary<ReplicaOp> = fc.oneof(
  fc.record(
    {
      kind: fc.constant(KIND_WRITE as typeof KIND_WRITE),
      volumeId: u32,
      cookie: u32,
      keyHi: u32,
      keyLo: u32,
      data: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      name: fc.string({ minLength: 1, maxLength: 60 }),
      mime: fc.stringMatching(/^[a-z]{1,10}\/[a-z0-9.+-]{1,20}$/),
      lastModifiedMs: fc.integer({ min: 0, max: 2 ** 47 }),
      md5: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a)),
    },
    { requiredKeys: ['kind', 'volumeId', 'cookie', 'keyHi', 'keyLo', 'data', 'lastModifiedMs'] },
  ),
  fc.record({ kind: fc.constant(KIND_DELETE as typeof KIND_DELETE), volumeId: u32, cookie: u32, keyHi: u32, keyLo: u32 }),
  fc.record({ kind: fc.constant(KIND_UNDELETE as typeof KIND_UNDELETE), volumeId: u32, cookie: u32, keyHi: u32, keyLo: u32 }),
  fc.record(
    {
      kind: fc.constant(KIND_LINK as typeof KIND_LINK),
      volumeId: u32,
      cookie: u32,
      keyHi: u32,
      keyLo: u32,
      name: fc.string({ minLength: 1, maxLength: 60 }),
      lastModifiedMs: fc.integer({ min: 0, max: 2 ** 47 }),
      md5: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a)),
      target: fc.record({ keyHi: u32, keyLo: u32, cookie: u32 }),
    },
    { requiredKeys: ['kind', 'volumeId', 'cookie', 'keyHi', 'keyLo', 'lastModifiedMs', 'md5', 'target'] },
  ),
)

t.test('a batch decodes to the records encoded, in order', async (t) => {
  let failures = 0
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 12 }), (ops) => {
      const body = Buffer.concat(ops.flatMap(encodeOp))
      const back = decodeOps(body, 100)
      const same = JSON.stringify(back.map(normal)) === JSON.stringify(ops.map(normal))
      if (!same) failures++
      return same
    }),
    { numRuns: 300 },
  )
  t.equal(failures, 0)
})

t.test('a cut or garbled batch is refused whole', async (t) => {
  const ops: ReplicaOp[] = [
    { kind: KIND_WRITE, volumeId: 1, cookie: 2, keyHi: 0, keyLo: 3, data: Buffer.from('hello'), name: 'a.txt', lastModifiedMs: 5 },
    { kind: KIND_DELETE, volumeId: 1, cookie: 2, keyHi: 0, keyLo: 4 },
  ]
  const body = Buffer.concat(ops.flatMap(encodeOp))
  for (let cut = 1; cut < body.length; cut++) {
    if (cut === RECORD_HEADER_SIZE + 5 + 5) continue // exactly the first record: a whole batch
    t.equal(codeOfCall(() => decodeOps(body.subarray(0, cut), 100)), 'NS_ERR_BAD_REQUEST', `cut at ${cut}`)
  }
  const garbled = Buffer.from(body)
  garbled[0] = 9
  t.equal(codeOfCall(() => decodeOps(garbled, 100)), 'NS_ERR_BAD_REQUEST', 'unknown kind')
  t.equal(codeOfCall(() => decodeOps(body, 1)), 'NS_ERR_BAD_REQUEST', 'more records than allowed')
  const link = encodeOp({ kind: KIND_LINK, volumeId: 1, cookie: 2, keyHi: 0, keyLo: 5, lastModifiedMs: 1, target: { keyHi: 0, keyLo: 3, cookie: 2 } })
  link[0]!.writeUInt32LE(11, 20)
  t.equal(codeOfCall(() => decodeOps(Buffer.concat([link[0]!, link[1]!, Buffer.alloc(0)]).subarray(0, RECORD_HEADER_SIZE + 11), 100)), 'NS_ERR_BAD_REQUEST', 'a link without its whole target')
  t.equal(decodeOps(Buffer.alloc(0), 100).length, 0, 'an empty batch')
})

/** A record as plain data, with the defaults decoding fills in. */
function normal(op: ReplicaOp) {
  return {
    kind: op.kind,
    volumeId: op.volumeId,
    cookie: op.cookie,
    keyHi: op.keyHi,
    keyLo: op.keyLo,
    data: op.kind === KIND_WRITE ? Buffer.from(op.data ?? []).toString('hex') : undefined,
    name: op.name || undefined,
    mime: op.mime || undefined,
    lastModifiedMs: op.kind === KIND_WRITE || op.kind === KIND_LINK ? op.lastModifiedMs ?? 0 : undefined,
    md5: op.md5 ? Buffer.from(op.md5).toString('hex') : undefined,
    target: op.target ? [op.target.keyHi, op.target.keyLo, op.target.cookie] : undefined,
  }
}
