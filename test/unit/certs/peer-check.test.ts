// checkPeer (src/local-broker/tls.ts): what a device certificate must pass
// right after the handshake, judged against the agent's trusted clock.
// Glossary: "socket" = a stand-in with the three TLSSocket members checkPeer reads.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { checkPeer, certificateDeviceId, type PeerCheck } from '../../../src/local-broker/tls.js'
import {
  caSigner,
  certPem,
  createSelfSignedCa,
  generateKeyPair,
  newSerial,
  signLeaf,
  type CaSigner,
} from '../../../src/certs/x509.js'

const NOW = Date.UTC(2026, 10, 25, 12, 0, 0)
const DAY = 86_400_000
let ca: CaSigner
let other: CaSigner

async function makeCa(cn: string): Promise<CaSigner> {
  const key = await generateKeyPair()
  const cert = await createSelfSignedCa({ key, name: { cn }, notBefore: NOW - 10 * DAY, notAfter: NOW + 1000 * DAY })
  return caSigner(certPem(cert), key, [])
}

async function leaf(
  signer: CaSigner,
  o: { cn?: string; from?: number; to?: number; profile?: 'client' | 'server'; dns?: string[] } = {},
): Promise<X509Certificate> {
  const key = await generateKeyPair()
  const c = await signLeaf({
    ca: signer,
    subject: { cn: o.cn ?? 'd1' },
    publicKey: key.publicKey,
    serial: newSerial(),
    notBefore: o.from ?? NOW - DAY,
    notAfter: o.to ?? NOW + DAY,
    profile: o.profile ?? 'client',
    dnsNames: o.dns ?? [],
  })
  return new X509Certificate(certPem(c))
}

function socket(cert: X509Certificate | undefined, authorizationError?: string): TLSSocket {
  return {
    getPeerX509Certificate: () => cert,
    authorized: authorizationError === undefined,
    // At run time Node sets the OpenSSL code as a string (its typings say Error).
    authorizationError: authorizationError ?? null,
  } as unknown as TLSSocket
}

function check(s: TLSSocket, o: { now?: number; revoked?: string[]; required?: boolean } = {}): PeerCheck {
  return checkPeer(s, {
    requireClientCert: o.required ?? true,
    anchors: [new X509Certificate(ca.certPem)],
    isRevoked: (serial) => (o.revoked ?? []).includes(serial),
    now: o.now ?? NOW,
  })
}

const reason = (p: PeerCheck) => (p.ok ? 'ok' : p.reason)

before(async () => {
  ca = await makeCa('local CA')
  other = await makeCa('other CA')
})

test('a certificate from the local CA passes; none at all only where optional', async () => {
  assert.equal(reason(check(socket(await leaf(ca)))), 'ok')
  assert.equal(reason(check(socket(undefined))), 'no-certificate')
  assert.equal(reason(check(socket(undefined), { required: false })), 'ok')
})

test('refuses foreign, CA, server and unverifiable certificates', async () => {
  assert.equal(reason(check(socket(await leaf(other)))), 'untrusted-certificate')
  assert.equal(reason(check(socket(new X509Certificate(ca.certPem)))), 'untrusted-certificate', 'the CA itself')
  assert.equal(
    reason(check(socket(await leaf(ca, { profile: 'server' })))),
    'untrusted-certificate',
    'EKU serverAuth only',
  )
  assert.equal(reason(check(socket(await leaf(ca), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'))), 'untrusted-certificate')
})

test('refuses a revoked serial', async () => {
  const c = await leaf(ca)
  assert.equal(reason(check(socket(c), { revoked: [c.serialNumber.replace(/^0+/, '')] })), 'revoked')
})

test('dates are judged by the trusted clock, not by the wall clock OpenSSL read', async () => {
  const c = await leaf(ca)
  // The wall clock jumped a year: OpenSSL says expired, the trusted time says fine.
  assert.equal(reason(check(socket(c, 'CERT_HAS_EXPIRED'))), 'ok')
  assert.equal(reason(check(socket(c, 'CERT_NOT_YET_VALID'))), 'ok')
  // Really expired, or not yet valid, by the trusted time.
  assert.equal(reason(check(socket(c, 'CERT_HAS_EXPIRED'), { now: NOW + 2 * DAY })), 'expired')
  assert.equal(
    reason(check(socket(await leaf(ca, { from: NOW + DAY, to: NOW + 2 * DAY }), 'CERT_NOT_YET_VALID'))),
    'not-yet-valid',
  )
  // A date error does not excuse a foreign issuer (OpenSSL reports only its last error).
  assert.equal(reason(check(socket(await leaf(other), 'CERT_HAS_EXPIRED'))), 'untrusted-certificate')
})

test('the client id must be the CN or, in cn-or-san mode, a DNS SAN; empty takes the CN', async () => {
  const c = await leaf(ca, { cn: 'press-7', dns: ['press-7.plant.local'] })
  const id = (clientId: string, mode: 'cn' | 'cn-or-san') => {
    const r = certificateDeviceId(c, clientId, mode, 128)
    return r.ok ? r.id : r.reason
  }
  assert.equal(id('press-7', 'cn'), 'press-7')
  assert.equal(id('', 'cn'), 'press-7')
  assert.equal(id('press-7.plant.local', 'cn'), 'identity-mismatch')
  assert.equal(id('press-7.plant.local', 'cn-or-san'), 'press-7.plant.local')
  assert.equal(id('press-8', 'cn-or-san'), 'identity-mismatch')
  const slashy = await leaf(ca, { cn: 'a/b' })
  const r = certificateDeviceId(slashy, 'a/b', 'cn', 128)
  assert.equal(r.ok ? 'ok' : r.reason, 'identity-invalid')
})
