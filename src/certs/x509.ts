// X.509 building blocks: key pairs, CA and leaf certificates, CSRs and CRLs.
// Node's crypto can parse and verify certificates but not create them, so the
// DER is built with @peculiar/x509 over Node's WebCrypto; everything that
// only reads a certificate uses node:crypto's X509Certificate (faster, and the
// same parser the TLS stack uses).
//
// Invariants:
// - Every function here is pure apart from randomness (keys, serials): dates
//   are passed in, never read from the clock, so callers decide what time it is.
// - Serial numbers are 16 random bytes, positive, with no leading zero byte,
//   and are handled everywhere as upper-case hex without leading zeros: the
//   form node:crypto and the TLS peer certificate report.
// - Leaf certificates never carry CA:TRUE and always carry SKI/AKI, so
//   `openssl verify` and chain builders link them to the issuing CA.
import {
  webcrypto,
  createPrivateKey,
  createPublicKey,
  X509Certificate as NodeX509,
  randomBytes,
  type KeyObject,
} from 'node:crypto'
import * as x509 from '@peculiar/x509'
import { CertsError } from './errors.js'

// The WebCrypto types come from node:crypto (the project compiles without the DOM lib).
export type CryptoKey = webcrypto.CryptoKey
type Crypto = webcrypto.Crypto
type Algorithm = webcrypto.Algorithm
type EcdsaParams = webcrypto.EcdsaParams
type EcKeyGenParams = webcrypto.EcKeyGenParams
type EcKeyImportParams = webcrypto.EcKeyImportParams
type RsaHashedImportParams = webcrypto.RsaHashedImportParams

// @peculiar/x509 finds globalThis.crypto on Node 20 by itself; being explicit
// keeps it independent of what other users of the library (acme-client) set.
const crypto: Crypto = webcrypto
x509.cryptoProvider.set(crypto as never)

export type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa'

/** A private key usable for signing, with the algorithm parameters it needs. */
export interface SigningKey {
  readonly privateKey: CryptoKey
  readonly publicKey: CryptoKey
  readonly kind: KeyKind
  readonly signingAlgorithm: EcdsaParams | Algorithm
}

/** The issuing CA as the signer sees it. */
export interface CaSigner {
  readonly key: SigningKey
  readonly cert: x509.X509Certificate
  readonly certPem: string
  /** Issuers above the local CA (intermediates, root), nearest first; empty for a self-signed root. */
  readonly chainPem: readonly string[]
  /** Hex key identifier of the CA (its SKI), used as AKI in what it signs. */
  readonly keyId: string
  readonly notBefore: number
  readonly notAfter: number
}

export interface CertSummary {
  readonly serial: string
  /** Subject common name; '' if none. */
  readonly cn: string
  readonly subject: string
  readonly issuer: string
  readonly notBefore: number
  readonly notAfter: number
  readonly fingerprint256: string
  readonly isCa: boolean
  /** DNS, IP and URI subject alternative names as `type:value`. */
  readonly sans: readonly string[]
}

const EC_P256: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }

/** New EC P-256 key pair, exportable (the caller decides where the private key goes). */
export async function generateKeyPair(): Promise<SigningKey & { readonly privateKeyPem: string }> {
  const pair = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', pair.privateKey)
  return {
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    kind: 'ec-p256',
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    privateKeyPem: toPem(Buffer.from(pkcs8), 'PRIVATE KEY'),
  }
}

/** Imports a PEM private key (PKCS#8, SEC1 or PKCS#1): EC P-256/P-384 or RSA >= 2048 bits. */
export async function importPrivateKey(pem: string): Promise<SigningKey> {
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (err) {
    throw new CertsError('EDGE_ERR_CERT_CA_INVALID', 'private key does not parse', { cause: err })
  }
  const kind = keyKind(key)
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' })
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' })
  const params = importParams(kind)
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, params, false, ['sign'])
  const publicKey = await crypto.subtle.importKey('spki', spki, params, true, ['verify'])
  return { privateKey, publicKey, kind, signingAlgorithm: signingParams(kind) }
}

function keyKind(key: KeyObject): KeyKind {
  const details = key.asymmetricKeyDetails
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'prime256v1') return 'ec-p256'
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'secp384r1') return 'ec-p384'
  if (key.asymmetricKeyType === 'rsa' && (details?.modulusLength ?? 0) >= 2048) return 'rsa'
  throw new CertsError(
    'EDGE_ERR_CERT_CA_INVALID',
    `unsupported key ${key.asymmetricKeyType ?? '?'} ${details?.namedCurve ?? details?.modulusLength ?? ''}: use EC P-256, EC P-384 or RSA >= 2048`,
  )
}

