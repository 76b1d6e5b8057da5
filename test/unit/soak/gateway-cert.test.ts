// The soak's reading of the gateway's ACME certificate (soak/lib/gateway-cert.ts): pure code that decides
// whether `npm run soak` passes its certificate checks.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { GatewayCertWatch, attemptBound, gatewayCertPlan, parseFailedAttempts } from '../../../soak/lib/gateway-cert.js'

const T0 = 1_700_000_000_000
const DAY = 20
const at = (day: number): number => T0 + day * DAY * 1000
const cert = (serial: string, fromDay: number, state = 'valid') => ({
  state,
  serial,
  notBefore: new Date(at(fromDay)).toISOString(),
  notAfter: new Date(at(fromDay + 1)).toISOString(),
})

test('the plan scales the lifetime and the backoff to the simulated day', () => {
  const p = gatewayCertPlan(20)
  assert.equal(p.lifetimeSec, 20)
  assert.equal(p.renewAt, 0.5)
  assert.equal(p.retryMinMs, 100, 'one simulated minute is below the schema minimum: clamped')
  assert.equal(p.retryMaxMs, 833, 'one simulated hour')
  assert.ok(p.graceMs > p.retryMaxMs)
  assert.equal(gatewayCertPlan(60).retryMaxMs, 2500)
  assert.equal(gatewayCertPlan(4).lifetimeSec, 10, 'never shorter than an order takes on a loaded machine')
})

test('promotions are recorded once per serial, with notBefore and notAfter in simulated days', () => {
  const w = new GatewayCertWatch(T0, DAY, 30_000)
  w.observe(at(0), true, null, cert('a', -0.1))
  w.observe(at(0.05), true, null, cert('a', -0.1))
  w.observe(at(0.45), true, null, cert('b', 0.44))
  assert.deepEqual(
    w.promotions.map((p) => [p.serial, Number(p.notBeforeDay.toFixed(2)), Number(p.notAfterDay.toFixed(2))]),
    [
      ['a', -0.1, 0.9],
      ['b', 0.44, 1.44],
    ],
  )
  assert.equal(w.serial, 'b')
  assert.deepEqual(w.violations, [])
})

test('an expired certificate offline is no violation; with the link up it is, but within the grace', () => {
  const w = new GatewayCertWatch(T0, DAY, 30_000)
  w.observe(at(0.5), true, null, cert('a', 0))
  w.observe(at(5), false, null, cert('a', 0, 'expired'))
  w.observe(at(10), false, null, cert('a', 0, 'expired'))
  const up = at(31)
  w.observe(up + 1000, true, up, cert('a', 0, 'expired'))
  w.observe(up + 5000, true, up, cert('b', 31))
  assert.deepEqual(w.violations, [])
  assert.equal(w.invalidWhileUp.length, 1)
  assert.equal(w.invalidWhileUp[0]?.inGrace, true)
  assert.equal(w.lostOffline, 0)
})

test('a certificate still expired after the grace, or expired before the outage, fails', () => {
  const w = new GatewayCertWatch(T0, DAY, 30_000)
  w.observe(at(0.2), true, null, cert('a', 0))
  w.observe(at(0.8), true, null, cert('a', -0.5, 'expired'))
  w.observe(at(0.9), true, null, cert('b', 0.85))
  const up = at(31)
  w.observe(up + 10_000, true, up, cert('b', 0.85, 'expired'))
  w.observe(up + 40_000, true, up, cert('b', 0.85, 'expired'))
  w.observe(up + 50_000, true, up, cert('c', 31.9))
  w.finish(up + 60_000)
  const v = w.violations
  assert.equal(v.length, 2)
  assert.ok((v[0]?.toDay ?? 0) < 1, 'the lapse before the outage')
  assert.ok((v[1]?.fromDay ?? 0) > 31, 'the part after the grace')
  assert.equal(w.invalidWhileUp.filter((s) => s.inGrace).length, 1)
})

test('a certificate gone while offline counts as lost', () => {
  const w = new GatewayCertWatch(T0, DAY, 30_000)
  w.observe(at(0.5), true, null, cert('a', 0))
  w.observe(at(3), false, null, { state: 'none', serial: null })
  assert.equal(w.lostOffline, 1)
  w.observe(at(4), false, null, undefined)
  assert.equal(w.lostOffline, 1, '/status unanswered: nothing concluded')
})

test('failed attempts are read from the JSON log, other lines and cut lines ignored', () => {
  const msg = 'gateway certificate renewal failed; keeping the current certificate'
  const text = [
    JSON.stringify({ level: 40, time: 1, msg, code: 'EDGE_ERR_ACME_UNREACHABLE', retryInMs: 120 }),
    JSON.stringify({ level: 40, time: 2, msg: 'gateway certificate expires soon' }),
    JSON.stringify({
      level: 40,
      time: '1970-01-01T00:00:00.003Z',
      msg,
      code: 'EDGE_ERR_ACME_UPSTREAM_REFUSED',
      retryInMs: 200,
    }),
    `{"level":40,"time":4,"msg":"${msg}","co`,
    '',
  ].join('\n')
  assert.deepEqual(parseFailedAttempts(text), [
    { t: 1, code: 'EDGE_ERR_ACME_UNREACHABLE', retryInMs: 120 },
    { t: 3, code: 'EDGE_ERR_ACME_UPSTREAM_REFUSED', retryInMs: 200 },
  ])
})

test('the attempt bound: one per half the longest wait, plus a ramp per process', () => {
  // 30 simulated days of 20 s with a cap of 1 simulated hour: at most 2 attempts per simulated hour.
  const b = attemptBound({ fromMs: 0, toMs: 600_000, processes: 4, retryMinMs: 100, retryMaxMs: 833 })
  assert.equal(b, Math.ceil(600_000 / 416.5) + 4 * (Math.ceil(Math.log2(8.33)) + 2))
  assert.ok(b < 30 * 24 * 2 + 30, 'about 2 per simulated hour: a retry every few ms would exceed it')
})
