// The gateway's own certificate from the site's ACME CA: issued, checked,
// tried against the upstreams that use it, then promoted; renewed on a
// schedule; kept while the CA or the link is down.
//
// Files, in <dataDir>/acme (0700): account.key, account.json, gateway.pem
// (the key, then the chain: one file, so that one rename promotes both) and,
// while a renewal is being checked, gateway.next.pem beside it.
import { EventEmitter } from 'node:events'
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import * as acme from 'acme-client'
import type { Logger } from 'pino'
import { writeAtomic } from '../ca-files.js'
import { splitPem, summarize, type CertSummary } from '../x509.js'
import { MAX_TIMER_MS, systemClock, type Clock, type TimerHandle } from '../clock.js'
import { AcmeError, isAcmeError, type AcmeErrorCode } from './errors.js'
import { issuedProblems } from './check.js'
import { nextRenewal, acmeRetryDelay, type RenewalWindow } from './schedule.js'
import type { HandshakeResult } from './handshake.js'

/** What issues certificates: AcmeIssuer in production. */
export interface CertificateSource {
  issue(o: { keyPem: string; identifiers: readonly string[] }): Promise<string>
  /** The CA's suggested renewal window (ARI), if it has one for this certificate. */
  renewalWindow?(chainPem: string): Promise<RenewalWindow | undefined>
}

export interface GatewayMaterial {
  readonly cert: string
  readonly key: string
  readonly summary: CertSummary
}

export interface GatewayCertificateOptions {
  /** <dataDir>/acme */
  readonly dir: string
  readonly source: CertificateSource
  readonly identifiers: readonly string[]
  readonly renewAt: number
  readonly maxIntervalMs: number
  readonly retryMinMs: number
  readonly retryMaxMs: number
  readonly rotateKey: boolean
  /** Warn this long before expiry. */
  readonly warnBeforeMs: number
  /** CAs the issued chain must lead to (PEM file, read at start); undefined: consistency only. */
  readonly trustFile?: string | undefined
  /** Tries the candidate against every upstream that uses it; empty = none does. */
  readonly tryCandidate?: (m: {
    cert: string
    key: string
  }) => Promise<readonly (HandshakeResult & { upstream: string })[]>
  readonly logger: Logger
  readonly clock?: Clock
  readonly random?: () => number
}

export interface GatewayCertificateEvents {
  /** A new certificate was promoted: upstreams reconnect, listeners swap. */
  promoted: [GatewayMaterial]
  /** Expired (true) or valid again (false). */
  expired: [boolean]
}

export type GatewayCertState = 'none' | 'valid' | 'expiring' | 'expired'

export interface GatewayCertificateStatus {
  readonly state: GatewayCertState
  readonly identifiers: readonly string[]
  readonly subject: string | null
  readonly issuer: string | null
  readonly serial: string | null
  readonly notBefore: string | null
  readonly notAfter: string | null
  readonly expiresInSec: number | null
  readonly nextRenewalAt: string | null
  readonly renewing: boolean
  readonly renewals: number
  /** Consecutive failed attempts (0 after a success). */
  readonly failures: number
  readonly lastAttemptAt: string | null
  readonly lastError: { readonly code: AcmeErrorCode; readonly message: string; readonly at: string } | null
  /** Test handshakes of the last candidate, by upstream. */
  readonly lastTest: readonly (HandshakeResult & { upstream: string })[]
}

export class GatewayCertificate extends EventEmitter<GatewayCertificateEvents> {
  readonly name = 'acme'
  readonly #o: GatewayCertificateOptions
  readonly #log: Logger
  readonly #clock: Clock
  readonly #random: () => number
  #current: GatewayMaterial | undefined
  #promotedAt = 0
  #nextAt: number | undefined
  #timer: TimerHandle | undefined
  #expiryTimer: TimerHandle | undefined
  #running: Promise<boolean> | undefined
  #started = false
  #stopped = false
  #renewals = 0
  #failures = 0
  #lastAttemptAt: number | undefined
  #lastError: { code: AcmeErrorCode; message: string; at: number } | undefined
  #lastTest: readonly (HandshakeResult & { upstream: string })[] = []
  #expired = false
  #warned = false
  #trustPem: string | undefined

