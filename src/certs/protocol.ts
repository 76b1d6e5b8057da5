// The certificate renewal protocol over MQTT (docs/certificates.md
// "Renewal protocol"), shared by the agent's RenewalService and the reference
// client (`edge-agent device renew`).
//
//   device → agent   <prefix>/csr    {"v":1,"requestId":"…","csr":"-----BEGIN CERTIFICATE REQUEST-----…"}
//                                    (a bare PEM CSR is accepted too; it gets requestId null)
//   agent → device   <prefix>/cert   {"v":1,"requestId":"…","status":"issued","certificate":"…",
//                                     "chain":"…","serial":"…","notBefore":"…","notAfter":"…","renewAfter":"…"}
//                                or  {"v":1,"requestId":"…","status":"error","error":"too-early",
//                                     "message":"…","retryAfterSec":120}
//
// where <prefix> is `devices/{id}/$certs` by default. The `$` marks a level
// reserved to the agent: MQTT only gives `$` a meaning in the first level
// [MQTT-4.7.2-1], so these topics are ordinary for clients and for aedes, yet
// cannot clash with application topics that do not start a level with `$`.
// Devices must subscribe to <prefix>/cert before publishing the request:
// replies are not retained.

export const PROTOCOL_VERSION = 1

/** Error codes in replies; stable, for device firmware to branch on. */
export type RenewalErrorCode =
  /** The payload is not a request, or the CSR does not parse or verify. */
  | 'bad-request'
  /** The CSR names another identity than the session's certificate. */
  | 'identity-mismatch'
  /** The newest certificate is younger than the renewal window; see retryAfterSec. */
  | 'too-early'
  /** Too many requests from this device; see retryAfterSec. */
  | 'rate-limited'
  /** The gateway's clock is not trusted: nothing is issued until it is. */
  | 'clock-suspicious'
  /** The session's certificate has been revoked. */
  | 'revoked'
  /** Renewal over MQTT is disabled on this gateway. */
  | 'disabled'
  /** Signing failed on the gateway (logged there). */
  | 'internal'
  /** The gateway is answering many renewals at once; ask again after retryAfterSec (same key). */
  | 'busy'

export interface RenewalRequest {
  readonly requestId: string | null
  readonly csr: string
}

export interface IssuedReply {
  readonly v: 1
  readonly requestId: string | null
  readonly status: 'issued'
  readonly certificate: string
  /** The issuing CA and its issuers, nearest first (PEM bundle). */
  readonly chain: string
  readonly serial: string
  readonly notBefore: string
  readonly notAfter: string
  /** From this time on the gateway accepts the next renewal. */
  readonly renewAfter: string
}

export interface ErrorReply {
  readonly v: 1
  readonly requestId: string | null
  readonly status: 'error'
  readonly error: RenewalErrorCode
  readonly message: string
  /** Never shorter than the time until this device may send again (the rate limit). */
  readonly retryAfterSec?: number
  /** 'too-early': when renewal opens, ISO 8601. */
  readonly renewableFrom?: string
}

export type RenewalReply = IssuedReply | ErrorReply

const MAX_REQUEST_ID = 128

/** Parses a request payload; returns the problem as a string if it is not one. */
export function parseRequest(payload: Buffer): RenewalRequest | string {
  const text = payload.toString('utf8').trim()
  if (text.startsWith('-----BEGIN')) return { requestId: null, csr: text }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return 'payload is neither JSON nor a PEM CSR'
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'payload must be a JSON object'
  const o = body as Record<string, unknown>
  if (o['v'] !== undefined && o['v'] !== PROTOCOL_VERSION)
    return `unsupported protocol version ${JSON.stringify(o['v'])} (this gateway speaks v${PROTOCOL_VERSION})`
  const requestId = o['requestId'] ?? null
  if (requestId !== null && (typeof requestId !== 'string' || requestId.length > MAX_REQUEST_ID)) {
    return `requestId must be a string of at most ${MAX_REQUEST_ID} characters`
  }
  if (typeof o['csr'] !== 'string' || o['csr'].length === 0) return 'csr (PEM) is required'
  return { requestId, csr: o['csr'] }
}

/** The requestId of a payload that may not be a valid request, so an error reply can still correlate. */
export function requestIdOf(payload: Buffer): string | null {
  try {
    const o = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
    const id = o['requestId']
    return typeof id === 'string' && id.length <= MAX_REQUEST_ID ? id : null
  } catch {
    return null
  }
}

export function parseReply(payload: Buffer): RenewalReply | undefined {
  try {
    const o = JSON.parse(payload.toString('utf8')) as RenewalReply
    if (o.status === 'issued' || o.status === 'error') return o
  } catch {
    // not a reply
  }
  return undefined
}

/** `devices/{id}/$certs` → the request and reply topics of one device. */
export function renewalTopics(prefixTemplate: string, id: string): { request: string; reply: string } {
  const prefix = prefixTemplate.split('{id}').join(id)
  return { request: `${prefix}/csr`, reply: `${prefix}/cert` }
}
