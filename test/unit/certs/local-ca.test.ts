// LocalCa: issuance dates, identities, state files, revocation and CRL, with a
// fake clock. (Chains are checked with real OpenSSL in test/integration/certs.)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync, readdirSync, chmodSync, readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import { CertsError, ClockGuard, LocalCa, createCsr, generateKeyPair, parseCsr } from '../../../src/certs/index.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const HOUR = 3_600_000
const DAY = 24 * HOUR

async function setup(t: { after(fn: () => unknown): void }, opts: { caLifetimeMs?: number } = {}) {
  const dir = join(tmpDir(t), 'certs')
  const clock = new FakeClock(T0)
  await LocalCa.init(dir, { name: 'unit CA', lifetimeMs: opts.caLifetimeMs ?? 365 * DAY, now: T0 })
  const guard = new ClockGuard({ clock, file: join(dir, 'clock.json'), toleranceMs: 5 * 60_000, maxForwardJumpMs: DAY })
  await guard.load()
  const ca = new LocalCa({ dir, guard, backdateMs: HOUR, crlValidityMs: DAY })
  await ca.load()
  return { dir, clock, guard, ca }
}

test('init writes a P-256 CA with key 0600 in a 0700 directory', async (t) => {
  const { dir, ca } = await setup(t)
  assert.equal(statSync(dir).mode & 0o777, 0o700)
  assert.equal(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600)
  const c = new X509Certificate(ca.signer.certPem)
  assert.equal(c.ca, true)
  assert.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
  await assert.rejects(
    LocalCa.init(dir, { name: 'again', lifetimeMs: DAY, now: T0 }),
    (e: CertsError) => e.code === 'EDGE_ERR_CERT_CA_EXISTS',
  )
})

test('a device certificate is backdated, lasts its lifetime and names the device', async (t) => {
  const { ca } = await setup(t)
  const key = await generateKeyPair()
  const cert = await ca.issue({ id: 'press-7', profile: 'client', publicKey: key.publicKey, lifetimeMs: 7 * DAY })
  assert.equal(cert.notBefore, T0 - HOUR)
  assert.equal(cert.notAfter, T0 + 7 * DAY)
  const c = new X509Certificate(cert.certPem)
  assert.equal(c.subject, 'CN=press-7')
  assert.equal(c.ca, false)
  assert.ok(c.checkIssued(new X509Certificate(ca.signer.certPem)))
  assert.ok(c.verify(new X509Certificate(ca.signer.certPem).publicKey))
  assert.deepEqual(c.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'EKU clientAuth')
  assert.equal(ca.newest('press-7')?.serial, cert.serial)
  assert.ok(readdirSync(ca.paths.issuedDir).includes(`${cert.serial}.pem`))
})

test('a leaf never outlives its CA, and nothing is issued once the CA has expired', async (t) => {
  const { ca, clock } = await setup(t, { caLifetimeMs: 10 * DAY })
  const key = await generateKeyPair()
  const cert = await ca.issue({ id: 'd', profile: 'client', publicKey: key.publicKey, lifetimeMs: 30 * DAY })
  assert.equal(cert.notAfter, ca.signer.notAfter)
  await clock.advance(11 * DAY)
  await assert.rejects(
    ca.issue({ id: 'd', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY }),
    (e: CertsError) => e.code === 'EDGE_ERR_CERT_ISSUE_FAILED',
  )
})

test('nothing is issued while the clock is suspicious', async (t) => {
  const { ca, clock } = await setup(t)
  const key = await generateKeyPair()
  await ca.issue({ id: 'd', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY }) // LKG = T0
  clock.jump(-30 * DAY)
  await assert.rejects(
    ca.issue({ id: 'd', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY }),
    (e: CertsError) => e.code === 'EDGE_ERR_CERT_CLOCK_SUSPICIOUS',
  )
})