  constructor(o: GatewayCertificateOptions) {
    super()
    this.#o = o
    this.#log = o.logger.child({ component: 'acme' })
    this.#clock = o.clock ?? systemClock
    this.#random = o.random ?? Math.random
  }

  get file(): string {
    return join(this.#o.dir, 'gateway.pem')
  }

  /** The promoted certificate and key, or undefined before the first issuance. */
  material(): GatewayMaterial | undefined {
    return this.#current
  }

  get expired(): boolean {
    return this.#expired
  }

  /** Loads the current certificate and schedules; never waits for the CA (an unreachable CA is a state). */
  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#started) return
    this.#started = true
    await mkdir(this.#o.dir, { recursive: true, mode: 0o700 })
    await rm(join(this.#o.dir, 'gateway.next.pem'), { force: true })
    if (this.#o.trustFile !== undefined) {
      try {
        this.#trustPem = await readFile(this.#o.trustFile, 'utf8')
      } catch (err) {
        throw new AcmeError(
          'EDGE_ERR_ACME_STATE',
          `cannot read trustFile ${this.#o.trustFile}: ${(err as Error).message}`,
          { cause: err },
        )
      }
    }
    const loaded = await this.#load()
    if (loaded !== undefined) {
      this.#current = loaded.material
      this.#promotedAt = loaded.promotedAt
      this.#log.info(
        { serial: loaded.material.summary.serial, notAfter: new Date(loaded.material.summary.notAfter).toISOString() },
        'gateway certificate loaded',
      )
    }
    this.#checkExpiry()
    this.#schedule(this.#current === undefined ? this.#clock.now() : this.#planned())
  }

  stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    if (this.#expiryTimer !== undefined) this.#clock.clearTimeout(this.#expiryTimer)
    // An order in flight ends with its own timeouts; its result is dropped.
    return Promise.resolve()
  }

  /** Renews now (`certs renew-gateway`), or joins the attempt in flight; true if a certificate was promoted. */
  renewNow(): Promise<boolean> {
    return this.#attempt('requested')
  }

  status(): GatewayCertificateStatus {
    const c = this.#current?.summary
    const now = this.#clock.now()
    const iso = (t: number | undefined): string | null => (t === undefined ? null : new Date(t).toISOString())
    return {
      state: this.#state(now),
      identifiers: this.#o.identifiers,
      subject: c?.subject ?? null,
      issuer: c?.issuer ?? null,
      serial: c?.serial ?? null,
      notBefore: iso(c?.notBefore),
      notAfter: iso(c?.notAfter),
      expiresInSec: c === undefined ? null : Math.round((c.notAfter - now) / 1000),
      nextRenewalAt: iso(this.#nextAt),
      renewing: this.#running !== undefined,
      renewals: this.#renewals,
      failures: this.#failures,
      lastAttemptAt: iso(this.#lastAttemptAt),
      lastError:
        this.#lastError === undefined ? null : { ...this.#lastError, at: new Date(this.#lastError.at).toISOString() },
      lastTest: this.#lastTest,
    }
  }

  #state(now: number): GatewayCertState {
    const c = this.#current?.summary
    if (c === undefined) return 'none'
    if (c.notAfter <= now) return 'expired'
    return c.notAfter - now <= this.#o.warnBeforeMs ? 'expiring' : 'valid'
  }

  // ---------------------------------------------------------------------------

  #planned(): number {
    const c = this.#current?.summary
    if (c === undefined) return this.#clock.now()
    return nextRenewal({
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      promotedAt: this.#promotedAt,
      renewAt: this.#o.renewAt,
      maxIntervalMs: this.#o.maxIntervalMs,
      now: this.#clock.now(),
      random: this.#random,
    })
  }

  #schedule(at: number): void {
    if (this.#stopped) return
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#nextAt = at
    const arm = (): void => {
      const wait = at - this.#clock.now()
      if (wait > MAX_TIMER_MS) {
        this.#timer = this.#clock.setTimeout(arm, MAX_TIMER_MS)
        return
      }
      this.#timer = this.#clock.setTimeout(() => this.#attempt('scheduled'), Math.max(0, wait))
    }
    arm()
  }

  #attempt(reason: 'scheduled' | 'requested'): Promise<boolean> {
    // Never more than one attempt in flight.
    if (this.#running !== undefined) return this.#running
    if (this.#stopped) return Promise.resolve(false)
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer)
    this.#running = this.#renew(reason).finally(() => {
      this.#running = undefined
    })
    return this.#running
  }

