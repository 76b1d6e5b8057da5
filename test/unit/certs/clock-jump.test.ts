// A wall clock that jumps a year forward and back (injected clock) against
// the whole certs component: no renewal storm, no certificate dated outside a
// sane window, and the suspicious clock is reported.
//
// Glossary: "real time" = T0 + monotonic time elapsed, what a correct clock
// would say; "storm" = issuing (or trying to) much more often than the
// lifetimes call for.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import pino from 'pino'
import { CertsService, createCsr, generateKeyPair, type ClockStatus } from '../../../src/certs/index.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const MIN = 60_000
const HOUR = 60 * MIN
const YEAR = 365 * 24 * HOUR
const BACKDATE = 5 * MIN
const DEVICE_LIFETIME = 6 * HOUR
const SERVER_LIFETIME = 2 * HOUR

test('a clock jumped a year forward and back causes no renewal storm and no certificate dated outside a sane window', async (t) => {
  const clock = new FakeClock(T0)
  const startMono = clock.mono
  const realNow = () => T0 + (clock.mono - startMono)
  const svc = new CertsService({
    dataDir: tmpDir(t),
    logger: pino({ level: 'silent' }),
    autoInit: true,
    caName: 'jump CA',
    caLifetimeMs: 5 * YEAR,
    backdateMs: BACKDATE,
    maxIdBytes: 128,
    device: { lifetimeMs: DEVICE_LIFETIME, renewAfter: 2 / 3 },
    server: { lifetimeMs: SERVER_LIFETIME, renewAfter: 2 / 3, names: ['gw.local'] },
    renewal: { enabled: true, topicPrefix: 'devices/{id}/$certs', minRequestIntervalMs: 10_000 },
    crl: { topic: '$edge/ca/crl', validityMs: 24 * HOUR },
    clockGuard: { toleranceMs: 5 * MIN, maxForwardJumpMs: 24 * HOUR },
    clock,
    random: () => 0.5,
    retryMinMs: MIN,
    retryMaxMs: HOUR,
  })
  await svc.start(new AbortController().signal)
  t.after(() => svc.stop())

  // Every certificate issued, with the real time it was issued at.
  const issued: { kind: string; pem: string; at: number }[] = []
  svc.on('rotated', (m) => issued.push({ kind: 'server', pem: m.cert, at: realNow() }))
  const clockEvents: ClockStatus[] = []
  svc.on('clock', (s) => clockEvents.push(s))

  // Ten devices with a certificate each, asking to renew every minute whatever
  // they are told: the worst client behaviour.
  const devices = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const key = await generateKeyPair()
      const cert = await svc.ca.issue({
        id: `d${i}`,
        profile: 'client',
        publicKey: key.publicKey,
        lifetimeMs: DEVICE_LIFETIME,
      })
      return { id: `d${i}`, serial: cert.serial, notBefore: cert.notBefore, notAfter: cert.notAfter, renewals: 0 }
    }),
  )
  const refusals = new Map<string, number>()
  const csrs = new Map<string, Buffer>()
  for (const d of devices) {
    const key = await generateKeyPair()
    csrs.set(d.id, Buffer.from(JSON.stringify({ v: 1, requestId: d.id, csr: await createCsr({ key, cn: d.id }) })))
  }
  const minutes = async (n: number): Promise<void> => {
    for (let m = 0; m < n; m++) {
      await clock.advance(MIN)
      for (const d of devices) {
        const out = await svc.handleRenewal({
          id: d.id,
          clientId: d.id,
          payload: csrs.get(d.id) ?? Buffer.alloc(0),
          credential: d,
        })
        if (out.reply.status === 'issued') {
          const r = out.reply
          issued.push({ kind: 'device', pem: r.certificate, at: realNow() })
          d.serial = r.serial
          d.notBefore = Date.parse(r.notBefore)
          d.notAfter = Date.parse(r.notAfter)
          d.renewals++
        } else refusals.set(out.reply.error, (refusals.get(out.reply.error) ?? 0) + 1)
      }
    }
  }

  // A: half an hour of normal operation: nothing is due.
  await minutes(30)
  assert.equal(issued.length, 0)
  assert.equal(refusals.get('too-early'), 300)

  // B: the wall clock jumps a year forward and stays there for two hours. The
  // server certificate falls due meanwhile (at ~77 min), device windows do not.
  clock.jump(YEAR)
  await minutes(120)
  const during = svc.stats()
  assert.equal(during.clock.state, 'suspicious')
  assert.equal(during.clock.reason, 'jumped-forward')
  assert.ok(Math.abs(during.clock.trustedTime - realNow()) < 2_000, 'the agent keeps real time by the monotonic clock')
  assert.equal(issued.length, 0, 'nothing issued on a suspicious clock')
  assert.equal(refusals.get('clock-suspicious'), 1200)
  assert.ok(
    during.server.postponed >= 1 && during.server.postponed <= 8,
    `server rotation postponed ${during.server.postponed} times, not once a minute`,
  )

  // C: the clock comes back; three hours pass.
  clock.jump(-YEAR)
  await minutes(180)
  assert.equal(svc.stats().clock.state, 'ok')
  // Device windows open at 4 h: exactly one renewal each in 5.5 h of real time.
  assert.deepEqual(
    devices.map((d) => d.renewals),
    Array(10).fill(1),
  )
  // Server: the postponed rotation, then every ~77 min: at most 3 in 3 h.
  const serverRotations = issued.filter((i) => i.kind === 'server').length
  assert.ok(serverRotations >= 2 && serverRotations <= 3, `${serverRotations} server rotations`)

  // D: the clock falls a year behind (an RTC-less reboot would look the same).
  const before = issued.length
  clock.jump(-YEAR)
  await minutes(30)
  assert.equal(svc.stats().clock.reason, 'behind-last-known-good')
  assert.equal(issued.length, before, 'nothing issued while behind the last known good time')
  clock.jump(YEAR)
  await minutes(1)
  assert.equal(svc.stats().clock.state, 'ok')

  assert.deepEqual(
    clockEvents.map((e) => `${e.state}:${e.reason ?? ''}`),
    ['suspicious:jumped-forward', 'ok:', 'suspicious:behind-last-known-good', 'ok:'],
    'each change is reported once',
  )

  // Every certificate is dated within [real - backdate, real + lifetime].
  for (const i of issued) {
    const c = new X509Certificate(i.pem)
    const nb = Date.parse(c.validFrom)
    const na = Date.parse(c.validTo)
    const lifetime = i.kind === 'server' ? SERVER_LIFETIME : DEVICE_LIFETIME
    assert.ok(
      nb >= i.at - BACKDATE - 1_000 && nb <= i.at,
      `${i.kind} notBefore ${c.validFrom} vs real ${new Date(i.at).toISOString()}`,
    )
    assert.ok(na <= i.at + lifetime + 1_000 && na > i.at, `${i.kind} notAfter ${c.validTo}`)
  }
})
