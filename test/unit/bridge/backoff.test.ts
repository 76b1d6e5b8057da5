import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Backoff, jittered } from '../../../src/bridge/backoff.js'

function seq(values: number[]): () => number {
  let i = 0
  return () => values[i++ % values.length] ?? 0
}

test('decorrelated jitter stays within [base, min(cap, 3 × previous)]', () => {
  const b = new Backoff({ baseMs: 100, capMs: 5_000, resetAfterMs: 1_000, random: Math.random })
  let prev = 100
  for (let i = 0; i < 1_000; i++) {
    const d = b.next()
    assert.ok(d >= 100 && d <= Math.min(5_000, prev * 3), `delay ${d} after ${prev}`)
    prev = Math.max(100, d)
  }
})

test('grows toward the cap when the random source is high, and stays at base when it is low', () => {
  const high = new Backoff({ baseMs: 100, capMs: 1_000, resetAfterMs: 1_000, random: seq([0.999999]) })
  assert.deepEqual(
    Array.from({ length: 5 }, () => high.next()),
    [300, 900, 1000, 1000, 1000],
  )
  const low = new Backoff({ baseMs: 100, capMs: 1_000, resetAfterMs: 1_000, random: seq([0]) })
  assert.deepEqual(
    Array.from({ length: 3 }, () => low.next()),
    [100, 100, 100],
  )
})

test('a stable connection resets the sequence, a short one does not', () => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000, resetAfterMs: 30_000, random: seq([0.999999]) })
  b.next()
  b.next()
  b.connectionEnded(5_000)
  assert.equal(b.next(), 2_700, 'kept growing after a 5 s connection')
  b.connectionEnded(30_000)
  assert.equal(b.attempt, 0)
  assert.equal(b.next(), 300, 'started over after a 30 s connection')
})

test('refuses a cap below the base', () => {
  assert.throws(() => new Backoff({ baseMs: 10, capMs: 5, resetAfterMs: 1 }), RangeError)
})

test('jitter spreads a delay by ±fraction', () => {
  assert.equal(
    jittered(1000, 0.2, () => 0),
    800,
  )
  assert.equal(
    jittered(1000, 0.2, () => 0.5),
    1000,
  )
  assert.equal(
    jittered(1000, 0.2, () => 0.999999),
    1200,
  )
})
