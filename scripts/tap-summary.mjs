// Reads TAP 14 output on stdin and prints "N passed, N failed[, N skipped]".
// A test is a direct child of a test file (a named t.test or an assertion at the top of the
// file). A file that failed without any failing child (a crash, a timeout) counts as one failure.
import { createInterface } from 'node:readline'

const point = /^( *)(not ok|ok) \d+/
let passed = 0
let failed = 0
let skipped = 0
let childFailures = 0
for await (const line of createInterface({ input: process.stdin })) {
  const m = point.exec(line)
  if (!m) continue
  const depth = m[1].length / 4
  const ok = m[2] === 'ok'
  if (depth === 1) {
    if (/# (SKIP|TODO)/i.test(line)) skipped++
    else if (ok) passed++
    else { failed++; childFailures++ }
  } else if (depth === 0) {
    if (!ok && childFailures === 0) failed++
    childFailures = 0
  }
}
if (passed + failed === 0) failed = 1
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
