// Renewal over MQTT, on the gateway side: answers a device's CSR with a new
// certificate from the local CA, online or not (the upstream plays no part).
//
// A request is honoured when, in this order:
//   1. renewal is enabled;
//   2. the device has not sent a request in the last minRequestIntervalMs
//      (per device, whatever the outcome: the rate limit);
//   3. the session's certificate is not revoked;
//   4. the payload is a request and its CSR verifies (proof of possession);
//   5. the CSR names the session's identity (or no CN at all);
//   6. the clock is trusted;
//   7. the device's newest certificate (issued here, or the one of the
//      session) has passed `renewAfter` of its lifetime.
// One exception to 7: a CSR for the very key of the newest certificate
// issued here, from a session that does not use it yet, gets that
// certificate again. That is a device retrying after the reply was lost (a
// link that dropped mid-exchange); refusing it would lock the device out
// until its old certificate expires, and then for good. The reference
// clients keep the key of an unanswered request for their retries.
// Requests are worked through a few at a time, in arrival order: a site
// commissioned in one day sends all its renewals within seconds, and taken
// all at once every reply came late (each waits for all the others' signing
// and fsyncs) while the event loop and the thread pool starved the rest of the
// agent. When the queue holds more than about BUSY_WAIT_MS of work, a request
// is answered 'busy' with a retryAfterSec spread over the backlog, so that a
// device's wait for a reply is bounded and the retries do not come back as
// one herd. A device whose certificate is running out is never sent away
// past half of the time it has left, and one that could not come back in time
// waits in the queue instead: 'busy' must not turn a slow gateway into a lapsed
// certificate.
// Every refusal is a reply with a stable error code and, where waiting helps,
// retryAfterSec; the device never has to guess. A hint is never shorter than
// the rate limit still in force for the device, so a device that retries
// exactly as advised is never refused as 'rate-limited'; 'too-early' also
// says when renewal opens (renewableFrom).
//
// The identity is the one the broker bound to the session from the
// certificate: it is never taken from the payload or the topic.
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
import { CertsError } from './errors.js'
import type { ClockGuard } from './clock.js'
import type { IssuedRecord, LocalCa } from './local-ca.js'
import { parseCsr } from './x509.js'
import {
  PROTOCOL_VERSION,
  parseRequest,
  renewalTopics,
  requestIdOf,
  type ErrorReply,
  type IssuedReply,
  type RenewalErrorCode,
  type RenewalReply,
} from './protocol.js'

/** Requests signed and written at the same time. */
const CONCURRENCY = 2
/** Answer 'busy' rather than queue a request behind more than this much estimated work. */
const BUSY_WAIT_MS = 2_000
/** Service time assumed before any was measured, ms. */
const INITIAL_SERVICE_MS = 50

export interface RenewalServiceOptions {
  readonly ca: LocalCa
  readonly guard: ClockGuard
  readonly logger: Logger
  readonly enabled: boolean
  /** Template with `{id}`, e.g. `devices/{id}/$certs`. */
  readonly topicPrefix: string
  /** Lifetime of a renewed certificate, ms. */
  readonly lifetimeMs: number
  /** notBefore backdating used at issuance, ms (to tell the nominal lifetime of a certificate). */
  readonly backdateMs: number
  /** Fraction of the lifetime after which renewal is allowed (2/3 → 0.667). */
  readonly renewAfter: number
  /** At most one request per device per this interval, ms. */
  readonly minRequestIntervalMs: number
  /** Monotonic clock for the rate limit. */
  readonly monotonic: () => number
  /** Retry hint sent while the clock is suspicious, seconds. Default 300. */
  readonly clockRetrySec?: number
}

export interface RenewalInput {
  /** The identity the broker bound to the session. */
  readonly id: string
  readonly clientId: string
  readonly payload: Buffer
  /** The session's current credential (the newest certificate it authenticated with). */
  readonly credential: { readonly serial: string; readonly notBefore: number; readonly notAfter: number }
}

export interface RenewalOutcome {
  readonly topic: string
  readonly payload: Buffer
  readonly reply: RenewalReply
  /** Set when a certificate was issued. */
  readonly issued?: IssuedRecord
}

export interface RenewalStats {
  readonly requests: number
  readonly renewed: number
  /** Certificates sent again to a device retrying with the same key (a lost reply). */
  readonly resent: number
  readonly refused: Readonly<Record<string, number>>
}

type Refuse = (
  error: RenewalErrorCode,
  message: string,
  hintSec?: number,
  extra?: { renewableFrom?: string },
) => RenewalOutcome

export class RenewalService {
  readonly #o: RenewalServiceOptions
  readonly #log: Logger
  readonly #lastRequest = new Map<string, number>()
  readonly #refused = new Map<string, number>()
  #requests = 0
  /** Requests admitted and not yet answered (queued or in progress). */
  #admitted = 0
  #running = 0
  readonly #waiting: (() => void)[] = []
  /** Mean service time of one request (exponentially weighted), ms. */
  #serviceMs = INITIAL_SERVICE_MS
  /** Busy replies whose retry is still to come: spreads the retries. */
  #deferred: number[] = []
  #renewed = 0
  #resent = 0