  async #renew(reason: string): Promise<boolean> {
    this.#lastAttemptAt = this.#clock.now()
    const log = this.#log.child({ attempt: this.#failures + 1 })
    log.info(
      { reason, identifiers: this.#o.identifiers, current: this.#current?.summary.serial },
      'gateway certificate renewal started',
    )
    const next = join(this.#o.dir, 'gateway.next.pem')
    try {
      const keyPem =
        this.#o.rotateKey || this.#current === undefined
          ? await acme.crypto.createPrivateEcdsaKey('P-256')
          : this.#current.key
      const key = keyPem.toString()
      const chain = await this.#o.source.issue({ keyPem: key, identifiers: this.#o.identifiers })
      const problems = issuedProblems({
        chainPem: chain,
        keyPem: key,
        identifiers: this.#o.identifiers,
        trustPem: this.#trustPem,
        now: this.#clock.now(),
        toleranceMs: 300_000,
      })
      if (problems.length > 0)
        throw new AcmeError(
          'EDGE_ERR_ACME_CERT_INVALID',
          `the issued certificate does not check out: ${problems.join('; ')}`,
        )
      const candidate = { cert: splitPem(chain).join(''), key: ensureNewline(key) }
      // Beside the current pair: a crash from here on leaves the current one in place.
      await this.#write(next, `${candidate.key}${candidate.cert}`)
      const tests = (await this.#o.tryCandidate?.(candidate)) ?? []
      this.#lastTest = tests
      const refused = tests.filter((t) => !t.ok)
      if (refused.length > 0) {
        throw new AcmeError(
          'EDGE_ERR_ACME_UPSTREAM_REFUSED',
          `upstream ${refused.map((t) => `${t.upstream} (${t.error ?? 'refused'})`).join(', ')} refused the new ` +
            'certificate; keeping the current one',
        )
      }
      if (this.#stopped) return false
      try {
        await renameAtomic(next, this.file)
      } catch (err) {
        throw new AcmeError('EDGE_ERR_ACME_WRITE_FAILED', `cannot promote ${next}: ${(err as Error).message}`, {
          cause: err,
        })
      }
      const summary = summarize(candidate.cert)
      this.#current = { ...candidate, summary }
      this.#promotedAt = this.#clock.now()
      this.#renewals++
      this.#failures = 0
      this.#lastError = undefined
      this.#warned = false
      log.info(
        {
          serial: summary.serial,
          issuer: summary.issuer,
          notAfter: new Date(summary.notAfter).toISOString(),
          upstreamsTested: tests.map((t) => t.upstream),
        },
        'gateway certificate promoted',
      )
      this.#checkExpiry()
      this.emit('promoted', this.#current)
      const window = await this.#ariWindow(chain)
      this.#schedule(
        window === undefined
          ? this.#planned()
          : Math.min(
              this.#planned(),
              Math.max(this.#clock.now(), window.start + this.#random() * (window.end - window.start)),
            ),
      )
      return true
    } catch (err) {
      await rm(next, { force: true }).catch(() => undefined)
      const e = isAcmeError(err)
        ? err
        : new AcmeError('EDGE_ERR_ACME_REFUSED', (err as Error).message ?? String(err), { cause: err })
      this.#failures++
      this.#lastError = { code: e.code, message: e.message, at: this.#clock.now() }
      const delay = acmeRetryDelay(this.#failures, this.#o.retryMinMs, this.#o.retryMaxMs, this.#random)
      const at = this.#clock.now() + delay
      log.warn(
        {
          code: e.code,
          err: e.message,
          failures: this.#failures,
          retryInMs: delay,
          current: this.#current?.summary.serial ?? null,
        },
        'gateway certificate renewal failed; keeping the current certificate',
      )
      this.#schedule(at)
      return false
    }
  }

  async #ariWindow(chain: string): Promise<RenewalWindow | undefined> {
    if (this.#o.source.renewalWindow === undefined) return undefined
    try {
      return await this.#o.source.renewalWindow(chain)
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'renewal information unavailable')
      return undefined
    }
  }

  async #write(file: string, data: string): Promise<void> {
    try {
      await writeAtomic(file, data, 0o600)
    } catch (err) {
      throw new AcmeError('EDGE_ERR_ACME_WRITE_FAILED', `cannot write ${file}: ${(err as Error).message}`, {
        cause: err,
      })
    }
  }

  async #load(): Promise<{ material: GatewayMaterial; promotedAt: number } | undefined> {
    let text: string
    let mtime: number
    try {
      text = await readFile(this.file, 'utf8')
      mtime = (await stat(this.file)).mtimeMs
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new AcmeError('EDGE_ERR_ACME_STATE', `cannot read ${this.file}: ${(err as Error).message}`, { cause: err })
    }
    const key = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----\n?/.exec(text)?.[0]
    const certs = splitPem(text)
    if (key === undefined || certs.length === 0) {
      // Corrupt: treated as absent, so that a new one is issued; the file stays for inspection.
      this.#log.error(
        { file: this.file, code: 'EDGE_ERR_ACME_STATE' },
        'gateway certificate file is corrupt; issuing a new one',
      )
      return undefined
    }
    const cert = certs.join('')
    return { material: { cert, key: ensureNewline(key), summary: summarize(cert) }, promotedAt: mtime }
  }

  /** Tracks expiry: a warning at the horizon, 'expired' at notAfter, by timer. */
  #checkExpiry(): void {
    if (this.#expiryTimer !== undefined) this.#clock.clearTimeout(this.#expiryTimer)
    const c = this.#current?.summary
    if (c === undefined || this.#stopped) return
    const now = this.#clock.now()
    const expired = c.notAfter <= now
    if (expired !== this.#expired) {
      this.#expired = expired
      if (expired)
        this.#log.error(
          { code: 'EDGE_ERR_ACME_EXPIRED', serial: c.serial, notAfter: new Date(c.notAfter).toISOString() },
          'gateway certificate expired',
        )
      this.emit('expired', expired)
    }
    if (!expired && !this.#warned && c.notAfter - now <= this.#o.warnBeforeMs) {
      this.#warned = true
      this.#log.warn(
        { serial: c.serial, notAfter: new Date(c.notAfter).toISOString(), lastError: this.#lastError?.code },
        'gateway certificate expires soon',
      )
    }
    if (expired) return
    const nextCheck =
      c.notAfter - now > this.#o.warnBeforeMs ? c.notAfter - this.#o.warnBeforeMs - now : c.notAfter - now
    this.#expiryTimer = this.#clock.setTimeout(
      () => this.#checkExpiry(),
      Math.min(MAX_TIMER_MS, Math.max(0, nextCheck) + 1),
    )
  }
}

function ensureNewline(s: string): string {
  return s.endsWith('\n') ? s : `${s}\n`
}

async function renameAtomic(from: string, to: string): Promise<void> {
  await rename(from, to)
  const d = await open(dirname(to), 'r')
  try {
    await d.sync().catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EINVAL') throw err
    })
  } finally {
    await d.close()
  }
}
