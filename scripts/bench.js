// Runs every benchmark in dist/bench one after another (never in parallel: they would measure
// each other) and prints their reports. Usage: npm run bench [-- name ...]
import { spawnSync } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const all = {
  get: ['dist/bench/get.js'],
  put: ['dist/bench/put.js'],
  put3: ['dist/bench/put-replicated.js'],
  redirect: ['dist/bench/get-redirect.js'],
  delete: ['dist/bench/delete.js'],
  dedup: ['dist/bench/dedup.js'],
  compact: ['dist/bench/compact.js'],
  index: ['--expose-gc', 'dist/bench/index-memory.js'],
  load: ['dist/bench/volume-load.js'],
  rerepl: ['dist/bench/re-replication.js'],
}
const names = process.argv.slice(2).length > 0 ? process.argv.slice(2) : Object.keys(all)
let failed = 0
for (const name of names) {
  const args = all[name]
  if (!args) {
    console.error(`unknown benchmark ${name}; one of ${Object.keys(all).join(', ')}`)
    process.exit(2)
  }
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) failed++
}
process.exit(failed > 0 ? 1 : 0)
