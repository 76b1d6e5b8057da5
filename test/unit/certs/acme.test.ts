// The ACME pieces that need no CA: renewal timing (with ACME Renewal
// Information), backoff, and the checks before promotion.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import {
  JITTER_FRACTION,
  ariCertId,
  issuedProblems,
  nextRenewal,
  parseRenewalInfo,
  acmeRetryDelay,
} from '../../../src/certs/acme/index.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { opensslRoot } from '../../helpers/openssl-ca.js'

const DAY = 86_400_000
const T0 = Date.parse('2026-01-01T00:00:00Z')
const base = { notBefore: T0, notAfter: T0 + 90 * DAY, promotedAt: T0, renewAt: 0.667, maxIntervalMs: 0, now: T0 }

test('renews at renewAt of the lifetime, jitter only bringing it forward by at most 1/20', () => {
  const lifetime = 90 * DAY
  assert.equal(nextRenewal({ ...base, random: () => 0 }), T0 + lifetime * 0.667)
  const earliest = nextRenewal({ ...base, random: () => 0.999999 })
  assert.ok(earliest < T0 + lifetime * 0.667)
  assert.ok(earliest >= T0 + lifetime * (0.667 - JITTER_FRACTION))
})

test('maxIntervalMs renews sooner than the lifetime would', () => {
  const at = nextRenewal({ ...base, maxIntervalMs: 7 * DAY, random: () => 0 })
  assert.equal(at, T0 + 7 * DAY)
})

test('an ARI window brings the renewal forward, inside the window, and never later', () => {
  const ari = { start: T0 + 10 * DAY, end: T0 + 12 * DAY }
  for (const r of [0, 0.5, 0.999]) {
    const at = nextRenewal({ ...base, ari, random: () => r })
    assert.ok(at >= ari.start && at <= ari.end, `inside the window for random ${r}`)
  }
  const late = { start: T0 + 80 * DAY, end: T0 + 85 * DAY }
  assert.equal(nextRenewal({ ...base, ari: late, random: () => 0 }), T0 + 90 * DAY * 0.667)
  // A window in the past means now.
  assert.equal(nextRenewal({ ...base, now: T0 + 20 * DAY, ari, random: () => 0 }), T0 + 20 * DAY)
})

test('never schedules in the past', () => {
  assert.equal(nextRenewal({ ...base, now: T0 + 70 * DAY, random: () => 0 }), T0 + 70 * DAY)
})

test('retry delays double from min to max, with jitter in the upper half', () => {
  assert.equal(
    acmeRetryDelay(1, 1000, 60_000, () => 0),
    500,
  )
  assert.equal(
    acmeRetryDelay(1, 1000, 60_000, () => 1),
    1000,
  )
  assert.equal(
    acmeRetryDelay(3, 1000, 60_000, () => 1),
    4000,
  )
  assert.equal(
    acmeRetryDelay(50, 1000, 60_000, () => 1),
    60_000,
  )
  assert.ok(
    acmeRetryDelay(50, 1000, 60_000, () => 0) >= 30_000,
    'after an outage the cap is not hammered with short retries',
  )
})

test('the ARI certificate id is computed as in RFC 9773 §4.1', async () => {
  // The RFC's example: AKI keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial
  // 00:87:65:43:21.
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0087654321',
    subject: 'CN=leaf',
    issuer: 'CN=ca',
    notBefore: new Date(T0),
    notAfter: new Date(T0 + DAY),
    signingAlgorithm: alg,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: [new x509.AuthorityKeyIdentifierExtension('69885b6b87464041e1b37b847ba0ae2cde01c8d4')],
  })
  assert.equal(ariCertId(cert.toString('pem')), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE')
})

test('parses a renewalInfo answer and its Retry-After; refuses malformed ones', () => {
  const info = parseRenewalInfo(
    {
      suggestedWindow: { start: '2026-01-03T00:00:00Z', end: '2026-01-04T00:00:00Z' },
      explanationURL: 'https://ca.example/why',
    },
    '21600',
    T0,
  )
  assert.deepEqual(info, {
    window: { start: T0 + 2 * DAY, end: T0 + 3 * DAY },
    explanationUrl: 'https://ca.example/why',
    retryAt: T0 + 21_600_000,
  })
  assert.equal(
    parseRenewalInfo(
      { suggestedWindow: { start: '2026-01-04T00:00:00Z', end: '2026-01-03T00:00:00Z' } },
      undefined,
      T0,
    ),
    undefined,
  )
  assert.equal(parseRenewalInfo({ suggestedWindow: { start: 'soon' } }, undefined, T0), undefined)
  assert.equal(parseRenewalInfo('<html>', undefined, T0), undefined)
})

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' })
}

/** root -> leaf for `name`, made with openssl; returns PEMs. */
function chain(dir: string, name: string, days = 2): { root: string; leaf: string; key: string; otherKey: string } {
  opensslRoot({ keyFile: join(dir, 'ca.key'), certFile: join(dir, 'ca.pem'), subject: '/CN=test root' })
  openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, 'leaf.key'),
    '-out',
    join(dir, 'leaf.csr'),
    '-subj',
    `/CN=${name}`,
  ])
  writeFileSync(join(dir, 'ext'), `subjectAltName=DNS:${name}\nbasicConstraints=CA:FALSE\n`)
  openssl([
    'x509',
    '-req',
    '-in',
    join(dir, 'leaf.csr'),
    '-CA',
    join(dir, 'ca.pem'),
    '-CAkey',
    join(dir, 'ca.key'),
    '-CAcreateserial',
    '-out',
    join(dir, 'leaf.pem'),
    '-days',
    String(days),
    '-extfile',
    join(dir, 'ext'),
  ])
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'other.key')])
  const r = (f: string) => readFileSync(join(dir, f), 'utf8')
  return { root: r('ca.pem'), leaf: r('leaf.pem'), key: r('leaf.key'), otherKey: r('other.key') }
}

test('a good chain, key and identifiers pass; each kind of defect is named', (t) => {
  const c = chain(tmpDir(t), 'gw.edge.test')
  const now = Date.now()
  const ok = {
    chainPem: c.leaf + c.root,
    keyPem: c.key,
    identifiers: ['gw.edge.test'],
    trustPem: c.root,
    now,
    toleranceMs: 60_000,
  }
  assert.deepEqual(issuedProblems(ok), [])
  assert.match(issuedProblems({ ...ok, keyPem: c.otherKey }).join(), /not for our key/)
  assert.match(
    issuedProblems({ ...ok, identifiers: ['gw.edge.test', 'other.edge.test'] }).join(),
    /identifier other\.edge\.test is not in the certificate/,
  )
  assert.match(issuedProblems({ ...ok, now: now + 10 * DAY }).join(), /expired at/)
  assert.match(issuedProblems({ ...ok, chainPem: c.root + c.leaf }).join(), /not signed by element 1|the leaf is a CA/)
  const other = chain(tmpDir(t), 'x.edge.test')
  assert.match(issuedProblems({ ...ok, trustPem: other.root }).join(), /does not lead to a configured CA/)
  assert.match(
    issuedProblems({ ...ok, chainPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }).join(),
    /does not parse/,
  )
  assert.deepEqual(issuedProblems({ ...ok, chainPem: 'not pem' }), ['no certificate in the download'])
})