function importParams(kind: KeyKind): EcKeyImportParams | RsaHashedImportParams {
  switch (kind) {
    case 'ec-p256':
      return { name: 'ECDSA', namedCurve: 'P-256' }
    case 'ec-p384':
      return { name: 'ECDSA', namedCurve: 'P-384' }
    case 'rsa':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
  }
}

function signingParams(kind: KeyKind): EcdsaParams | Algorithm {
  switch (kind) {
    case 'ec-p256':
      return { name: 'ECDSA', hash: 'SHA-256' }
    case 'ec-p384':
      return { name: 'ECDSA', hash: 'SHA-384' }
    case 'rsa':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
  }
}

/** 16 random bytes, positive and without a leading zero byte (RFC 5280 §4.1.2.2: at most 20 octets). */
export function newSerial(): string {
  const b = randomBytes(16)
  b[0] = ((b[0] ?? 1) & 0x7f) | 0x10
  return b.toString('hex').toUpperCase()
}

/** Upper-case hex without leading zeros, as node:crypto and TLS report serials. */
export function normalizeSerial(serial: string): string {
  const s = serial
    .replace(/[^0-9a-f]/gi, '')
    .toUpperCase()
    .replace(/^0+/, '')
  return s === '' ? '0' : s
}

export interface NameParams {
  readonly cn: string
  readonly o?: string
}

function name(n: NameParams): x509.Name {
  const rdns: Record<string, string[]>[] = []
  if (n.o !== undefined && n.o !== '') rdns.push({ O: [n.o] })
  rdns.push({ CN: [n.cn] })
  return new x509.Name(rdns)
}

/** A self-signed root for `certs init`: CA:TRUE, pathlen 0, keyCertSign | cRLSign. */
export async function createSelfSignedCa(opts: {
  readonly key: SigningKey
  readonly name: NameParams
  readonly notBefore: number
  readonly notAfter: number
}): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: name(opts.name),
    notBefore: new Date(opts.notBefore),
    notAfter: new Date(opts.notAfter),
    keys: { privateKey: opts.key.privateKey, publicKey: opts.key.publicKey },
    signingAlgorithm: opts.key.signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(opts.key.publicKey, false, crypto),
    ],
  })
}

/** A CSR for the local CA, to be signed as an intermediate by the site's or enterprise's PKI. */
export async function createCaCsr(opts: { readonly key: SigningKey; readonly name: NameParams }): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: name(opts.name),
      keys: { privateKey: opts.key.privateKey, publicKey: opts.key.publicKey },
      signingAlgorithm: opts.key.signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
      ],
    },
    crypto,
  )
  return csr.toString('pem') + '\n'
}

/** A device CSR (used by the reference client and tests). */
export async function createCsr(opts: { readonly key: SigningKey; readonly cn: string }): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: name({ cn: opts.cn }),
      keys: { privateKey: opts.key.privateKey, publicKey: opts.key.publicKey },
      signingAlgorithm: opts.key.signingAlgorithm,
    },
    crypto,
  )
  return csr.toString('pem') + '\n'
}

export type LeafProfile = 'client' | 'server'

export interface LeafParams {
  readonly ca: CaSigner
  readonly subject: NameParams
  /** SPKI DER, a PublicKey from a CSR, or a CryptoKey. */
  readonly publicKey: ArrayBuffer | x509.PublicKey | CryptoKey
  readonly serial: string
  readonly notBefore: number
  readonly notAfter: number
  readonly profile: LeafProfile
  readonly dnsNames?: readonly string[]
  readonly ipAddresses?: readonly string[]
}

/** Signs an end-entity certificate: CA:FALSE, digitalSignature, EKU clientAuth or serverAuth. */
export async function signLeaf(p: LeafParams): Promise<x509.X509Certificate> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    // digitalSignature is all (EC)DHE handshakes need, RSA ones included
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      [p.profile === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
      false,
    ),
    await x509.SubjectKeyIdentifierExtension.create(p.publicKey as x509.PublicKeyType, false, crypto),
    new x509.AuthorityKeyIdentifierExtension(p.ca.keyId, false),
  ]
  const names: x509.JsonGeneralName[] = [
    ...(p.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(p.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ]
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false))
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: p.serial,
      subject: name(p.subject),
      issuer: p.ca.cert.subjectName,
      notBefore: new Date(p.notBefore),
      notAfter: new Date(p.notAfter),
      publicKey: p.publicKey as x509.PublicKeyType,
      signingKey: p.ca.key.privateKey,
      signingAlgorithm: p.ca.key.signingAlgorithm,
      extensions,
    },
    crypto,
  )
}

export const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
] as const
export type RevocationReason = (typeof REVOCATION_REASONS)[number]

export interface CrlEntry {
  readonly serial: string
  readonly revokedAt: number
  readonly reason?: RevocationReason
}

