// `edge-agent certs …` through the real CLI, checked with real OpenSSL:
// the local CA, factory issuance, CSR signing, an intermediate imported from
// a site PKI, revocation and the CRL, and the clock guard.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { openssl, opensslVerify } from './support.js'

function site(
  t: { after(fn: () => unknown): void },
  certs: Record<string, unknown> = {},
): { dir: string; config: string; certsDir: string } {
  const dir = tmpDir(t)
  const config = join(dir, 'site.yaml')
  writeFileSync(config, stringify({ site: { name: 'cell-2' }, dataDir: join(dir, 'data'), certs }))
  return { dir, config, certsDir: join(dir, 'data', 'certs') }
}

async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runCli(args)
}

test('certs init creates an EC P-256 root with its key 0600 in a 0700 directory', async (t) => {
  const s = site(t)
  const r = await cli(['certs', 'init', '--config', s.config])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /created local CA "edge-agent local CA \(cell-2\)"/)
  assert.equal(statSync(s.certsDir).mode & 0o777, 0o700)
  assert.equal(statSync(join(s.certsDir, 'ca.key')).mode & 0o777, 0o600)
  const text = await openssl(['x509', '-in', join(s.certsDir, 'ca.crt'), '-noout', '-text'])
  assert.match(text.stdout, /NIST CURVE: P-256/)
  assert.match(text.stdout, /CA:TRUE, pathlen:0/)
  assert.match(text.stdout, /Certificate Sign, CRL Sign/)
  const again = await cli(['certs', 'init', '--config', s.config])
  assert.equal(again.code, 1)
  assert.match(again.stderr, /EDGE_ERR_CERT_CA_EXISTS/)
})

test('certs issue writes ID.key (0600), ID.crt and ca.crt that OpenSSL verifies', async (t) => {
  const s = site(t)
  assert.equal((await cli(['certs', 'init', '--config', s.config])).code, 0)
  const out = join(s.dir, 'factory')
  const r = await cli(['certs', 'issue', 'press-7', '--out', out, '--config', s.config])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(statSync(join(out, 'press-7.key')).mode & 0o777, 0o600)
  await opensslVerify(join(out, 'ca.crt'), join(out, 'press-7.crt'))
  const cert = await openssl([
    'x509',
    '-in',
    join(out, 'press-7.crt'),
    '-noout',
    '-subject',
    '-ext',
    'extendedKeyUsage,basicConstraints',
    '-pubkey',
  ])
  assert.match(cert.stdout, /subject=CN = press-7/)
  assert.match(cert.stdout, /TLS Web Client Authentication/)
  assert.match(cert.stdout, /CA:FALSE/)
  const keyPub = await openssl(['pkey', '-in', join(out, 'press-7.key'), '-pubout'])
  assert.ok(cert.stdout.includes(keyPub.stdout.trim()), 'the key belongs to the certificate')

  const bad = await cli(['certs', 'issue', 'a/b', '--out', out, '--config', s.config])
  assert.equal(bad.code, 64)
  assert.match(bad.stderr, /must not contain '\/', '\+' or '#'/)
  const again = await cli(['certs', 'issue', 'press-7', '--out', out, '--config', s.config])
  assert.equal(again.code, 1, 'does not overwrite without --force')
  const long = await cli(['certs', 'issue', 'press-8', '--out', out, '--lifetime', '20y', '--config', s.config])
  assert.equal(long.code, 64)
  assert.match(long.stderr, /maxLifetimeSec/)
})

test('certs sign certifies an OpenSSL-made CSR for its CN, and certs list shows it with its expiry', async (t) => {
  const s = site(t)
  assert.equal((await cli(['certs', 'init', '--config', s.config])).code, 0)
  const key = join(s.dir, 'd.key')
  const csr = join(s.dir, 'd.csr')
  const req = await openssl([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    key,
    '-subj',
    '/CN=meter-3',
    '-out',
    csr,
  ])
  assert.equal(req.code, 0, req.stderr)
  const crt = join(s.dir, 'd.crt')
  const r = await cli(['certs', 'sign', csr, '--out', crt, '--lifetime', '30d', '--config', s.config])
  assert.equal(r.code, 0, r.stderr)
  await opensslVerify(join(s.certsDir, 'ca.crt'), crt)
  const dates = await openssl(['x509', '-in', crt, '-noout', '-enddate'])
  const days = (Date.parse(dates.stdout.split('=')[1] ?? '') - Date.now()) / 86_400_000
  assert.ok(days > 29.9 && days <= 30, `lifetime ${days} days`)
  const mismatch = await cli(['certs', 'sign', csr, '--id', 'other', '--config', s.config])
  assert.equal(mismatch.code, 64)

  const list = await cli(['certs', 'list', '--json', '--config', s.config])
  const rows = JSON.parse(list.stdout) as { id: string; status: string; expiresInSec: number }[]
  assert.equal(rows.length, 1)
  assert.equal(rows[0]?.id, 'meter-3')
  assert.equal(rows[0]?.status, 'valid')
  const human = await cli(['certs', 'list', '--config', s.config])
  assert.match(human.stdout, /meter-3\s+device\s+valid\s+\S+\s+29d 23h/)
})

