/**
 * The ceiling the data server's GET is measured against: a bare fastify server that answers
 * every GET with the same fixed buffer, with no disk, no index and no headers of its own.
 */
import Fastify from 'fastify'

const bytes = Number(process.argv[2] ?? 10 * 1024)
const body = Buffer.alloc(bytes, 7)
const app = Fastify()
app.get('/*', async (_req, reply) => reply.header('content-type', 'application/octet-stream').send(body))
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
process.stdout.write(`listening on http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}\n`)
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
