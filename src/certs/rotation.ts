// The broker's own server certificate: issued by the local CA with a short
// lifetime and rotated before it runs out, on the gateway alone.
//
// Schedule: rotate once `renewAfter` of the nominal lifetime has passed, minus
// a jitter drawn once per certificate from U(0, lifetime/20) (step-ca, thin-edge
// RandomizedDelaySec). Timers are monotonic (setTimeout) and never sleep longer
// than `recheckMs` before looking at the trusted clock again, so a wall-clock
// step moves the schedule instead of firing a burst. While the clock is
// suspicious nothing is issued: the current certificate stays, and the next try
// backs off exponentially (retryMinMs → retryMaxMs, with jitter).
//
// Emits 'rotated' with the new material; the agent hands it to
// LocalBroker#updateTls(), which swaps it in without dropping devices.
import { EventEmitter } from 'node:events'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { isIP } from 'node:net'
import type { Logger } from 'pino'
import type { Clock, ClockGuard, TimerHandle } from './clock.js'
import { assertPrivate, readOptional, writeAtomic } from './ca-files.js'
import type { LocalCa } from './local-ca.js'
import { generateKeyPair, summarizeNode } from './x509.js'

/** What the TLS listener needs; structurally the broker's TlsMaterial. */
export interface ServerTlsMaterial {
  /** Private key (PKCS#8 PEM). */
  readonly key: string
  /** Server certificate followed by the CA and its issuers. */
  readonly cert: string
  /** Trust anchors for device certificates: the local CA. */
  readonly ca: string
  readonly serial: string
  readonly notAfter: number
}

export interface ServerCertOptions {
  readonly ca: LocalCa
  readonly guard: ClockGuard
  readonly clock: Clock
  readonly logger: Logger
  readonly lifetimeMs: number
  readonly renewAfter: number
  readonly backdateMs: number
  /** DNS names and IP addresses for the SAN; the first DNS name is the CN. */
  readonly names: readonly string[]
  /** Source of randomness in [0, 1) for jitter. */
  readonly random: () => number
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
  readonly recheckMs?: number
}

export interface ServerCertEvents {
  rotated: [material: ServerTlsMaterial]
}

export interface ServerCertStats {
  readonly serial: string | null
  readonly notAfter: number | null
  readonly nextRotationAt: number | null
  readonly rotations: number
  readonly postponed: number
}

export class ServerCertRotation extends EventEmitter<ServerCertEvents> {
  readonly #o: ServerCertOptions
  readonly #log: Logger
  #material: ServerTlsMaterial | undefined
  #dueAt = Infinity
  #timer: TimerHandle | undefined
  #failures = 0
  #rotations = 0
  #postponed = 0
  #stopped = false
  #busy = false

  constructor(opts: ServerCertOptions) {
    super()
    this.#o = opts
    this.#log = opts.logger
  }

