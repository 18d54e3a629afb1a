/**
 * Scripted HTTP servers in the test process, for the answers a real cluster gives only by
 * accident: a short body, wrong bytes, a redirect, a 503 with Retry-After, a hang.
 *
 *   const ds = await fakeServer(t, (req, res) => res.json(200, { ok: true }))
 *   ds.handler = (req, res) => res.hang()   // change the script at any time
 *
 * Every request is recorded with its body. The test's teardown closes the server and every
 * connection (hung ones included).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Teardown } from './cluster.js'

export interface FakeRequest {
  readonly method: string
  /** Path and query, as sent. */
  readonly url: string
  readonly path: string
  readonly query: URLSearchParams
  readonly headers: IncomingMessage['headers']
  readonly body: Buffer
}

export interface FakeResponse {
  readonly raw: ServerResponse
  json(status: number, body: unknown, headers?: Record<string, string>): void
  send(status: number, body: Buffer | string, headers?: Record<string, string>): void
  /** Never answers (the socket stays open until the server closes). */
  hang(): void
}

export type FakeHandler = (req: FakeRequest, res: FakeResponse) => void | Promise<void>

export interface FakeServer {
  /** `host:port`, as the master spells data server addresses. */
  readonly host: string
  /** `http://host:port`. */
  readonly url: string
  readonly requests: FakeRequest[]
  handler: FakeHandler
  close(): Promise<void>
}

export async function fakeServer(t: Teardown, handler: FakeHandler): Promise<FakeServer> {
  const sockets = new Set<Socket>()
  const requests: FakeRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x')
      const request: FakeRequest = { method: req.method ?? 'GET', url: req.url ?? '/', path: u.pathname, query: u.searchParams, headers: req.headers, body: Buffer.concat(chunks) }
      requests.push(request)
      const response: FakeResponse = {
        raw: res,
        json: (status, body, headers = {}) => {
          const text = JSON.stringify(body)
          res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
          res.end(text)
        },
        send: (status, body, headers = {}) => {
          res.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers })
          res.end(body)
        },
        hang: () => {},
      }
      Promise.resolve(fake.handler(request, response)).catch((err: unknown) => {
        if (!res.headersSent) response.json(500, { error: String(err), code: 'NS_ERR_INTERNAL' })
      })
    })
  })
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  let closed: Promise<void> | undefined
  const fake: FakeServer = {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    handler,
    close() {
      closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
      return closed
    },
  }
  t.teardown(() => fake.close())
  return fake
}
