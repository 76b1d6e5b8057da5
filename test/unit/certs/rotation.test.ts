// ServerCertRotation: the broker's certificate, rotated on schedule with
// jitter, kept across restarts, postponed with backoff while the clock is
// suspicious. Fake clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import pino from 'pino'
import { ClockGuard, LocalCa, ServerCertRotation, type ServerTlsMaterial } from '../../../src/certs/index.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const MIN = 60_000
const HOUR = 60 * MIN
const log = pino({ level: 'silent' })

async function setup(t: { after(fn: () => unknown): void }) {
  const dir = join(tmpDir(t), 'certs')
  await LocalCa.init(dir, { name: 'unit CA', lifetimeMs: 365 * 86_400_000, now: T0 })
  const clock = new FakeClock(T0)
  const guard = new ClockGuard({ clock, toleranceMs: 5 * MIN, maxForwardJumpMs: 86_400_000 })
  const ca = new LocalCa({ dir, guard, backdateMs: 5 * MIN, crlValidityMs: 86_400_000 })
  await ca.load()
  const make = (names: string[] = ['gw.local', 'localhost', '127.0.0.1', '::1']) =>
    new ServerCertRotation({
      ca,
      guard,
      clock,
      logger: log,
      lifetimeMs: HOUR,
      renewAfter: 2 / 3,
      backdateMs: 5 * MIN,
      names,
      random: () => 0.5,
      retryMinMs: MIN,
      retryMaxMs: HOUR,
    })
  return { clock, guard, ca, make }
}

test('issues a server certificate at first start, for the configured names', async (t) => {
  const { make, ca } = await setup(t)
  const r = make()
  await r.start()
  t.after(() => r.stop())
  const m = r.material()
  const c = new X509Certificate(m.cert)
  assert.equal(c.subject, 'CN=gw.local')
  assert.equal(c.subjectAltName, 'DNS:gw.local, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1')
  assert.deepEqual(c.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'EKU serverAuth')
  assert.ok(m.cert.endsWith(ca.bundlePem()), 'served with its chain')
  assert.equal(m.ca, ca.signer.certPem)
  assert.ok(c.checkPrivateKey((await import('node:crypto')).createPrivateKey(m.key)))
})

test('rotates at 2/3 of the lifetime minus jitter, and again after that', async (t) => {
  const { make, clock } = await setup(t)
  const r = make()
  await r.start() // issues the first one (and emits 'rotated' for it)
  t.after(() => r.stop())
  const rotated: ServerTlsMaterial[] = []
  r.on('rotated', (m) => rotated.push(m))
  const first = r.material().serial
  // due = notAfter - 20 min - jitter (0.5 × 60 min / 20 = 1.5 min) = T0 + 38.5 min
  await clock.advance(38 * MIN)
  assert.equal(rotated.length, 0)
  await clock.advance(MIN)
  assert.equal(rotated.length, 1)
  assert.notEqual(rotated[0]?.serial, first)
  await clock.advance(40 * MIN)
  assert.equal(rotated.length, 2)
  assert.equal(r.stats().rotations, 3, 'the first issuance counts')
})

test('keeps a valid certificate across a restart, and replaces one whose names changed', async (t) => {
  const { make } = await setup(t)
  const a = make()
  await a.start()
  a.stop()
  const b = make()
  await b.start()
  b.stop()
  assert.equal(b.material().serial, a.material().serial)
  assert.equal(b.stats().rotations, 0)
  const c = make(['other.local'])
  await c.start()
  c.stop()
  assert.notEqual(c.material().serial, a.material().serial)
})

test('while the clock is suspicious, keeps the certificate and retries with exponential backoff', async (t) => {
  const { make, clock } = await setup(t)
  const r = make()
  await r.start()
  t.after(() => r.stop())
  const serial = r.material().serial
  await clock.advance(30 * MIN)
  clock.jump(-10 * 24 * HOUR) // RTC reset: 10 days back
  await clock.advance(3 * HOUR)
  assert.equal(r.material().serial, serial, 'nothing issued')
  const postponed = r.stats().postponed
  // 0.75 × (1, 2, 4 … min), capped at 1 h: about 9 tries in 3 h, not one a minute
  assert.ok(postponed >= 3 && postponed <= 10, `postponed ${postponed} times in 3 h`)
  clock.jump(10 * 24 * HOUR)
  await clock.advance(HOUR)
  assert.notEqual(r.material().serial, serial, 'rotated once the clock is back')
})