  /** Loads the current certificate, or issues one if there is none usable; then arms the schedule. */
  async start(): Promise<void> {
    this.#stopped = false
    const loaded = await this.#load()
    if (loaded === undefined) await this.#rotate('no usable server certificate', true)
    else this.#adopt(loaded)
    this.#arm()
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  material(): ServerTlsMaterial {
    if (this.#material === undefined) throw new Error('server certificate not loaded')
    return this.#material
  }

  stats(): ServerCertStats {
    return {
      serial: this.#material?.serial ?? null,
      notAfter: this.#material?.notAfter ?? null,
      nextRotationAt: Number.isFinite(this.#dueAt) ? Math.round(this.#dueAt) : null,
      rotations: this.#rotations,
      postponed: this.#postponed,
    }
  }

  /** Rotates now (operator request, CA change); resolves with the new material. */
  async rotateNow(reason: string): Promise<ServerTlsMaterial> {
    await this.#rotate(reason, false)
    this.#arm()
    return this.material()
  }

  /** One look at the clock: rotate if due, else sleep until due (at most recheckMs). */
  async tick(): Promise<void> {
    if (this.#stopped || this.#busy) return
    const status = this.#o.guard.assess()
    const now = this.#o.guard.trustedNow()
    if (now < this.#dueAt) return this.#arm()
    if (status.state !== 'ok') {
      this.#postpone(`clock suspicious (${status.reason ?? ''})`)
      return
    }
    try {
      await this.#rotate('due', false)
      this.#failures = 0
    } catch (err) {
      this.#log.error({ err }, 'server certificate rotation failed')
      this.#postpone('issuance failed')
      return
    }
    this.#arm()
  }

  #arm(): void {
    if (this.#stopped) return
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer)
    const wait = Math.max(0, Math.min(this.#dueAt - this.#o.guard.trustedNow(), this.#o.recheckMs ?? 60_000))
    this.#timer = this.#o.clock.setTimeout(() => this.tick(), wait)
  }

  #postpone(why: string): void {
    this.#postponed++
    this.#failures++
    const min = this.#o.retryMinMs ?? 60_000
    const max = this.#o.retryMaxMs ?? 3_600_000
    const base = Math.min(max, min * 2 ** Math.min(20, this.#failures - 1))
    const wait = base * (0.5 + this.#o.random() / 2)
    this.#log.warn(
      { why, retryInMs: Math.round(wait), serial: this.#material?.serial },
      'server certificate rotation postponed',
    )
    if (this.#stopped) return
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer)
    this.#timer = this.#o.clock.setTimeout(() => this.tick(), wait)
  }

  async #rotate(reason: string, despiteClock: boolean): Promise<void> {
    this.#busy = true
    try {
      const { dns, ip } = splitNames(this.#o.names)
      const key = await generateKeyPair()
      const issued = await this.#o.ca.issue({
        id: dns[0] ?? 'edge-agent',
        profile: 'server',
        publicKey: key.publicKey,
        lifetimeMs: this.#o.lifetimeMs,
        dnsNames: dns,
        ipAddresses: ip,
        despiteClock,
      })
      const p = this.#o.ca.paths
      // Key first: a crash between the two leaves a key without its certificate,
      // which #load() refuses, and a new pair is issued on the next start.
      await writeAtomic(p.serverKey, key.privateKeyPem, 0o600)
      await writeAtomic(p.serverCert, issued.certPem, 0o644)
      const previous = this.#material?.serial
      this.#adopt({ keyPem: key.privateKeyPem, certPem: issued.certPem })
      this.#rotations++
      this.#log.info(
        { reason, serial: issued.serial, previous, notAfter: new Date(issued.notAfter).toISOString() },
        'server certificate rotated',
      )
      this.emit('rotated', this.material())
    } finally {
      this.#busy = false
    }
  }

  #adopt(pair: { keyPem: string; certPem: string }): void {
    const s = summarizeNode(new X509Certificate(pair.certPem))
    const ca = this.#o.ca
    this.#material = {
      key: pair.keyPem,
      cert: pair.certPem + ca.bundlePem(),
      ca: ca.signer.certPem,
      serial: s.serial,
      notAfter: s.notAfter,
    }
    const span = s.notAfter - s.notBefore
    const nominal = span > 2 * this.#o.backdateMs ? span - this.#o.backdateMs : span
    const jitter = this.#o.random() * (nominal / 20)
    this.#dueAt = s.notAfter - (1 - this.#o.renewAfter) * nominal - jitter
  }

  /** The stored pair if it is ours, current, matches its key and carries the configured names. */
  async #load(): Promise<{ keyPem: string; certPem: string } | undefined> {
    const p = this.#o.ca.paths
    const [certPem, keyPem] = await Promise.all([readOptional(p.serverCert), readOptional(p.serverKey)])
    if (certPem === undefined || keyPem === undefined) return undefined
    try {
      await assertPrivate(p.serverKey)
      const c = new X509Certificate(certPem)
      const caCert = new X509Certificate(this.#o.ca.signer.certPem)
      if (!c.checkIssued(caCert) || !c.verify(caCert.publicKey) || !c.checkPrivateKey(createPrivateKey(keyPem)))
        return undefined
      if (Date.parse(c.validTo) <= this.#o.guard.trustedNow()) return undefined
      const sans = summarizeNode(c).sans
      const { dns, ip } = splitNames(this.#o.names)
      const wanted = [...dns.map((d) => `DNS:${d}`), ...ip.map((i) => `IP:${normalizeIp(i)}`)]
      if (!wanted.every((w) => sans.includes(w))) return undefined
      return { keyPem, certPem }
    } catch {
      return undefined
    }
  }
}

function splitNames(names: readonly string[]): { dns: string[]; ip: string[] } {
  const dns: string[] = []
  const ip: string[] = []
  for (const n of names) (isIP(n) === 0 ? dns : ip).push(n)
  return { dns, ip }
}

/** Node prints IPv6 SANs expanded and upper-case (IP Address:0:0:0:0:0:0:0:1). */
function normalizeIp(ip: string): string {
  if (isIP(ip) !== 6) return ip
  const [head = '', tail = ''] = ip.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === '' ? [] : tail.split(':')
  const fill = ip.includes('::') ? Array<string>(8 - h.length - t.length).fill('0') : []
  return [...h, ...fill, ...t].map((g) => g.replace(/^0+(?=.)/, '').toUpperCase()).join(':')
}