/** A v2 CRL with CRL number and AKI (RFC 5280 §5.2.1, §5.2.3), as OpenSSL's -crl_check expects. */
export async function signCrl(opts: {
  readonly ca: CaSigner
  readonly entries: readonly CrlEntry[]
  readonly thisUpdate: number
  readonly nextUpdate: number
  readonly number: number
}): Promise<x509.X509Crl> {
  return x509.X509CrlGenerator.create(
    {
      issuer: opts.ca.cert.subjectName,
      thisUpdate: new Date(wholeSeconds(opts.thisUpdate)),
      nextUpdate: new Date(wholeSeconds(opts.nextUpdate)),
      signingKey: opts.ca.key.privateKey,
      signingAlgorithm: opts.ca.key.signingAlgorithm,
      extensions: [
        new x509.AuthorityKeyIdentifierExtension(opts.ca.keyId, false),
        new x509.Extension('2.5.29.20', false, derInteger(opts.number)),
      ],
      // Every entry carries an invalidity date: the library writes an empty,
      // invalid extension list for an entry without any (and RFC 5280 says to
      // leave reason 'unspecified' out).
      entries: opts.entries.map((e) => ({
        serialNumber: evenHex(e.serial),
        revocationDate: new Date(wholeSeconds(e.revokedAt)),
        // RFC 5280 §4.1.2.5.2: GeneralizedTime without fractional seconds
        invalidity: new Date(wholeSeconds(e.revokedAt)),
        ...(e.reason !== undefined && e.reason !== 'unspecified' ? { reason: x509.X509CrlReason[e.reason] } : {}),
      })),
    },
    crypto,
  )
}

/** nextUpdate of a PEM CRL in ms, or undefined if it does not parse. */
export function crlNextUpdate(pem: string): number | undefined {
  try {
    return new x509.X509Crl(splitPem(pem, 'X509 CRL')[0] ?? pem).nextUpdate?.getTime() ?? 0
  } catch {
    return undefined
  }
}

function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000
}

/** PEM with the label OpenSSL reads ("X509 CRL"; the library writes "CRL"). */
export function crlPem(crl: x509.X509Crl): string {
  return toPem(Buffer.from(crl.rawData), 'X509 CRL')
}

function evenHex(hex: string): string {
  return hex.length % 2 === 1 ? `0${hex}` : hex
}

function derInteger(n: number): ArrayBuffer {
  let hex = Math.max(0, Math.floor(n)).toString(16)
  if (hex.length % 2 === 1) hex = `0${hex}`
  let body = Buffer.from(hex, 'hex')
  if ((body[0] ?? 0) & 0x80) body = Buffer.concat([Buffer.from([0]), body])
  const der = Buffer.concat([Buffer.from([0x02, body.length]), body])
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.length)
}

export interface ParsedCsr {
  readonly csr: x509.Pkcs10CertificateRequest
  /** Subject CN, '' if none. */
  readonly cn: string
  readonly keyKind: KeyKind
}

