import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { LogLimiter } from '../../../src/local-broker/log-limiter.js'

function capture() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      cb()
    },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

test('writes a burst per key and window, then one summary of what it suppressed', async () => {
  const { log, lines } = capture()
  let now = 0
  const limiter = new LogLimiter(log, 10_000, 3, () => now)
  for (let i = 0; i < 10; i++) limiter.warn('maxConnections', { i }, 'connection refused by limit')
  limiter.warn('other', {}, 'something else')
  now = 10_000
  limiter.warn('maxConnections', { i: 10 }, 'connection refused by limit')
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(
    lines.map((l) => [l['msg'], l['i'] ?? l['suppressed']]),
    [
      ['connection refused by limit', 0],
      ['connection refused by limit', 1],
      ['connection refused by limit', 2],
      ['something else', undefined],
      ['similar log lines suppressed', 7],
      ['connection refused by limit', 10],
    ],
  )
})

test('flush reports pending suppressed counts', async () => {
  const { log, lines } = capture()
  const limiter = new LogLimiter(log, 10_000, 1, () => 0)
  limiter.info('k', {}, 'x')
  limiter.info('k', {}, 'x')
  limiter.flush()
  await new Promise((r) => setImmediate(r))
  assert.equal(lines.at(-1)?.['suppressed'], 1)
})
