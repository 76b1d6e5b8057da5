// The certs component: the local CA, the clock guard, the broker's server
// certificate rotation, renewal over MQTT and revocation, behind one
// start()/stop(). It knows nothing of the broker: it emits events
// ('rotated', 'revoked', 'crl', 'clock') and answers renewal requests, and
// the agent (app.ts) wires those to LocalBroker.
//
// Revocations can come from the CLI (`edge-agent certs revoke`, another
// process writing revoked/<serial>.json): the directory is watched
// (fs.watch, with a poll as fallback) so a revocation takes effect within
// moments: a new CRL is signed and published, and 'revoked' lets the agent
// close the live session and refuse new handshakes.
import { EventEmitter } from 'node:events'
import { watch, type FSWatcher } from 'node:fs'
import { unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { ClockGuard, systemClock, type Clock, type ClockStatus, type TimerHandle } from './clock.js'
import { CertsError } from './errors.js'
import { readOptional } from './ca-files.js'
import { LocalCa, type IssuedRecord, type RevokedRecord } from './local-ca.js'
import { RenewalService, type RenewalInput, type RenewalOutcome, type RenewalStats } from './renewal-service.js'
import { ServerCertRotation, type ServerCertStats, type ServerTlsMaterial } from './rotation.js'

export interface CertsServiceOptions {
  /** The agent's state directory; the CA lives in `<dataDir>/certs`. */
  readonly dataDir: string
  readonly logger: Logger
  /** Create a self-signed local CA at first start if there is none. */
  readonly autoInit: boolean
  /** CN of an auto-created CA. */
  readonly caName: string
  readonly caLifetimeMs: number
  readonly backdateMs: number
  readonly maxIdBytes: number
  readonly device: { readonly lifetimeMs: number; readonly renewAfter: number }
  readonly server: { readonly lifetimeMs: number; readonly renewAfter: number; readonly names: readonly string[] }
  readonly renewal: { readonly enabled: boolean; readonly topicPrefix: string; readonly minRequestIntervalMs: number }
  readonly crl: { readonly topic: string; readonly validityMs: number }
  readonly clockGuard: { readonly toleranceMs: number; readonly maxForwardJumpMs: number }
  /** Injected time (tests); default the system clock. */
  readonly clock?: Clock
  /** Randomness in [0, 1) for jitter; default Math.random. */
  readonly random?: () => number
  /** Fallback poll of the state directory, ms. Default 2000. */
  readonly pollMs?: number
  /** How often the clock is assessed, ms. Default 5000. */
  readonly clockCheckMs?: number
  /** Retry bounds of a postponed server rotation, ms. */
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
}

export interface RevokedEvent {
  readonly revoked: readonly RevokedRecord[]
  /** Every serial revoked now (for the TLS listeners). */
  readonly serials: ReadonlySet<string>
}

export interface CrlEvent {
  readonly topic: string
  readonly pem: string
}

export interface CertsEvents {
  rotated: [material: ServerTlsMaterial]
  revoked: [event: RevokedEvent]
  crl: [event: CrlEvent]
  clock: [status: ClockStatus]
}

export interface CertsStats {
  readonly ca: {
    readonly subject: string
    readonly notAfter: string
    readonly expiresInDays: number
    readonly intermediate: boolean
  }
  readonly server: ServerCertStats & { readonly expiresInSec: number | null }
  /** Device certificates issued by this process since start (CLI-issued ones are not counted). */
  readonly issued: number
  readonly renewal: RenewalStats
  /** Serials revoked and not yet expired. */
  readonly revoked: number
  readonly crl: { readonly nextUpdate: string | null }
  readonly clock: ClockStatus
}

export class CertsService extends EventEmitter<CertsEvents> {
  readonly name = 'certs'
  readonly #o: CertsServiceOptions
  readonly #log: Logger
  readonly #clock: Clock
  readonly #random: () => number
  readonly guard: ClockGuard
  readonly ca: LocalCa
  readonly renewal: RenewalService
  readonly server: ServerCertRotation
  #watchers: FSWatcher[] = []
  #pollTimer: TimerHandle | undefined
  #clockTimer: TimerHandle | undefined
  #polling: Promise<void> = Promise.resolve()
  #pollQueued = false
  #crlNextUpdate: number | null = null
  #lastIssuedReload = 0
  #lastCaWarning = -Infinity
  #issued = 0
  #started = false
  #stopping: Promise<void> | undefined

  constructor(opts: CertsServiceOptions) {
    super()
    this.#o = opts
    this.#log = opts.logger.child({ component: 'certs' })
    this.#clock = opts.clock ?? systemClock
    this.#random = opts.random ?? Math.random
    const dir = join(opts.dataDir, 'certs')
    this.guard = new ClockGuard({
      clock: this.#clock,
      file: join(dir, 'clock.json'),
      toleranceMs: opts.clockGuard.toleranceMs,
      maxForwardJumpMs: opts.clockGuard.maxForwardJumpMs,
    })
    this.ca = new LocalCa({
      dir,
      guard: this.guard,
      backdateMs: opts.backdateMs,
      crlValidityMs: opts.crl.validityMs,
      maxIdBytes: opts.maxIdBytes,
    })
    this.renewal = new RenewalService({
      ca: this.ca,
      guard: this.guard,
      logger: this.#log,
      enabled: opts.renewal.enabled,
      topicPrefix: opts.renewal.topicPrefix,
      lifetimeMs: opts.device.lifetimeMs,
      backdateMs: opts.backdateMs,
      renewAfter: opts.device.renewAfter,
      minRequestIntervalMs: opts.renewal.minRequestIntervalMs,
      monotonic: () => this.#clock.monotonic(),
    })
    this.server = new ServerCertRotation({
      ca: this.ca,
      guard: this.guard,
      clock: this.#clock,
      logger: this.#log,
      lifetimeMs: opts.server.lifetimeMs,
      renewAfter: opts.server.renewAfter,
      backdateMs: opts.backdateMs,
      names: opts.server.names,
      random: this.#random,
      ...(opts.retryMinMs === undefined ? {} : { retryMinMs: opts.retryMinMs }),
      ...(opts.retryMaxMs === undefined ? {} : { retryMaxMs: opts.retryMaxMs }),
    })
    this.server.on('rotated', (m) => this.emit('rotated', m))
    this.guard.on('change', (status) => {
      if (status.state === 'ok') this.#log.info({ clock: status }, 'clock trusted again')
      else this.#log.warn({ clock: status }, 'clock suspicious: certificate issuance paused')
      this.emit('clock', status)
    })
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) return
    const p = await LocalCa.prepareDir(this.ca.paths.dir)
    await this.guard.load()
    await this.#consumeTrustMarker()
    const clock = this.guard.assess()
    if (clock.state !== 'ok') this.#log.warn({ clock }, 'clock suspicious: certificate issuance paused')
    signal.throwIfAborted()
    if (!LocalCa.exists(p.dir)) {
      if (!this.#o.autoInit) {
        throw new CertsError(
          'EDGE_ERR_CERT_CA_MISSING',
          `no local CA in ${p.dir}: run \`edge-agent certs init\` (or import one with \`certs import-ca\`), or set certs.autoInit: true`,
        )
      }
      await LocalCa.init(p.dir, {
        name: this.#o.caName,
        lifetimeMs: this.#o.caLifetimeMs,
        now: this.guard.trustedNow(),
      })
      this.#log.info({ dir: p.dir, name: this.#o.caName }, 'local CA created')
    }
    await this.ca.load()
    this.#lastIssuedReload = this.#clock.monotonic()
    const s = this.ca.signer
    this.#log.info(
      {
        subject: s.cert.subject,
        notAfter: new Date(s.notAfter).toISOString(),
        intermediate: s.chainPem.length > 0,
        issued: this.ca.list().length,
        revoked: this.ca.revocations().length,
      },
      'local CA loaded',
    )
    await this.#refreshCrl(true)
    signal.throwIfAborted()
    await this.server.start()
    this.#watch()
    this.#armPoll()
    this.#armClock()
    this.#started = true
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#started = false
      for (const w of this.#watchers) w.close()
      this.#watchers = []
      if (this.#pollTimer !== undefined) this.#clock.clearTimeout(this.#pollTimer)
      if (this.#clockTimer !== undefined) this.#clock.clearTimeout(this.#clockTimer)
      this.server.stop()
      await this.#polling
      await this.guard.flush()
    })()
    return this.#stopping
  }

  /** TLS material for the broker's mqtts listeners. */
  tlsMaterial(): ServerTlsMaterial {
    return this.server.material()
  }

  revokedSerials(): ReadonlySet<string> {
    return this.ca.revokedSerials()
  }

  /** The current CRL (PEM) and the topic it is published on. */
  async currentCrl(): Promise<CrlEvent> {
    const pem = (await readOptional(this.ca.paths.crlPem)) ?? ''
    return { topic: this.#o.crl.topic, pem }
  }

  /** True if the CA ever issued to `id`: such client ids are reserved to certificate sessions. */
  isKnownDevice(id: string): boolean {
    return this.ca.newest(id) !== undefined
  }

  /** Answers a renewal request from a device session. */
  async handleRenewal(input: RenewalInput): Promise<RenewalOutcome> {
    const out = await this.renewal.handle(input)
    if (out.issued !== undefined) this.#issued++
    return out
  }

  /** Revokes in-process (same effect as the CLI); resolves with what was revoked. */
  async revoke(target: { id?: string; serial?: string; reason?: string }): Promise<RevokedRecord[]> {
    const revoked = await this.ca.revoke(target)
    if (revoked.length > 0) await this.#announceRevocations(revoked)
    return revoked
  }

  /** Accepts the wall clock as it is now (operator override). */
  trustClock(): ClockStatus {
    return this.guard.trustNow()
  }

  stats(): CertsStats {
    const clock = this.guard.status()
    const now = clock.trustedTime
    const server = this.server.stats()
    let ca: CertsStats['ca'] = { subject: '', notAfter: '', expiresInDays: 0, intermediate: false }
    try {
      const s = this.ca.signer
      ca = {
        subject: s.cert.subject,
        notAfter: new Date(s.notAfter).toISOString(),
        expiresInDays: Math.floor(((s.notAfter - now) / 86_400_000) * 10) / 10,
        intermediate: s.chainPem.length > 0,
      }
    } catch {
      // not loaded yet
    }
    return {
      ca,
      server: { ...server, expiresInSec: server.notAfter === null ? null : Math.round((server.notAfter - now) / 1000) },
      issued: this.#issued,
      renewal: this.renewal.stats(),
      revoked: this.ca.revocations().filter((r) => r.notAfter > now).length,
      crl: { nextUpdate: this.#crlNextUpdate === null ? null : new Date(this.#crlNextUpdate).toISOString() },
      clock,
    }
  }

  /** Device certificates known to this process (for diagnostics). */
  issuedCertificates(): IssuedRecord[] {
    return this.ca.list()
  }

  #watch(): void {
    const p = this.ca.paths
    for (const dir of [p.revokedDir, p.dir, p.issuedDir]) {
      const onEvent =
        dir === p.issuedDir
          ? (_event: string, name: string | null) => void (name === null ? undefined : this.ca.noteIssuedFile(name))
          : () => this.#schedulePoll()
      try {
        const w = watch(dir, { persistent: false }, onEvent)
        w.on('error', (err) => this.#log.warn({ err, dir }, 'state directory watch failed; polling only'))
        this.#watchers.push(w)
      } catch (err) {
        this.#log.warn({ err, dir }, 'state directory watch failed; polling only')
      }
    }
  }

  #armPoll(): void {
    if (this.#pollTimer !== undefined) this.#clock.clearTimeout(this.#pollTimer)
    this.#pollTimer = this.#clock.setTimeout(() => {
      this.#schedulePoll()
      this.#armPoll()
    }, this.#o.pollMs ?? 2_000)
  }

  #armClock(): void {
    if (this.#clockTimer !== undefined) this.#clock.clearTimeout(this.#clockTimer)
    this.#clockTimer = this.#clock.setTimeout(() => {
      this.guard.assess()
      this.#armClock()
    }, this.#o.clockCheckMs ?? 5_000)
  }

  /** Runs one poll after the current one; coalesces bursts of watch events. */
  #schedulePoll(): void {
    if (this.#pollQueued) return
    this.#pollQueued = true
    this.#polling = this.#polling.then(async () => {
      this.#pollQueued = false
      try {
        await this.#poll()
      } catch (err) {
        this.#log.error({ err }, 'certs state poll failed')
      }
    })
  }

  async #poll(): Promise<void> {
    await this.#consumeTrustMarker()
    const added = await this.ca.reloadRevocations()
    if (added.length > 0) {
      await this.ca.writeCrl().then((crl) => (this.#crlNextUpdate = crl.nextUpdate))
      await this.#announceRevocations(added, false)
    } else await this.#refreshCrl(false)
    const mono = this.#clock.monotonic()
    if (mono - this.#lastIssuedReload > 60_000) {
      this.#lastIssuedReload = mono
      await this.ca.reloadIssued()
    }
    this.#checkCaExpiry(mono)
  }

  async #announceRevocations(revoked: readonly RevokedRecord[], crlWritten = true): Promise<void> {
    if (crlWritten) this.#crlNextUpdate = (await this.ca.readCrl())?.nextUpdate ?? this.#crlNextUpdate
    for (const r of revoked)
      this.#log.warn({ deviceId: r.id, serial: r.serial, reason: r.reason }, 'certificate revoked')
    this.emit('revoked', { revoked, serials: this.ca.revokedSerials() })
    this.emit('crl', await this.currentCrl())
  }

  /** Re-signs the CRL when missing or past half its validity (and the clock is trusted). */
  async #refreshCrl(atStart: boolean): Promise<void> {
    const current = await this.ca.readCrl()
    const now = this.guard.trustedNow()
    const stale = current === undefined || current.nextUpdate - now < this.#o.crl.validityMs / 2
    if (current !== undefined) this.#crlNextUpdate = current.nextUpdate
    if (!stale) return
    if (current !== undefined && this.guard.suspicious) return
    const crl = await this.ca.writeCrl()
    this.#crlNextUpdate = crl.nextUpdate
    this.#log.info(
      { number: crl.number, nextUpdate: new Date(crl.nextUpdate).toISOString(), revoked: this.ca.revocations().length },
      'crl signed',
    )
    if (!atStart) this.emit('crl', { topic: this.#o.crl.topic, pem: crl.pem })
  }

  async #consumeTrustMarker(): Promise<void> {
    const marker = this.ca.paths.clockTrust
    if ((await readOptional(marker)) === undefined) return
    await unlink(marker).catch(() => undefined)
    const status = this.guard.trustNow()
    this.#log.warn({ clock: status }, 'clock trusted by operator')
  }

  #checkCaExpiry(mono: number): void {
    let s
    try {
      s = this.ca.signer
    } catch {
      return
    }
    const now = this.guard.trustedNow()
    const left = s.notAfter - now
    const threshold = Math.max(30 * 86_400_000, (s.notAfter - s.notBefore) / 3)
    if (left < threshold && mono - this.#lastCaWarning > 86_400_000) {
      this.#lastCaWarning = mono
      this.#log.warn(
        { notAfter: new Date(s.notAfter).toISOString(), daysLeft: Math.floor(left / 86_400_000) },
        'local CA expires soon: renew or re-import it',
      )
    }
  }
}
