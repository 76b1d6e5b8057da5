// Test runner for Node 20: `node --test` neither expands globs nor discovers .ts
// files there, so list the files ourselves and refuse to run zero of them.
// usage: node --import tsx test/run.ts unit|integration|all [name-filter]
import { readdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { run } from 'node:test'
import { spec } from 'node:test/reporters'

const suite = process.argv[2] ?? 'unit'
const filter = process.argv[3]
const roots = suite === 'all' ? ['test/unit', 'test/integration'] : [`test/${suite}`]
const files = roots
  .filter((root) => existsSync(root))
  .flatMap((root) =>
    readdirSync(root, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => join(root, f)),
  )
  .filter((f) => filter === undefined || f.includes(filter))
  .sort()
if (files.length === 0) {
  console.error(`no test files under ${roots.join(', ')}${filter ? ` matching ${filter}` : ''}`)
  process.exit(1)
}
// Unit files run in parallel; integration files one at a time, so that brokers
// on a 2-core machine do not compete for CPU and turn into flaky timeouts.
const stream = run({ files, concurrency: suite === 'unit' ? 2 : 1, timeout: 240_000 })
stream.on('test:fail', () => {
  process.exitCode = 1
})
stream.compose(new spec()).pipe(process.stdout)
