// ClockGuard: when the wall clock may date certificates (src/certs/clock.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ClockGuard } from '../../../src/certs/clock.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const MIN = 60_000
const DAY = 86_400_000

function guard(clock: FakeClock, file?: string): ClockGuard {
  return new ClockGuard({
    clock,
    ...(file === undefined ? {} : { file }),
    toleranceMs: 5 * MIN,
    maxForwardJumpMs: DAY,
    persistEveryMs: MIN,
  })
}

test('a steady clock is trusted and moves the last known good time forward', async () => {
  const c = new FakeClock(T0)
  const g = guard(c)
  assert.equal(g.assess().state, 'ok')
  await c.advance(10 * MIN)
  const s = g.assess()
  assert.equal(s.state, 'ok')
  assert.equal(s.lastKnownGood, T0 + 10 * MIN)
  assert.equal(g.trustedNow(), T0 + 10 * MIN)
})

test('a boot with the clock behind the persisted last known good time is suspicious until the clock passes it', async (t) => {
  const file = join(tmpDir(t), 'clock.json')
  writeFileSync(file, JSON.stringify({ lastKnownGood: T0 }))
  const c = new FakeClock(T0 - 365 * DAY) // RTC-less boot: 1 year back
  const g = guard(c, file)
  await g.load()
  const s = g.assess()
  assert.equal(s.state, 'suspicious')
  assert.equal(s.reason, 'behind-last-known-good')
  assert.ok(g.trustedNow() >= T0, 'the estimate is never before LKG')
  c.jump(365 * DAY + 2 * MIN) // NTP arrives
  assert.equal(g.assess().state, 'ok')
  // The trusted time is saved now; the temp dir goes only after that write.
  await g.flush()
})

test('small steps either way are NTP corrections, not suspicious', async () => {
  const c = new FakeClock(T0)
  const g = guard(c)
  g.assess()
  await c.advance(MIN)
  c.jump(-2 * MIN)
  assert.equal(g.assess().state, 'ok', 'back 2 min, within the 5 min tolerance')
  c.jump(3 * 3_600_000)
  assert.equal(g.assess().state, 'ok', 'forward 3 h, below maxForwardJump')
})

test('a forward step beyond maxForwardJump while running is suspicious until the clock comes back', async () => {
  const c = new FakeClock(T0)
  const g = guard(c)
  const events: string[] = []
  g.on('change', (s) => events.push(`${s.state}:${s.reason ?? ''}`))
  g.assess()
  await c.advance(MIN)
  c.jump(365 * DAY)
  const s = g.assess()
  assert.equal(s.reason, 'jumped-forward')
  assert.ok(Math.abs(g.trustedNow() - (T0 + MIN)) < 1000, 'the monotonic estimate, not the jumped wall clock')
  assert.ok(s.skewMs > 364 * DAY)
  await c.advance(MIN)
  assert.equal(g.assess().state, 'suspicious', 'staying ahead stays suspicious')
  c.jump(-365 * DAY)
  assert.equal(g.assess().state, 'ok')
  assert.deepEqual(events, ['suspicious:jumped-forward', 'ok:'])
})

test('a backward step beyond the tolerance is caught by the last known good time', async () => {
  const c = new FakeClock(T0)
  const g = guard(c)
  g.assess()
  await c.advance(30 * MIN)
  g.assess()
  c.jump(-365 * DAY)
  const s = g.assess()
  assert.equal(s.reason, 'behind-last-known-good')
  assert.ok(Math.abs(s.trustedTime - (T0 + 30 * MIN)) < 1000)
  c.jump(365 * DAY)
  assert.equal(g.assess().state, 'ok')
})

test('an unresolved forward jump survives a restart; a clock that came back clears it', async (t) => {
  const file = join(tmpDir(t), 'clock.json')
  const c = new FakeClock(T0)
  const g = guard(c, file)
  await g.load()
  g.assess()
  c.jump(30 * DAY)
  g.assess()
  await g.flush()
  assert.ok(JSON.parse(readFileSync(file, 'utf8')).forwardJumpFrom > 0)

  const restarted = guard(new FakeClock(T0 + 30 * DAY), file)
  await restarted.load()
  assert.equal(restarted.assess().reason, 'jumped-forward', 'still 30 days ahead after a restart')
  await restarted.flush()

  const fixed = guard(new FakeClock(T0 + 10 * MIN), file)
  await fixed.load()
  assert.equal(fixed.assess().state, 'ok')
  await fixed.flush()
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).forwardJumpFrom, undefined)
})

test('after an accepted forward step, notBeforeFloor reaches back to where the step started', async () => {
  const c = new FakeClock(T0)
  const g = guard(c)
  g.assess()
  c.jump(6 * 3_600_000) // NTP corrects a stale boot time by 6 h
  assert.equal(g.assess().state, 'ok')
  assert.equal(g.notBeforeFloor(), T0)
  await c.advance(DAY + MIN)
  g.assess()
  assert.equal(g.notBeforeFloor(), g.trustedNow(), 'forgotten after maxForwardJump')
})

test('trustNow() is the operator override, backwards included', async (t) => {
  const file = join(tmpDir(t), 'clock.json')
  writeFileSync(file, JSON.stringify({ lastKnownGood: T0 + 365 * DAY })) // poisoned by a bad clock
  const c = new FakeClock(T0)
  const g = guard(c, file)
  await g.load()
  assert.equal(g.assess().state, 'suspicious')
  g.trustNow()
  assert.equal(g.assess().state, 'ok')
  await g.flush()
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).lastKnownGood, T0)
})