/** Parses a PEM or DER CSR and checks its self-signature (proof of possession of the key). */
export async function parseCsr(input: string | Buffer): Promise<ParsedCsr> {
  let csr: x509.Pkcs10CertificateRequest
  try {
    csr = new x509.Pkcs10CertificateRequest(typeof input === 'string' ? input.trim() : new Uint8Array(input))
  } catch (err) {
    throw new CertsError(
      'EDGE_ERR_CERT_CSR_INVALID',
      'CSR does not parse (expected PEM "CERTIFICATE REQUEST" or DER)',
      { cause: err },
    )
  }
  let kind: KeyKind
  try {
    kind = keyKind(createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' }))
  } catch (err) {
    throw new CertsError('EDGE_ERR_CERT_CSR_INVALID', err instanceof Error ? err.message : 'unsupported CSR key', {
      cause: err,
    })
  }
  let ok = false
  try {
    ok = await csr.verify(crypto)
  } catch (err) {
    throw new CertsError('EDGE_ERR_CERT_CSR_INVALID', 'CSR signature cannot be checked', { cause: err })
  }
  if (!ok)
    throw new CertsError(
      'EDGE_ERR_CERT_CSR_INVALID',
      'CSR signature does not verify (no proof of possession of the key)',
    )
  const cns = csr.subjectName.getField('CN')
  if (cns.length > 1) throw new CertsError('EDGE_ERR_CERT_CSR_INVALID', 'CSR subject has more than one CN')
  return { csr, cn: cns[0] ?? '', keyKind: kind }
}

/** Reads what the agent needs from a PEM certificate. */
export function summarize(pem: string | Buffer): CertSummary {
  const c = new NodeX509(pem)
  return summarizeNode(c)
}

export function summarizeNode(c: NodeX509): CertSummary {
  return {
    serial: normalizeSerial(c.serialNumber),
    cn: commonName(c.subject),
    subject: c.subject.replace(/\n/g, ', '),
    issuer: c.issuer.replace(/\n/g, ', '),
    notBefore: Date.parse(c.validFrom),
    notAfter: Date.parse(c.validTo),
    fingerprint256: c.fingerprint256,
    isCa: c.ca,
    sans: splitSans(c.subjectAltName ?? ''),
  }
}

/** The CN of a node:crypto subject string ("O=x\nCN=y"), '' if none or several. */
export function commonName(subject: string): string {
  const cns = subject.split('\n').filter((l) => l.startsWith('CN='))
  return cns.length === 1 ? (cns[0] ?? '').slice(3) : ''
}

/**
 * Splits node's subjectAltName string ("DNS:a, IP Address:1.2.3.4, URI:x").
 * Values containing ", " are JSON-quoted by Node (CVE-2021-44532 fix).
 */
export function splitSans(s: string): string[] {
  const out: string[] = []
  let i = 0
  while (i < s.length) {
    const colon = s.indexOf(':', i)
    if (colon < 0) break
    const type = s.slice(i, colon)
    let value: string
    let next: number
    if (s[colon + 1] === '"') {
      let j = colon + 2
      while (j < s.length && s[j] !== '"') j += s[j] === '\\' ? 2 : 1
      try {
        value = JSON.parse(s.slice(colon + 1, j + 1)) as string
      } catch {
        value = s.slice(colon + 2, j)
      }
      next = s.indexOf(', ', j)
    } else {
      next = s.indexOf(', ', colon)
      value = s.slice(colon + 1, next < 0 ? s.length : next)
    }
    out.push(`${type === 'IP Address' ? 'IP' : type}:${value}`)
    if (next < 0) break
    i = next + 2
  }
  return out
}

export function toPem(der: Buffer | ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der as ArrayBuffer).toString('base64')
  return `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`
}

/** Every PEM block with the given label in a bundle, normalized. */
export function splitPem(text: string, label = 'CERTIFICATE'): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g')
  return (text.match(re) ?? []).map((b) => `${b.trim()}\n`)
}

export function certPem(c: x509.X509Certificate): string {
  return `${c.toString('pem').trim()}\n`
}

/** Builds the CaSigner for a CA certificate and its key, checking they belong together. */
export async function caSigner(certPemText: string, key: SigningKey, chainPem: readonly string[]): Promise<CaSigner> {
  let cert: x509.X509Certificate
  try {
    cert = new x509.X509Certificate(certPemText)
  } catch (err) {
    throw new CertsError('EDGE_ERR_CERT_CA_INVALID', 'CA certificate does not parse', { cause: err })
  }
  const spkiCert = Buffer.from(cert.publicKey.rawData)
  const spkiKey = Buffer.from(await crypto.subtle.exportKey('spki', key.publicKey))
  if (!spkiCert.equals(spkiKey))
    throw new CertsError('EDGE_ERR_CERT_CA_INVALID', 'CA certificate does not match the CA key')
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension)
  const keyId = ski?.keyId ?? (await x509.SubjectKeyIdentifierExtension.create(key.publicKey, false, crypto)).keyId
  return {
    key,
    cert,
    certPem: certPem(cert),
    chainPem,
    keyId,
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
  }
}

/**
 * Checks that `certPemText` is a CA certificate (CA:TRUE, keyCertSign) and,
 * if a chain is given, that each certificate is issued and signed by the next
 * one. Returns problems as text, [] when fine.
 */
export function caProblems(certPemText: string, chain: readonly string[]): string[] {
  const problems: string[] = []
  let c: NodeX509
  try {
    c = new NodeX509(certPemText)
  } catch {
    return ['CA certificate does not parse']
  }
  if (!c.ca) problems.push('certificate is not a CA (basicConstraints CA:TRUE missing)')
  const xc = new x509.X509Certificate(certPemText)
  const ku = xc.getExtension(x509.KeyUsagesExtension)
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) problems.push('keyUsage lacks keyCertSign')
  let child = c
  for (const [i, pem] of chain.entries()) {
    let parent: NodeX509
    try {
      parent = new NodeX509(pem)
    } catch {
      problems.push(`chain certificate ${i + 1} does not parse`)
      break
    }
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      problems.push(
        `chain certificate ${i + 1} (${parent.subject.replace(/\n/g, ', ')}) did not issue ${child.subject.replace(/\n/g, ', ')}`,
      )
      break
    }
    child = parent
  }
  if (chain.length === 0 && !(c.checkIssued(c) && c.verify(c.publicKey))) {
    problems.push('certificate is not self-signed: give its issuers with --chain so that devices can reach a root')
  }
  return problems
}
