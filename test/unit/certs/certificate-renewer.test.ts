// CertificateRenewer's scheduling on a fake clock (test/unit/certs/fake-clock.ts):
// the files are real (a temp dir), the protocol and the installation are
// stubs that record their calls, the link is a plain EventEmitter.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { CertificateRenewer, renewalTime, retryDelay, type RenewedCertificate } from '../../../src/certs/index.js'
import { caSigner, certPem, createSelfSignedCa, generateKeyPair, newSerial, signLeaf } from '../../../src/certs/x509.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import type { Scope } from '../../helpers/scope.js'

const T0 = Date.parse('2030-01-01T00:00:00.000Z')
const SEC = 1000

class FakeLink extends EventEmitter {
  connected = false
  up(): void {
    this.connected = true
    this.emit('connected')
  }
}

interface Issued {
  readonly pem: string
  readonly keyPem: string
  readonly serial: string
}

async function ca() {
  const key = await generateKeyPair()
  const cert = await createSelfSignedCa({
    key,
    name: { cn: 'test CA' },
    notBefore: T0 - 86_400_000,
    notAfter: T0 + 86_400_000 * 365,
  })
  const pem = certPem(cert)
  return { pem, signer: await caSigner(pem, key, []) }
}

async function leaf(c: Awaited<ReturnType<typeof ca>>, notBefore: number, notAfter: number): Promise<Issued> {
  const key = await generateKeyPair()
  const serial = newSerial()
  const cert = await signLeaf({
    ca: c.signer,
    subject: { cn: 'l2-gw' },
    publicKey: key.publicKey,
    serial,
    notBefore,
    notAfter,
    profile: 'client',
  })
  return { pem: certPem(cert), keyPem: key.privateKeyPem, serial }
}

function logCollector() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = []
  const logger = pino(
    { level: 'debug' },
    { write: (s: string) => void lines.push(JSON.parse(s) as (typeof lines)[number]) },
  )
  return { logger, lines, has: (msg: string) => lines.some((l) => l.msg === msg) }
}

async function setup(
  t: Scope,
  lifetimeMs: number,
  opts: { startAt?: number; fail?: (n: number) => Error | undefined } = {},
) {
  const authority = await ca()
  const dir = tmpDir(t)
  const files = { cert: join(dir, 'l2.crt'), key: join(dir, 'l2.key'), ca: join(dir, 'ca.crt') }
  const first = await leaf(authority, T0, T0 + lifetimeMs)
  writeFileSync(files.cert, first.pem)
  writeFileSync(files.key, first.keyPem)
  writeFileSync(files.ca, authority.pem)
  const clock = new FakeClock(opts.startAt ?? T0)
  const link = new FakeLink()
  const log = logCollector()
  const renewCalls: number[] = []
  const renewer = new CertificateRenewer({
    upstream: 'l3',
    files,
    atFraction: 0.5,
    retryMinMs: 1 * SEC,
    retryMaxMs: 8 * SEC,
    link,
    clock,
    random: () => 0,
    logger: log.logger,
    renew: async (current) => {
      renewCalls.push(clock.now())
      assert.equal(current.id, 'l2-gw')
      const err = opts.fail?.(renewCalls.length)
      if (err !== undefined) throw err
      const next = await leaf(authority, clock.now(), clock.now() + lifetimeMs)
      return {
        certPem: next.pem,
        keyPem: next.keyPem,
        serial: next.serial,
        notBefore: new Date(clock.now()).toISOString(),
        notAfter: new Date(clock.now() + lifetimeMs).toISOString(),
        keyRotated: true,
      } satisfies RenewedCertificate
    },
    install: async (r) => {
      writeFileSync(files.key, r.keyPem)
      writeFileSync(files.cert, r.certPem)
    },
  })
  t.after(() => renewer.stop())
  return { renewer, clock, link, log, files, renewCalls, first }
}

test('renewalTime is atFraction of the lifetime plus up to 1/20 of it, never past 95 %', () => {
  assert.equal(renewalTime(0, 1000, 0.5, 0), 500)
  assert.equal(renewalTime(0, 1000, 0.5, 0.999), 500 + 49.95)
  assert.equal(renewalTime(0, 1000, 0.95, 0.5), 950)
})

test('retryDelay doubles from retryMinMs up to retryMaxMs, and follows the upstream hint when there is one', () => {
  const o = { retryMinMs: 1000, retryMaxMs: 8000 }
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((n) => retryDelay(n, o, 0.5)),
    [1000, 2000, 4000, 8000, 8000],
  )
  assert.equal(retryDelay(1, o, 0), 800, '-20 % jitter')
  assert.equal(retryDelay(3, o, 0.5, 42_000), 42_500, 'retryAfterSec + up to 1 s')
})

