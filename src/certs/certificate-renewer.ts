// Keeps the bridge's own upstream client certificate current, when the
// upstream is another edge-agent whose local CA issued it (a chained L2 → L3
// gateway is a device of L3; docs/certificates.md "The gateway's own upstream
// certificate").
//
// Invariants:
// - The files (upstreams[].certFile/keyFile/caFile) are the only state: the
//   schedule is recomputed from the certificate on disk at start, after each
//   renewal and after each failure, so a re-provisioned pair is picked up.
// - Renewal is due at `atFraction` of notBefore→notAfter plus a jitter of up
//   to 1/20 of the lifetime (thin-edge: no thundering herd of gateways), at
//   once if already past, and runs only while the upstream link is up: the
//   request goes over the bridge's own session (Bridge.control), not over a
//   second connection. A second connection would have to use the same client
//   id (the upstream binds it to the certificate), so the upstream would take
//   the bridge's session over [MQTT-3.1.4-2]; over the session itself, the
//   upstream agent also moves the session onto the new certificate, so the
//   link survives the old one's notAfter.
// - Only a certificate that checked out (the injected `renew` verifies it names
//   us, holds our key and chains to caFile) is installed, in two phases with
//   atomic renames (src/certs/install.ts); the next connection reads it.
// - Failures are a state plus a warning and a retry with exponential backoff
//   (or the upstream's retryAfterSec); an expired certificate is an error log
//   naming the file: nothing automatic can help, a human must re-provision.
//
// The protocol (`renew`) and the file replacement (`install`) are injected by
// the agent (src/agent/app.ts wires renewOverMqtt and installCertificate),
// and the link is structural (the agent passes the Bridge and its control
// channel), so certs/ imports nothing from the bridge. Timers go through an
// injectable clock and never hold the process.
import { readFile } from 'node:fs/promises'
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
// setTimeout's ceiling; longer waits re-arm.
import { MAX_TIMER_MS } from './clock.js'

