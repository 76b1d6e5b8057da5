// TLS for the local broker: secure-context options for `mqtts` listeners, the
// checks a device's certificate must pass after the handshake, and the
// identity it gives the MQTT session.
//
// OpenSSL verifies a presented client certificate in the handshake (chain to
// a trust anchor, validity dates); `allowPartialTrustChain` lets the issuing
// CA itself be the anchor even when it is an intermediate, so certificates
// from elsewhere under the same root are not accepted. The listener does not
// let Node reject failures by itself (rejectUnauthorized: false), because Node
// then destroys the socket and the reason is lost; `checkPeer()` decides
// instead, right after the handshake and before any MQTT byte reaches aedes,
// and knows why: no certificate, untrusted, expired, not yet valid, revoked.
//
// What OpenSSL does not check, and checkPeer() does: revocation (our serial
// list, updated live; Node's `crl` option would demand a CRL for every CA up
// to the root), that the issuer is one of *our* anchors even on a resumed
// session, and the validity dates against the agent's trusted clock. Node
// never re-checks a certificate after the handshake, so the broker also closes
// sessions whose credential expires or is revoked (see LocalBroker).
//
// Hot swap: `tls.Server#setSecureContext()` replaces the context for new
// handshakes only; connected devices keep theirs.
import { readFile } from 'node:fs/promises'
import { X509Certificate } from 'node:crypto'
import type { SecureContextOptions, TLSSocket } from 'node:tls'

/** PEM material of a TLS listener. */
export interface TlsMaterial {
  /** Private key of the server certificate. */
  readonly key: string
  /** Server certificate, followed by its issuers. */
  readonly cert: string
  /** Trust anchors for client certificates (the local issuing CA). */
  readonly ca: string
}

export interface TlsListenerFiles {
  readonly certFile?: string | undefined
  readonly keyFile?: string | undefined
  readonly caFile?: string | undefined
}

/**
 * Why a TLS connection was refused, for logs and the `refused` counters:
 * - `no-certificate`: none presented where one is required
 * - `untrusted-certificate`: does not chain to the local CA (or a bad signature)
 * - `expired` / `not-yet-valid`: outside its validity dates
 * - `revoked`: its serial is on the CRL
 * - `handshake-failed`: any other TLS failure (protocol, cipher, timeout)
 */
export type TlsRefusal =
  'no-certificate' | 'untrusted-certificate' | 'expired' | 'not-yet-valid' | 'revoked' | 'handshake-failed'

/** Options for tls.createServer / setSecureContext. */
export function secureContextOptions(material: TlsMaterial): SecureContextOptions & {
  requestCert: boolean
  rejectUnauthorized: boolean
} {
  return {
    key: material.key,
    cert: material.cert,
    ca: material.ca,
    allowPartialTrustChain: true,
    minVersion: 'TLSv1.2',
    requestCert: true,
    // checkPeer() refuses what OpenSSL could not verify (and knows why), and a
    // missing certificate when one is required.
    rejectUnauthorized: false,
  }
}

/** Reads what a listener's own files give (undefined where no file is configured). */
export async function readListenerFiles(files: TlsListenerFiles): Promise<Partial<TlsMaterial>> {
  const read = (f: string | undefined) => (f === undefined ? undefined : readFile(f, 'utf8'))
  const [cert, key, ca] = await Promise.all([read(files.certFile), read(files.keyFile), read(files.caFile)])
  return {
    ...(key === undefined ? {} : { key }),
    ...(cert === undefined ? {} : { cert }),
    ...(ca === undefined ? {} : { ca }),
  }
}

/** A listener's own material completed by the local CA's; throws if something is still missing. */
export function mergeMaterial(own: Partial<TlsMaterial>, fallback: TlsMaterial | undefined): TlsMaterial {
  const key = own.key ?? fallback?.key
  const cert = own.cert ?? fallback?.cert
  const ca = own.ca ?? fallback?.ca
  if (key === undefined || cert === undefined || ca === undefined) {
    throw new Error('an mqtts listener needs certFile, keyFile and caFile, or the local CA (certs)')
  }
  return { key, cert, ca }
}

/** Parses every certificate of a PEM bundle. */
export function parseAnchors(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []
  return blocks.map((b) => new X509Certificate(b))
}

export interface PeerCheckOptions {
  readonly requireClientCert: boolean
  readonly anchors: readonly X509Certificate[]
  readonly isRevoked: (serial: string) => boolean
  readonly now: number
}

export type PeerCheck =
  | { readonly ok: true; readonly cert: X509Certificate | undefined }
  | { readonly ok: false; readonly reason: TlsRefusal; readonly serial?: string; readonly cn?: string }

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2'
const ANY_EKU = '2.5.29.37.0'
const DATE_ERRORS = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID'])

/**
 * The checks a connection must pass after the handshake, before MQTT.
 *
 * The leaf is verified here in full against our anchors (issuer, signature,
 * clientAuth, not a CA, revocation, dates). That also lets a date error from
 * OpenSSL, which reads the wall clock, be judged against the agent's trusted
 * time instead: a wall clock that jumped a year does not lock every device
 * out. Any other OpenSSL verification error refuses the connection.
 */
