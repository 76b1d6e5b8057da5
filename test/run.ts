// Test runner for Node 20: `node --test` neither expands globs nor discovers .ts
// files there, so list the files ourselves and refuse to run zero of them.
// usage: node --import tsx test/run.ts unit|integration|all|long [name-filter]
//   long: only the soak tests (*.long.test.ts). EDGE_TEST_LONG=skip leaves them
//   out of the other suites (CI runs them beside the release builds).
import { readdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { run } from 'node:test'
import { spec } from 'node:test/reporters'

const suite = process.argv[2] ?? 'unit'
const filter = process.argv[3]
const roots =
  suite === 'all' ? ['test/unit', 'test/integration'] : suite === 'long' ? ['test/integration'] : [`test/${suite}`]
const skipLong = suite !== 'long' && process.env['EDGE_TEST_LONG'] === 'skip'
const files = roots
  .filter((root) => existsSync(root))
  .flatMap((root) =>
    readdirSync(root, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => join(root, f)),
  )
  .filter((f) => filter === undefined || f.includes(filter))
  .filter((f) => (suite === 'long' ? f.endsWith('.long.test.ts') : !(skipLong && f.endsWith('.long.test.ts'))))
  .sort()
if (skipLong)
  console.log('long tests (*.long.test.ts) left out: EDGE_TEST_LONG=skip (run them with `test/run.ts long`)')
if (files.length === 0) {
  console.error(`no test files under ${roots.join(', ')}${filter ? ` matching ${filter}` : ''}`)
  process.exit(1)
}
// Unit files run in parallel; integration files one at a time, so that brokers
// on a 2-core machine do not compete for CPU and turn into flaky timeouts.
// Soak tests (*.long.test.ts, e.g. the broker fuzz run) come last, with a
// timeout of their own (EDGE_TEST_LONG_TIMEOUT_MS, default 30 min).
const long = files.filter((f) => f.endsWith('.long.test.ts'))
const batches: [string[], number][] = [
  [files.filter((f) => !long.includes(f)), 240_000],
  [long, Number(process.env['EDGE_TEST_LONG_TIMEOUT_MS'] ?? 1_800_000)],
]
// Each batch prints its own summary; the last line sums them all.
const totals = { passed: 0, failed: 0, skipped: 0 }
for (const [batch, timeout] of batches) {
  if (batch.length === 0) continue
  const stream = run({ files: batch, concurrency: suite === 'unit' ? 2 : 1, timeout })
  stream.on('test:pass', (t) => {
    if (t.details.type === 'suite') return
    if (t.skip !== undefined && t.skip !== false) totals.skipped++
    else totals.passed++
  })
  stream.on('test:fail', (t) => {
    process.exitCode = 1
    if (t.details.type !== 'suite') totals.failed++
  })
  const out = stream.compose(new spec())
  out.pipe(process.stdout, { end: false })
  await new Promise((resolve) => out.once('end', resolve))
}
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`)