export interface RenewerClock {
  /** Wall-clock ms since the epoch (certificate dates are wall-clock). */
  now(): number
  setTimeout(fn: () => unknown, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The bridge as the renewer sees it: link state and its changes. */
export interface RenewerLink {
  readonly connected: boolean
  on(event: 'connected', listener: () => void): unknown
  off(event: 'connected', listener: () => void): unknown
}

/** The pair and trust anchors in use, read from the files just before renewing. */
export interface CurrentCertificate {
  /** The certificate's CN: the identity (and client id) at the upstream. */
  readonly id: string
  readonly certPem: string
  readonly keyPem: string
  readonly caPem: string
}

export interface RenewedCertificate {
  readonly certPem: string
  readonly keyPem: string
  readonly serial: string
  /** ISO times. */
  readonly notBefore: string
  readonly notAfter: string
  readonly keyRotated: boolean
}

export interface CertificateRenewerOptions {
  /** Upstream name, for logs and status. */
  readonly upstream: string
  readonly files: { readonly cert: string; readonly key: string; readonly ca: string }
  /** Renew once this fraction of notBefore→notAfter has passed (0.1–0.95). */
  readonly atFraction: number
  /** First retry delay after a failure, ms; doubles per failure up to retryMaxMs (±20 % jitter). */
  readonly retryMinMs: number
  readonly retryMaxMs: number
  readonly link: RenewerLink
  /** Runs the renewal protocol over the link and checks the result; rejects with the reason. */
  readonly renew: (current: CurrentCertificate) => Promise<RenewedCertificate>
  /** Replaces the files with the renewed pair (two-phase, atomic). */
  readonly install: (renewed: RenewedCertificate) => Promise<void>
  readonly logger: Logger
  /** On stop, how long a renewal in progress may take to finish and install, ms. Default 5000. */
  readonly stopGraceMs?: number
  /** Timers and wall-clock time; the agent passes certs' systemClock (structurally a RenewerClock). */
  readonly clock: RenewerClock
  /** [0, 1); jitter source. Default Math.random. */
  readonly random?: () => number
  readonly readText?: (path: string) => Promise<string>
}

export type RenewerState =
  /** Not started, or the certificate has not been read yet. */
  | 'idle'
  /** Waiting for the renewal time. */
  | 'scheduled'
  /** Due, waiting for the upstream link. */
  | 'due'
  | 'renewing'
  /** The last attempt failed; a retry is scheduled. */
  | 'retrying'
  /** The certificate file cannot be read or parsed; re-read later. */
  | 'unreadable'
  /** Past notAfter: the upstream refuses it; re-provision. */
  | 'expired'
  | 'stopped'

export interface CertificateRenewerStatus {
  readonly state: RenewerState
  readonly certFile: string
  readonly serial: string | null
  readonly notBefore: string | null
  readonly notAfter: string | null
  /** When the next renewal (or retry) is due; null when none is scheduled. */
  readonly nextRenewalAt: string | null
  readonly lastRenewalAt: string | null
  readonly renewals: number
  /** Consecutive failures since the last success. */
  readonly failures: number
  readonly lastError: { readonly message: string; readonly code: string | null; readonly at: string } | null
}

interface Loaded {
  readonly id: string
  readonly serial: string
  readonly notBefore: number
  readonly notAfter: number
}

/** When a certificate valid notBefore→notAfter is due for renewal (jitter in [0, 1)). Pure. */
export function renewalTime(notBefore: number, notAfter: number, atFraction: number, jitter: number): number {
  const lifetime = notAfter - notBefore
  const at = notBefore + lifetime * atFraction + (lifetime / 20) * jitter
  // Never later than 19/20 of the lifetime: leave time for retries.
  return Math.min(at, notBefore + lifetime * 0.95)
}

/** Delay before retry number `failures` (1-based): exponential, capped, ±20 %; or the upstream's hint. Pure. */
export function retryDelay(
  failures: number,
  o: { retryMinMs: number; retryMaxMs: number },
  random: number,
  retryAfterMs?: number,
): number {
  if (retryAfterMs !== undefined) return Math.max(0, Math.round(retryAfterMs + random * 1_000))
  const base = Math.min(o.retryMaxMs, o.retryMinMs * 2 ** Math.min(30, failures - 1))
  return Math.max(0, Math.round(base * (0.8 + 0.4 * random)))
}

export class CertificateRenewer {
  readonly name: string
  readonly #o: CertificateRenewerOptions
  readonly #log: Logger
  readonly #clock: RenewerClock
  readonly #random: () => number
  readonly #read: (path: string) => Promise<string>
  #state: RenewerState = 'idle'
  #current: Loaded | undefined
  #timer: unknown
  #nextAt: number | null = null
  #running: Promise<void> | undefined
  #started = false
  #stopped = false
  #renewals = 0
  #failures = 0
  #lastRenewalAt: number | null = null
  #lastError: { message: string; code: string | null; at: number } | null = null
  readonly #onConnected = (): void => {
    if (this.#state === 'due') void this.#kick()
    // Connected again while expired or unreadable: someone may have re-provisioned.
    else if (this.#state === 'expired' || this.#state === 'unreadable') void this.#reload()
  }

  constructor(options: CertificateRenewerOptions) {
    this.#o = options
    this.name = `certificate-renewer:${options.upstream}`
    this.#log = options.logger.child({ component: 'certificate-renewer', upstream: options.upstream })
    this.#clock = options.clock
    this.#random = options.random ?? Math.random
    this.#read = options.readText ?? ((p) => readFile(p, 'utf8'))
  }

  get state(): RenewerState {
    return this.#state
  }

  /** Reads the certificate and schedules its renewal; never fails on a bad file (that is a state). */
  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#started) return
    this.#started = true
    this.#o.link.on('connected', this.#onConnected)
    await this.#reload()
  }

  /**
   * Idempotent; lets a renewal in progress finish installing (up to stopGraceMs), so an issued certificate is not
   * lost.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#o.link.off('connected', this.#onConnected)
    this.#disarm()
    this.#state = 'stopped'
    const running = this.#running
    if (running === undefined) return
    let timer: unknown
    await Promise.race([
      running,
      new Promise<void>((resolve) => (timer = this.#clock.setTimeout(resolve, this.#o.stopGraceMs ?? 5_000))),
    ])
    this.#clock.clearTimeout(timer)
  }

  status(): CertificateRenewerStatus {
    const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())
    const c = this.#current
    return {
      state: this.#state,
      certFile: this.#o.files.cert,
      serial: c?.serial ?? null,
      notBefore: iso(c?.notBefore ?? null),
      notAfter: iso(c?.notAfter ?? null),
      nextRenewalAt: iso(this.#nextAt),
      lastRenewalAt: iso(this.#lastRenewalAt),
      renewals: this.#renewals,
      failures: this.#failures,
      lastError:
        this.#lastError === null ? null : { ...this.#lastError, at: new Date(this.#lastError.at).toISOString() },
    }
  }

  /** Re-reads the certificate file and schedules from it. */
  async #reload(): Promise<void> {
    let loaded: Loaded
    try {
      loaded = parseCertificate(await this.#read(this.#o.files.cert))
    } catch (err) {
      if (this.#stopped) return
      this.#fail(err, 'unreadable')
      return
    }
    if (this.#stopped) return
    const changed = this.#current?.serial !== loaded.serial
    this.#current = loaded
    const now = this.#clock.now()
    const fields = {
      certFile: this.#o.files.cert,
      serial: loaded.serial,
      notAfter: new Date(loaded.notAfter).toISOString(),
    }
    if (now >= loaded.notAfter) {
      this.#state = 'expired'
      this.#log.error(
        { ...fields, expiredForSec: Math.round((now - loaded.notAfter) / 1000) },
        'upstream client certificate has expired: the upstream will refuse it; re-provision it (edge-agent certs issue on the upstream agent) and copy it here',
      )
      // Checked again on the next connect (only a re-provisioned pair connects) and now and then.
      this.#arm(now + this.#o.retryMaxMs, () => this.#reload())
      return
    }
    if (this.#state === 'retrying' && !changed) return // keep the retry already scheduled
    const at = renewalTime(loaded.notBefore, loaded.notAfter, this.#o.atFraction, this.#random())
    this.#state = 'scheduled'
    this.#arm(at, () => this.#due())
    if (changed)
      this.#log.info({ ...fields, renewAt: new Date(at).toISOString() }, 'upstream certificate renewal scheduled')
  }

  /** Returns the attempt it started, if any (a fake clock awaits timer callbacks). */
  #due(): Promise<void> | undefined {
    if (this.#stopped) return undefined
    this.#state = 'due'
    return this.#kick()
  }

  /** Renews now if the link is up; else waits for 'connected' (state 'due'). */
  #kick(): Promise<void> | undefined {
    if (this.#stopped || this.#running !== undefined || !this.#o.link.connected) return this.#running
    this.#running = this.#attempt().finally(() => {
      this.#running = undefined
      // Due again while this attempt was finishing (a lifetime shorter than the schedule's slack).
      if (this.#state === 'due') void this.#kick()
    })
    return this.#running
  }

  async #attempt(): Promise<void> {
    this.#state = 'renewing'
    this.#nextAt = null
    const f = this.#o.files
    let renewed: RenewedCertificate
    try {
      const [certPem, keyPem, caPem] = await Promise.all([this.#read(f.cert), this.#read(f.key), this.#read(f.ca)])
      const current = parseCertificate(certPem)
      this.#current = current
      if (this.#clock.now() >= current.notAfter) {
        await this.#reload() // logs the expiry
        return
      }
      this.#log.info(
        { certFile: f.cert, serial: current.serial, id: current.id },
        'renewing the upstream client certificate',
      )
      renewed = await this.#o.renew({ id: current.id, certPem, keyPem, caPem })
      await this.#o.install(renewed)
    } catch (err) {
      this.#fail(err, 'retrying')
      return
    }
    this.#renewals++
    this.#failures = 0
    this.#lastError = null
    this.#lastRenewalAt = this.#clock.now()
    this.#log.info(
      {
        certFile: f.cert,
        serial: renewed.serial,
        notBefore: renewed.notBefore,
        notAfter: renewed.notAfter,
        keyRotated: renewed.keyRotated,
      },
      'upstream client certificate renewed',
    )
    // Scheduled from the installed file, not from the reply: what the next connection will use.
    this.#state = 'scheduled'
    await this.#reload()
  }

  #fail(err: unknown, state: 'retrying' | 'unreadable'): void {
    this.#failures++
    const e = err instanceof Error ? err : new Error(String(err))
    const rawCode = (e as { code?: unknown }).code
    const code = typeof rawCode === 'string' ? rawCode : null
    const now = this.#clock.now()
    this.#lastError = { message: e.message, code, at: now }
    if (this.#stopped) return
    // The upstream's own hint (too early, rate limited, clock not trusted) wins over the backoff.
    const hint = (e as { retryAfterSec?: unknown }).retryAfterSec
    const delay = retryDelay(
      this.#failures,
      this.#o,
      this.#random(),
      typeof hint === 'number' ? hint * 1000 : undefined,
    )
    this.#state = state
    const retryAt = now + delay
    const notAfter = this.#current?.notAfter
    const fields = {
      err: e,
      certFile: this.#o.files.cert,
      attempt: this.#failures,
      retryInMs: delay,
      ...(notAfter === undefined ? {} : { notAfter: new Date(notAfter).toISOString() }),
    }
    if (state === 'unreadable') this.#log.warn(fields, 'upstream client certificate unreadable, retrying')
    else if (notAfter !== undefined && retryAt >= notAfter)
      this.#log.error(fields, 'upstream certificate renewal failed and the certificate expires before the next attempt')
    else this.#log.warn(fields, 'upstream certificate renewal failed, retrying')
    this.#arm(retryAt, () => (state === 'unreadable' ? this.#reload() : this.#due()))
  }

  #arm(at: number, fn: () => unknown): void {
    this.#disarm()
    if (this.#stopped) return
    this.#nextAt = at
    const ms = at - this.#clock.now()
    this.#timer =
      ms > MAX_TIMER_MS
        ? this.#clock.setTimeout(() => this.#arm(at, fn), MAX_TIMER_MS)
        : this.#clock.setTimeout(
            () => {
              this.#timer = undefined
              return fn()
            },
            Math.max(0, ms),
          )
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/** Identity, serial and validity of a PEM certificate (the first one of a bundle). */
function parseCertificate(pem: string): Loaded {
  const cert = new X509Certificate(pem)
  const id = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? ''
  if (id === '') throw new Error('the certificate has no CN (the identity at the upstream)')
  return { id, serial: cert.serialNumber, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) }
}