export function checkPeer(socket: TLSSocket, opts: PeerCheckOptions): PeerCheck {
  const cert = socket.getPeerX509Certificate()
  if (cert === undefined) {
    return opts.requireClientCert ? { ok: false, reason: 'no-certificate' } : { ok: true, cert: undefined }
  }
  const serial = normalizeSerial(cert.serialNumber)
  const cn = commonName(cert.subject)
  const refuse = (reason: TlsRefusal): PeerCheck => ({ ok: false, reason, serial, cn })
  if (!socket.authorized && !DATE_ERRORS.has(String(socket.authorizationError ?? '')))
    return refuse('untrusted-certificate')
  const anchor = opts.anchors.find((a) => cert.checkIssued(a) && cert.verify(a.publicKey))
  if (anchor === undefined || cert.ca) return refuse('untrusted-certificate')
  const eku = cert.keyUsage
  if (eku !== undefined && !eku.includes(CLIENT_AUTH) && !eku.includes(ANY_EKU)) return refuse('untrusted-certificate')
  if (opts.isRevoked(serial)) return refuse('revoked')
  if (Date.parse(cert.validFrom) > opts.now) return refuse('not-yet-valid')
  if (Date.parse(cert.validTo) <= opts.now || Date.parse(anchor.validTo) <= opts.now) return refuse('expired')
  return { ok: true, cert }
}

/** Maps a 'tlsClientError' to a refusal reason. */
export function classifyTlsError(err: Error & { code?: string; reason?: string }): TlsRefusal {
  const text = `${err.code ?? ''} ${err.reason ?? ''} ${err.message}`.toLowerCase()
  if (text.includes('certificate required') || text.includes('peer did not return a certificate'))
    return 'no-certificate'
  if (text.includes('expired')) return 'expired'
  if (text.includes('not yet valid')) return 'not-yet-valid'
  if (text.includes('revoked')) return 'revoked'
  if (
    text.includes('unknown ca') ||
    text.includes('certificate verify failed') ||
    text.includes('unable to get') ||
    text.includes('bad certificate')
  ) {
    return 'untrusted-certificate'
  }
  return 'handshake-failed'
}

export type IdentityMode = 'cn' | 'cn-or-san'

export interface DeviceCredential {
  /** Upper-case hex, no leading zeros. */
  readonly serial: string
  readonly notBefore: number
  readonly notAfter: number
}

export type IdentityResult =
  | { readonly ok: true; readonly id: string; readonly credential: DeviceCredential }
  | { readonly ok: false; readonly reason: 'identity-mismatch' | 'identity-invalid'; readonly names: readonly string[] }

/**
 * The device id a certificate gives a session: the client id, which must
 * equal the certificate's CN (or, in 'cn-or-san' mode, one of its DNS/URI
 * SANs). An empty client id takes the CN. The id must be able to name one
 * topic level.
 */
export function certificateDeviceId(
  cert: X509Certificate,
  clientId: string,
  mode: IdentityMode,
  maxIdBytes: number,
): IdentityResult {
  const cn = commonName(cert.subject)
  const names = [cn, ...(mode === 'cn-or-san' ? sanNames(cert.subjectAltName ?? '') : [])].filter((n) => n !== '')
  const id = clientId === '' ? cn : clientId
  if (id === '' || !names.includes(id)) return { ok: false, reason: 'identity-mismatch', names }
  if (identityProblem(id, maxIdBytes) !== undefined) return { ok: false, reason: 'identity-invalid', names }
  return {
    ok: true,
    id,
    credential: {
      serial: normalizeSerial(cert.serialNumber),
      notBefore: Date.parse(cert.validFrom),
      notAfter: Date.parse(cert.validTo),
    },
  }
}

/** Same rules as certs' deviceIdProblem: one topic level, no wildcards, no control characters. */
export function identityProblem(id: string, maxBytes: number): string | undefined {
  if (id.length === 0) return 'empty'
  if (Buffer.from(id, 'utf8').toString('utf8') !== id) return 'ill-formed UTF-8'
  if (Buffer.byteLength(id) > maxBytes) return 'too long'
  if (/[/+#]/.test(id)) return "contains '/', '+' or '#'"

  if (/[\u0000-\u001f\u007f]/.test(id)) return 'contains control characters'
  if (id.trim() !== id) return 'leading or trailing whitespace'
  return undefined
}

export function normalizeSerial(serial: string): string {
  const s = serial
    .replace(/[^0-9a-f]/gi, '')
    .toUpperCase()
    .replace(/^0+/, '')
  return s === '' ? '0' : s
}

function commonName(subject: string): string {
  const cns = subject.split('\n').filter((l) => l.startsWith('CN='))
  return cns.length === 1 ? (cns[0] ?? '').slice(3) : ''
}

/** DNS and URI names of node's subjectAltName string; quoted values (with ", ") are skipped. */
function sanNames(s: string): string[] {
  return s
    .split(', ')
    .filter((p) => p.startsWith('DNS:') || p.startsWith('URI:'))
    .map((p) => p.slice(4))
    .filter((v) => !v.startsWith('"'))
}