test('device ids that cannot name one topic level are refused', async (t) => {
  const { ca } = await setup(t)
  const key = await generateKeyPair()
  for (const id of ['a/b', 'x+', '#', '', 'nul\u0000']) {
    await assert.rejects(
      ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY }),
      (e: CertsError) => e.code === 'EDGE_ERR_CERT_IDENTITY_INVALID',
      id,
    )
  }
})

test('a CSR is accepted only with a valid self-signature (proof of possession)', async () => {
  const key = await generateKeyPair()
  const pem = await createCsr({ key, cn: 'd1' })
  const parsed = await parseCsr(pem)
  assert.equal(parsed.cn, 'd1')
  assert.equal(parsed.keyKind, 'ec-p256')
  // Flip one byte of the signature.
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64')
  der[der.length - 3] = (der[der.length - 3] ?? 0) ^ 0xff
  await assert.rejects(parseCsr(der), (e: CertsError) => e.code === 'EDGE_ERR_CERT_CSR_INVALID')
  await assert.rejects(parseCsr('not a csr'), (e: CertsError) => e.code === 'EDGE_ERR_CERT_CSR_INVALID')
})

test('revoking a device revokes its unexpired certificates and lists them in a fresh CRL', async (t) => {
  const { ca, clock } = await setup(t)
  const key = await generateKeyPair()
  const a = await ca.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY })
  await clock.advance(HOUR)
  const b = await ca.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY })
  const other = await ca.issue({ id: 'd2', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY })
  const revoked = await ca.revoke({ id: 'd1', reason: 'keyCompromise' })
  assert.deepEqual(revoked.map((r) => r.serial).sort(), [a.serial, b.serial].sort())
  assert.equal(ca.isRevoked(a.serial), true)
  assert.equal(ca.isRevoked(other.serial), false)
  const crl = new x509.X509Crl(readFileSync(ca.paths.crlDer))
  assert.deepEqual(
    crl.entries.map((e) => e.serialNumber.toUpperCase().replace(/^0+/, '')).sort(),
    [a.serial, b.serial].sort(),
  )
  assert.equal(crl.nextUpdate?.getTime(), Math.floor((T0 + HOUR + DAY) / 1000) * 1000)
  assert.ok(await crl.verify({ publicKey: ca.signer.cert.publicKey }))
  assert.match(readFileSync(ca.paths.crlPem, 'utf8'), /^-----BEGIN X509 CRL-----/)
  await assert.rejects(ca.revoke({ id: 'nobody' }), (e: CertsError) => e.code === 'EDGE_ERR_CERT_NOT_FOUND')
})

test('another process sees revocations and issued certificates through the state directory', async (t) => {
  const { ca, dir, guard } = await setup(t)
  const key = await generateKeyPair()
  const cert = await ca.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: DAY })
  const cli = new LocalCa({ dir, guard, backdateMs: HOUR, crlValidityMs: DAY })
  await cli.load()
  await cli.revoke({ id: 'd1' })
  const added = await ca.reloadRevocations()
  assert.deepEqual(
    added.map((r) => r.serial),
    [cert.serial],
  )
  assert.deepEqual(await ca.reloadRevocations(), [], 'reported once')
})

test('a CA key readable by others is refused on load', async (t) => {
  const { dir, guard } = await setup(t)
  chmodSync(join(dir, 'ca.key'), 0o644)
  const ca = new LocalCa({ dir, guard, backdateMs: HOUR, crlValidityMs: DAY })
  await assert.rejects(ca.load(), (e: CertsError) => e.code === 'EDGE_ERR_CERT_STATE')
})

test('a missing CA is a clear error naming the command to run', async (t) => {
  const dir = join(tmpDir(t), 'certs')
  const guard = new ClockGuard({ clock: new FakeClock(T0) })
  const ca = new LocalCa({ dir, guard, backdateMs: HOUR, crlValidityMs: DAY })
  await assert.rejects(
    ca.load(),
    (e: CertsError) => e.code === 'EDGE_ERR_CERT_CA_MISSING' && /certs init/.test(e.message),
  )
})