test('certs revoke publishes a CRL under which OpenSSL rejects the device and accepts the others', async (t) => {
  const s = site(t)
  assert.equal((await cli(['certs', 'init', '--config', s.config])).code, 0)
  const out = join(s.dir, 'factory')
  for (const id of ['d1', 'd2'])
    assert.equal((await cli(['certs', 'issue', id, '--out', out, '--config', s.config])).code, 0)
  const r = await cli(['certs', 'revoke', 'd1', '--reason', 'keyCompromise', '--config', s.config])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /revoked d1 serial [0-9A-F]+/)
  const crl = join(s.certsDir, 'crl.pem')
  const v1 = await openssl([
    'verify',
    '-crl_check',
    '-CRLfile',
    crl,
    '-CAfile',
    join(out, 'ca.crt'),
    join(out, 'd1.crt'),
  ])
  assert.notEqual(v1.code, 0)
  assert.match(v1.stdout + v1.stderr, /certificate revoked/)
  await opensslVerify(join(out, 'ca.crt'), join(out, 'd2.crt'), ['-crl_check', '-CRLfile', crl])
  const text = await openssl(['crl', '-in', crl, '-noout', '-text'])
  assert.match(text.stdout, /Key Compromise/)
  assert.match(text.stdout, /X509v3 CRL Number: \n\s+2/, 'numbered, after the one written at init')
  const der = join(s.dir, 'crl.der')
  assert.equal((await cli(['certs', 'crl', '--der', '--out', der, '--config', s.config])).code, 0)
  assert.equal((await openssl(['crl', '-inform', 'DER', '-in', der, '-noout'])).code, 0)
  assert.equal((await cli(['certs', 'revoke', 'nobody', '--config', s.config])).code, 1)
})

test('an intermediate signed by a site PKI is imported; issued chains verify up to the site root', async (t) => {
  const s = site(t)
  // The site's root CA, made with OpenSSL.
  const rootKey = join(s.dir, 'root.key')
  const rootCrt = join(s.dir, 'root.crt')
  const root = await openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    rootKey,
    '-out',
    rootCrt,
    '-days',
    '3650',
    '-subj',
    '/O=Plant A/CN=Plant A Root CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  assert.equal(root.code, 0, root.stderr)
  // The gateway keeps its CA key and hands out a CSR.
  const csr = join(s.dir, 'gw.csr')
  const init = await cli(['certs', 'init', '--csr', csr, '--config', s.config])
  assert.equal(init.code, 0, init.stderr)
  assert.equal(statSync(join(s.certsDir, 'ca.pending.key')).mode & 0o777, 0o600)
  const ext = join(s.dir, 'ext.cnf')
  writeFileSync(
    ext,
    'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
  )
  const gwCrt = join(s.dir, 'gw.crt')
  const signed = await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    rootCrt,
    '-CAkey',
    rootKey,
    '-CAcreateserial',
    '-days',
    '365',
    '-extfile',
    ext,
    '-out',
    gwCrt,
  ])
  assert.equal(signed.code, 0, signed.stderr)
  // A leaf is not a CA: refused.
  const notCa = await cli([
    'certs',
    'import-ca',
    '--cert',
    rootCrt,
    '--key',
    rootKey,
    '--chain',
    gwCrt,
    '--config',
    s.config,
  ])
  assert.equal(notCa.code, 1)
  const imported = await cli(['certs', 'import-ca', '--cert', gwCrt, '--chain', rootCrt, '--config', s.config])
  assert.equal(imported.code, 0, imported.stderr)
  assert.match(imported.stdout, /issued by\s+O=Plant A, CN=Plant A Root CA/)

  const out = join(s.dir, 'factory')
  assert.equal((await cli(['certs', 'issue', 'press-9', '--out', out, '--config', s.config])).code, 0)
  // The bundle handed to devices holds the intermediate and the root.
  assert.equal((readFileSync(join(out, 'ca.crt'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length, 2)
  await opensslVerify(join(out, 'ca.crt'), join(out, 'press-9.crt'))
  await opensslVerify(rootCrt, join(out, 'press-9.crt'), ['-untrusted', join(s.certsDir, 'ca.crt')])
  // A CRL from the intermediate works under the site root too.
  assert.equal((await cli(['certs', 'revoke', 'press-9', '--config', s.config])).code, 0)
  const v = await openssl([
    'verify',
    '-crl_check',
    '-CRLfile',
    join(s.certsDir, 'crl.pem'),
    '-CAfile',
    rootCrt,
    '-untrusted',
    join(s.certsDir, 'ca.crt'),
    join(out, 'press-9.crt'),
  ])
  assert.match(v.stdout + v.stderr, /certificate revoked/)
})

test('nothing is issued while the clock is behind the last known good time, until trust-clock', async (t) => {
  const s = site(t)
  assert.equal((await cli(['certs', 'init', '--config', s.config])).code, 0)
  // As if the agent had seen a time a year ahead of this (wrong) system clock.
  writeFileSync(join(s.certsDir, 'clock.json'), JSON.stringify({ lastKnownGood: Date.now() + 365 * 86_400_000 }))
  const out = join(s.dir, 'factory')
  const r = await cli(['certs', 'issue', 'd1', '--out', out, '--config', s.config])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /EDGE_ERR_CERT_CLOCK_SUSPICIOUS/)
  assert.equal((await cli(['certs', 'trust-clock', '--config', s.config])).code, 0)
  assert.equal((await cli(['certs', 'issue', 'd1', '--out', out, '--config', s.config])).code, 0)
})
