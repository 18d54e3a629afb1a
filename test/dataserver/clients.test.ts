/**
 * Uploads as common HTTP clients send them, against a real server process: a browser-style
 * FormData with a file, a FormData whose file part has no file name, and a chunked raw body.
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import t from 'tap'
import { FormData, request } from 'undici'
import { createVolume, startDataServerProcess } from '../helpers/dataserver-process.js'
import { tempDir } from '../helpers/volume.js'

t.test('uploads from FormData and chunked bodies store the bytes, name and type', async (t) => {
  const dir = await tempDir(t)
  const server = await startDataServerProcess(dir)
  t.teardown(() => server.stop())
  await createVolume(server.url, 1)

  const photo = randomBytes(50_000)
  const form = new FormData()
  form.append('file', new Blob([photo], { type: 'image/webp' }), 'cat.webp')
  const put = await request(`${server.url}/1,011234abcd`, { method: 'POST', body: form })
  t.equal(put.statusCode, 201)
  t.match(await put.body.json(), { name: 'cat.webp', size: photo.length, mime: 'image/webp' })
  const got = await request(`${server.url}/1,011234abcd`)
  t.equal(got.headers['content-type'], 'image/webp')
  t.match(got.headers['content-disposition'], /filename="cat\.webp"/)
  t.ok(Buffer.from(await got.body.arrayBuffer()).equals(photo), 'the FormData file reads back byte-identical')

  const plain = new FormData()
  plain.append('file', 'just some text, no file name')
  const put2 = await request(`${server.url}/1,021234abcd`, { method: 'POST', body: plain })
  t.equal(put2.statusCode, 201, 'a part without a file name is the file')
  await put2.body.dump()
  t.equal(await (await request(`${server.url}/1,021234abcd`)).body.text(), 'just some text, no file name')

  const streamed = randomBytes(200_000)
  const chunks = [streamed.subarray(0, 70_000), streamed.subarray(70_000, 140_000), streamed.subarray(140_000)]
  const put3 = await request(`${server.url}/1,031234abcd`, { method: 'PUT', body: Readable.from(chunks), headers: { 'content-type': 'image/png' } })
  t.equal(put3.statusCode, 201, 'a chunked body without Content-Length')
  await put3.body.dump()
  const got3 = await request(`${server.url}/1,031234abcd`)
  t.equal(got3.headers['content-type'], 'image/png')
  t.ok(Buffer.from(await got3.body.arrayBuffer()).equals(streamed), 'the chunked body reads back byte-identical')
})
