// GatewayCertificate at its seam: a CertificateSource that signs with a test
// CA made by openssl (the real ACME flow is tested against pebble in
// test/integration/certs/acme-*.test.ts). Failures keep the current pair.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { GatewayCertificate, type CertificateSource } from '../../../src/certs/acme/index.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { opensslRoot } from '../../helpers/openssl-ca.js'

const log = pino({ level: 'silent' })

/** Signs a certificate for the given key with a throwaway CA (openssl). */
function testCa(dir: string): CertificateSource & { calls: number; fail: Error | undefined } {
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' })
  opensslRoot({ keyFile: join(dir, 'ca.key'), certFile: join(dir, 'ca.pem'), subject: '/CN=unit CA' })
  writeFileSync(join(dir, 'ext'), 'subjectAltName=DNS:gw.unit.test\nbasicConstraints=CA:FALSE\n')
  const source = {
    calls: 0,
    fail: undefined as Error | undefined,
    async issue(o: { keyPem: string }): Promise<string> {
      source.calls++
      if (source.fail !== undefined) throw source.fail
      writeFileSync(join(dir, 'k.pem'), o.keyPem)
      run(['req', '-new', '-key', join(dir, 'k.pem'), '-out', join(dir, 'k.csr'), '-subj', '/CN=gw.unit.test'])
      run([
        'x509',
        '-req',
        '-in',
        join(dir, 'k.csr'),
        '-CA',
        join(dir, 'ca.pem'),
        '-CAkey',
        join(dir, 'ca.key'),
        '-CAcreateserial',
        '-out',
        join(dir, 'k.crt'),
        '-days',
        '1',
        '-extfile',
        join(dir, 'ext'),
      ])
      return readFileSync(join(dir, 'k.crt'), 'utf8') + readFileSync(join(dir, 'ca.pem'), 'utf8')
    },
  }
  return source
}

function gateway(dir: string, source: CertificateSource): GatewayCertificate {
  return new GatewayCertificate({
    dir: join(dir, 'acme'),
    source,
    identifiers: ['gw.unit.test'],
    renewAt: 0.667,
    maxIntervalMs: 0,
    retryMinMs: 60_000,
    retryMaxMs: 600_000,
    rotateKey: true,
    warnBeforeMs: 0,
    trustFile: join(dir, 'ca.pem'),
    logger: log,
  })
}

test('a write that fails keeps the current certificate, says EDGE_ERR_ACME_WRITE_FAILED and schedules a retry', async (t) => {
  const dir = tmpDir(t)
  const source = testCa(dir)
  const g = gateway(dir, source)
  t.after(() => g.stop())
  await g.start(AbortSignal.timeout(10_000))
  // The schedule's timers are unref'd (they never hold the process); ask for the first issuance directly.
  assert.equal(await g.renewNow(), true)
  const current = g.material()?.summary.serial
  // The candidate's file cannot be created (a directory in its place), as on a full or read-only disk.
  mkdirSync(join(dir, 'acme', 'gateway.next.pem'))
  assert.equal(await g.renewNow(), false)
  const st = g.status()
  assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_WRITE_FAILED')
  assert.equal(st.failures, 1)
  assert.equal(g.material()?.summary.serial, current)
  assert.ok(
    st.nextRenewalAt !== null && Date.parse(st.nextRenewalAt) > Date.now() + 25_000,
    'the retry waits for the backoff',
  )
})

test('concurrent requests join the attempt in flight; a refused order keeps the pair and counts failures', async (t) => {
  const dir = tmpDir(t)
  const source = testCa(dir)
  const g = gateway(dir, source)
  t.after(() => g.stop())
  await g.start(AbortSignal.timeout(10_000))
  // The schedule's timers are unref'd (they never hold the process); ask for the first issuance directly.
  assert.equal(await g.renewNow(), true)
  const before = source.calls
  const [a, b] = [g.renewNow(), g.renewNow()]
  assert.equal(a, b, 'one attempt in flight')
  assert.equal(await a, true)
  assert.equal(source.calls, before + 1)
  source.fail = new Error('urn:ietf:params:acme:error:rateLimited: too many certificates')
  const serial = g.material()?.summary.serial
  assert.equal(await g.renewNow(), false)
  assert.equal(await g.renewNow(), false)
  const st = g.status()
  assert.equal(st.failures, 2)
  assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_REFUSED')
  assert.match(st.lastError?.message ?? '', /rateLimited/)
  assert.equal(g.material()?.summary.serial, serial)
  assert.equal(st.state, 'valid')
})

test('a restart loads the promoted pair from gateway.pem and does not order again', async (t) => {
  const dir = tmpDir(t)
  const source = testCa(dir)
  const g1 = gateway(dir, source)
  await g1.start(AbortSignal.timeout(10_000))
  assert.equal(await g1.renewNow(), true)
  await g1.stop()
  const calls = source.calls
  const g2 = gateway(dir, source)
  t.after(() => g2.stop())
  await g2.start(AbortSignal.timeout(10_000))
  assert.equal(g2.material()?.summary.serial, g1.material()?.summary.serial)
  assert.equal(source.calls, calls)
  const next = g2.status().nextRenewalAt
  assert.ok(
    next !== null && Date.parse(next) > Date.now() + 3_600_000,
    'the next renewal is planned at 2/3 of the lifetime, not now',
  )
})
