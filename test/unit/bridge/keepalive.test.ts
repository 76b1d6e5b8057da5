// Keepalive and OutputBatch, the two small parts MqttSession delegates to:
// keepalive on mock timers and an injected clock, the batch on a PassThrough.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { Keepalive } from '../../../src/bridge/keepalive.js'
import { OutputBatch } from '../../../src/bridge/output-batch.js'

test('keepalive pings once after ¾ of the interval of silence and declares the link dead after 1½', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] })
  let now = 0
  const k = new Keepalive(() => now)
  const events: string[] = []
  k.start(4, { ping: () => events.push(`ping@${now}`), dead: (ms) => events.push(`dead@${now}:${ms}`) })
  for (; now < 7_000; now += 1_000) t.mock.timers.tick(1_000)
  k.stop()
  assert.deepEqual(events, ['ping@3000', 'dead@6000:6000'])
})

test('anything heard resets the silence, and a new ping may go out after it', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] })
  let now = 0
  const k = new Keepalive(() => now)
  const pings: number[] = []
  let dead = false
  k.start(4, { ping: () => pings.push(now), dead: () => (dead = true) })
  for (; now < 12_000; now += 1_000) {
    t.mock.timers.tick(1_000)
    if (now === 4_000 || now === 9_000) k.heard()
  }
  k.stop()
  assert.deepEqual(pings, [3_000, 7_000])
  assert.equal(dead, false)
})

test('keepalive 0 is off', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] })
  let now = 0
  const k = new Keepalive(() => now)
  let called = false
  k.start(0, { ping: () => (called = true), dead: () => (called = true) })
  now = 1_000_000
  t.mock.timers.tick(1_000_000)
  assert.equal(called, false)
})

test('bytes pushed in one tick leave in one write, in order; a cleared batch writes nothing', async () => {
  const stream = new PassThrough()
  const writes: Buffer[] = []
  stream.on('data', (b: Buffer) => writes.push(b))
  const batch = new OutputBatch(() => stream)
  batch.push(Buffer.from('ab'))
  batch.push(Buffer.from('cd'))
  assert.equal(batch.bytes, 4)
  await new Promise((r) => process.nextTick(r))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(Buffer.concat(writes).toString(), 'abcd')
  assert.equal(batch.bytes, 0)
  batch.push(Buffer.from('lost'))
  batch.clear()
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(Buffer.concat(writes).toString(), 'abcd')
})