  constructor(opts: RenewalServiceOptions) {
    this.#o = opts
    this.#log = opts.logger
  }

  stats(): RenewalStats {
    return {
      requests: this.#requests,
      renewed: this.#renewed,
      resent: this.#resent,
      refused: Object.fromEntries(this.#refused),
    }
  }

  /** When a certificate becomes renewable: notAfter minus (1 - renewAfter) of its nominal lifetime. */
  renewableFrom(cert: { readonly notBefore: number; readonly notAfter: number }): number {
    const span = cert.notAfter - cert.notBefore
    const nominal = span > 2 * this.#o.backdateMs ? span - this.#o.backdateMs : span
    return cert.notAfter - (1 - this.#o.renewAfter) * nominal
  }

  async handle(input: RenewalInput): Promise<RenewalOutcome> {
    this.#requests++
    return this.#handle(input)
  }

  /** Runs `fn` when one of the CONCURRENCY slots is free, in arrival order. */
  async #queued<T>(fn: () => Promise<T>): Promise<T> {
    this.#admitted++
    if (this.#running >= CONCURRENCY) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    this.#running++
    const t0 = this.#o.monotonic()
    try {
      return await fn()
    } finally {
      this.#serviceMs = 0.8 * this.#serviceMs + 0.2 * Math.max(1, this.#o.monotonic() - t0)
      this.#running--
      this.#admitted--
      this.#waiting.shift()?.()
    }
  }

  /** Estimated wait before a request admitted now would start, ms. */
  #estimatedWaitMs(): number {
    return (this.#admitted / CONCURRENCY) * this.#serviceMs
  }

  /** Retry hint for a busy reply: after the backlog, spread one service slot apart from the other deferred devices. */
  #busyRetryMs(mono: number): number {
    this.#deferred = this.#deferred.filter((t) => t > mono)
    const slot = this.#serviceMs / CONCURRENCY
    const at = Math.max(mono + this.#estimatedWaitMs(), (this.#deferred.at(-1) ?? 0) + slot)
    this.#deferred.push(at)
    return at - mono
  }

  async #handle(input: RenewalInput): Promise<RenewalOutcome> {
    const { reply: replyTopic } = renewalTopics(this.#o.topicPrefix, input.id)
    const requestId = requestIdOf(input.payload)
    let stamped: number | undefined
    const refuse: Refuse = (error, message, hintSec, extra = {}) => {
      // The request was counted against the rate limit: coming back sooner is refused.
      const limitSec = stamped === undefined ? 0 : (stamped + this.#o.minRequestIntervalMs - this.#o.monotonic()) / 1000
      const retryAfterSec = hintSec === undefined ? undefined : Math.max(hintSec, limitSec)
      this.#refused.set(error, (this.#refused.get(error) ?? 0) + 1)
      const fields = { deviceId: input.id, error, retryAfterSec, requestId }
      if (error === 'busy') this.#log.info(fields, 'certificate renewal deferred: busy')
      else this.#log.warn(fields, 'certificate renewal refused')
      const reply: ErrorReply = {
        v: PROTOCOL_VERSION,
        requestId,
        status: 'error',
        error,
        message,
        ...(retryAfterSec === undefined ? {} : { retryAfterSec: Math.max(1, Math.ceil(retryAfterSec)) }),
        ...extra,
      }
      return { topic: replyTopic, payload: Buffer.from(JSON.stringify(reply)), reply }
    }

    if (!this.#o.enabled) return refuse('disabled', 'renewal over MQTT is disabled on this gateway')

    const mono = this.#o.monotonic()
    const last = this.#lastRequest.get(input.id)
    if (last !== undefined && mono - last < this.#o.minRequestIntervalMs) {
      return refuse('rate-limited', 'too many renewal requests', (this.#o.minRequestIntervalMs - (mono - last)) / 1000)
    }
    this.#lastRequest.set(input.id, mono)
    stamped = mono
    this.#prune(mono)

    if (this.#admitted > 0 && this.#estimatedWaitMs() > BUSY_WAIT_MS) {
      const leftMs = input.credential.notAfter - this.#o.guard.trustedNow()
      // A device with less than two busy waits left is queued: it may not get another chance.
      if (leftMs > 2 * BUSY_WAIT_MS) {
        // Not counted against the rate limit: the device is told when to come back.
        this.#lastRequest.delete(input.id)
        stamped = undefined
        return refuse(
          'busy',
          'the gateway is answering many renewals; ask again after retryAfterSec with the same key',
          Math.min(this.#busyRetryMs(mono), leftMs / 2) / 1000,
        )
      }
    }
    return this.#queued(() => this.#decide(input, refuse))
  }

  async #decide(input: RenewalInput, refuse: Refuse): Promise<RenewalOutcome> {
    const { reply: replyTopic } = renewalTopics(this.#o.topicPrefix, input.id)

    if (this.#o.ca.isRevoked(input.credential.serial))
      return refuse('revoked', 'the certificate of this session is revoked')

    const request = parseRequest(input.payload)
    if (typeof request === 'string') return refuse('bad-request', request)
    let csr
    try {
      csr = await parseCsr(request.csr)
    } catch (err) {
      return refuse('bad-request', err instanceof CertsError ? err.message : 'CSR does not parse')
    }
    if (csr.cn !== '' && csr.cn !== input.id) {
      return refuse(
        'identity-mismatch',
        `the CSR names ${JSON.stringify(csr.cn.slice(0, 200))}, this session is ${JSON.stringify(input.id)}`,
      )
    }

    const clock = this.#o.guard.assess()
    if (clock.state !== 'ok') {
      return refuse(
        'clock-suspicious',
        `the gateway clock is not trusted (${clock.reason ?? ''}); retry later`,
        this.#o.clockRetrySec ?? 300,
      )
    }

    const now = this.#o.guard.trustedNow()
    // The window follows the newest certificate of this identity: one issued
    // here (renewals over any session), or the session's own (issued by the
    // CLI, or before a restart).
    const newest = this.#o.ca.newest(input.id)
    const candidates = [newest, input.credential].filter(
      (r): r is { serial: string; notBefore: number; notAfter: number } =>
        r !== undefined && !this.#o.ca.isRevoked(r.serial),
    )
    const reference = candidates.sort((a, b) => b.notBefore - a.notBefore)[0]
    if (reference !== undefined && reference.notAfter > now) {
      const from = this.renewableFrom(reference)
      if (now < from) {
        const again =
          reference.serial === input.credential.serial
            ? undefined
            : await this.#reissued(reference.serial, csr.csr.publicKey.rawData)
        if (again !== undefined) {
          this.#resent++
          this.#log.info(
            { deviceId: input.id, serial: again.serial, requestId: request.requestId },
            'certificate sent again: same key as the newest issued, the first reply was probably lost',
          )
          const reply = this.#issuedReply(request.requestId, again.certPem, again)
          return { topic: replyTopic, payload: Buffer.from(JSON.stringify(reply)), reply }
        }
        const opens = new Date(from).toISOString()
        return refuse('too-early', `renewal opens at ${opens}`, (from - now) / 1000, { renewableFrom: opens })
      }
    }

    let issued
    try {
      issued = await this.#o.ca.issue({
        id: input.id,
        profile: 'client',
        publicKey: csr.csr.publicKey,
        lifetimeMs: this.#o.lifetimeMs,
      })
    } catch (err) {
      if (err instanceof CertsError && err.code === 'EDGE_ERR_CERT_CLOCK_SUSPICIOUS') {
        return refuse('clock-suspicious', err.message, this.#o.clockRetrySec ?? 300)
      }
      this.#log.error({ err, deviceId: input.id }, 'certificate renewal failed')
      return refuse('internal', 'the gateway could not issue a certificate')
    }
    this.#renewed++
    const reply = this.#issuedReply(request.requestId, issued.certPem, issued)
    this.#log.info(
      { deviceId: input.id, serial: issued.serial, notAfter: reply.notAfter, requestId: request.requestId },
      'certificate renewed',
    )
    const { certPem: _pem, ...record } = issued
    return { topic: replyTopic, payload: Buffer.from(JSON.stringify(reply)), reply, issued: record }
  }

  #issuedReply(
    requestId: IssuedReply['requestId'],
    certPem: string,
    cert: { serial: string; notBefore: number; notAfter: number },
  ): IssuedReply {
    return {
      v: PROTOCOL_VERSION,
      requestId,
      status: 'issued',
      certificate: certPem,
      chain: this.#o.ca.bundlePem(),
      serial: cert.serial,
      notBefore: new Date(cert.notBefore).toISOString(),
      notAfter: new Date(cert.notAfter).toISOString(),
      renewAfter: new Date(this.renewableFrom(cert)).toISOString(),
    }
  }

  /** The certificate issued here as `serial`, if it certifies exactly this public key (SPKI DER). */
  async #reissued(
    serial: string,
    spki: ArrayBuffer,
  ): Promise<{ serial: string; notBefore: number; notAfter: number; certPem: string } | undefined> {
    const record = this.#o.ca.get(serial)
    const certPem = await this.#o.ca.issuedPem(serial)
    if (record === undefined || certPem === undefined) return undefined
    try {
      const held = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' })
      return held.equals(Buffer.from(spki))
        ? { serial: record.serial, notBefore: record.notBefore, notAfter: record.notAfter, certPem }
        : undefined
    } catch {
      return undefined
    }
  }

  /** Forgets rate-limit entries older than the interval (bounded memory). */
  #prune(mono: number): void {
    if (this.#lastRequest.size < 1024) return
    for (const [id, t] of this.#lastRequest) if (mono - t >= this.#o.minRequestIntervalMs) this.#lastRequest.delete(id)
  }
}