test('renews at atFraction of the lifetime, only then, and schedules the next from the installed file', async (t) => {
  const s = await setup(t, 100 * SEC)
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  assert.equal(s.renewer.status().nextRenewalAt, new Date(T0 + 50 * SEC).toISOString())
  await s.clock.advance(49 * SEC)
  assert.equal(s.renewCalls.length, 0, 'not before 50 %')
  await s.clock.advance(1 * SEC)
  assert.deepEqual(s.renewCalls, [T0 + 50 * SEC])
  const st = s.renewer.status()
  assert.equal(st.state, 'scheduled')
  assert.equal(st.renewals, 1)
  assert.notEqual(st.serial, s.first.serial)
  assert.equal(st.notAfter, new Date(T0 + 150 * SEC).toISOString())
  assert.equal(st.nextRenewalAt, new Date(T0 + 100 * SEC).toISOString(), 'half of the new certificate')
  assert.equal(st.lastRenewalAt, new Date(T0 + 50 * SEC).toISOString())
  assert.ok(s.log.has('upstream client certificate renewed'))
  assert.notEqual(readFileSync(s.files.cert, 'utf8'), s.first.pem)
  await s.clock.advance(50 * SEC)
  assert.equal(s.renewCalls.length, 2)
})

test('renews at once when started past atFraction', async (t) => {
  const s = await setup(t, 100 * SEC, { startAt: T0 + 70 * SEC })
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  await s.clock.advance(0)
  assert.deepEqual(s.renewCalls, [T0 + 70 * SEC])
})

test('waits for the upstream link when due while it is down', async (t) => {
  const s = await setup(t, 100 * SEC)
  await s.renewer.start(new AbortController().signal)
  await s.clock.advance(60 * SEC)
  assert.equal(s.renewCalls.length, 0)
  assert.equal(s.renewer.status().state, 'due')
  s.link.up()
  await s.clock.advance(0)
  await waitUntil(() => s.renewer.status().renewals === 1)
  assert.deepEqual(s.renewCalls, [T0 + 60 * SEC])
})

test('retries with exponential backoff after failures, then succeeds; lastError is kept until then', async (t) => {
  const s = await setup(t, 100 * SEC, {
    fail: (n) => (n <= 3 ? Object.assign(new Error('no reply'), { code: 'EDGE_ERR_CERT_RENEWAL_FAILED' }) : undefined),
  })
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  await s.clock.advance(50 * SEC)
  assert.equal(s.renewer.status().state, 'retrying')
  assert.equal(s.renewer.status().lastError?.code, 'EDGE_ERR_CERT_RENEWAL_FAILED')
  assert.ok(s.log.has('upstream certificate renewal failed, retrying'))
  await s.clock.advance(10 * SEC)
  // 50 s, then +0.8 s, +1.6 s, +3.2 s (random 0: -20 %)
  assert.deepEqual(
    s.renewCalls.map((at) => at - T0),
    [50_000, 50_800, 52_400, 55_600],
  )
  const st = s.renewer.status()
  assert.equal(st.renewals, 1)
  assert.equal(st.failures, 0)
  assert.equal(st.lastError, null)
})

test("follows the upstream's retryAfterSec when refused as too early", async (t) => {
  const s = await setup(t, 100 * SEC, {
    fail: (n) =>
      n === 1
        ? Object.assign(new Error('renewal opens later'), { code: 'EDGE_ERR_CERT_RENEWAL_REFUSED', retryAfterSec: 17 })
        : undefined,
  })
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  await s.clock.advance(70 * SEC)
  assert.deepEqual(
    s.renewCalls.map((at) => at - T0),
    [50_000, 67_000],
  )
})

test('an expired certificate is an error naming the file, and nothing is attempted', async (t) => {
  const s = await setup(t, 100 * SEC, { startAt: T0 + 101 * SEC })
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  await s.clock.advance(30 * SEC)
  assert.equal(s.renewCalls.length, 0)
  assert.equal(s.renewer.status().state, 'expired')
  const line = s.log.lines.find(
    (l) => l.level === 50 && String(l.msg).startsWith('upstream client certificate has expired'),
  )
  assert.ok(line, 'error log')
  assert.equal(line['certFile'], s.files.cert)
  assert.equal(line['notAfter'], new Date(T0 + 100 * SEC).toISOString())
})

test('stop() cancels the schedule and is idempotent', async (t) => {
  const s = await setup(t, 100 * SEC)
  s.link.up()
  await s.renewer.start(new AbortController().signal)
  assert.equal(s.clock.pending(), 1)
  await s.renewer.stop()
  await s.renewer.stop()
  assert.equal(s.clock.pending(), 0)
  await s.clock.advance(100 * SEC)
  assert.equal(s.renewCalls.length, 0)
  assert.equal(s.renewer.status().state, 'stopped')
})

/** For work that finishes on real I/O (file reads) after a fake-clock step. */
async function waitUntil(check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met')
    await new Promise((r) => setImmediate(r))
  }
}
