// ACME Renewal Information (RFC 9773): the CA's suggested renewal window.
// acme-client has no helper; it is one unauthenticated GET of
// <renewalInfo>/<certID>.
import * as x509 from '@peculiar/x509'
import type { RenewalWindow } from './schedule.js'

/** RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER value). */
export function ariCertId(certPem: string): string | undefined {
  const cert = new x509.X509Certificate(certPem)
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)
  if (aki?.keyId === undefined) return undefined
  let serial = cert.serialNumber.toLowerCase()
  if (serial.length % 2 === 1) serial = `0${serial}`
  // The DER INTEGER's content: positive, so a leading 00 when the top bit is set.
  while (serial.startsWith('00') && serial.length > 2 && Number.parseInt(serial.slice(2, 4), 16) < 0x80)
    serial = serial.slice(2)
  if (Number.parseInt(serial.slice(0, 2), 16) >= 0x80) serial = `00${serial}`
  return `${Buffer.from(aki.keyId, 'hex').toString('base64url')}.${Buffer.from(serial, 'hex').toString('base64url')}`
}

export interface RenewalInfo {
  readonly window: RenewalWindow
  readonly explanationUrl: string | undefined
  /** When to ask again (Retry-After), ms since the epoch. */
  readonly retryAt: number | undefined
}

/** Parses a renewalInfo response; undefined if it is not a valid window. */
export function parseRenewalInfo(body: unknown, retryAfter: string | undefined, now: number): RenewalInfo | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const w = (body as { suggestedWindow?: unknown }).suggestedWindow
  if (typeof w !== 'object' || w === null) return undefined
  const start = Date.parse(String((w as { start?: unknown }).start))
  const end = Date.parse(String((w as { end?: unknown }).end))
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return undefined
  const url = (body as { explanationURL?: unknown }).explanationURL
  return {
    window: { start, end },
    explanationUrl: typeof url === 'string' ? url : undefined,
    retryAt: parseRetryAfter(retryAfter, now),
  }
}

function parseRetryAfter(v: string | undefined, now: number): number | undefined {
  if (v === undefined || v === '') return undefined
  if (/^\d+$/.test(v)) return now + Number(v) * 1000
  const t = Date.parse(v)
  return Number.isFinite(t) ? t : undefined
}
