// Time for the certificate authority: an injectable clock, and a guard that
// decides whether the wall clock can be trusted to date certificates.
//
// Gateways without a battery-backed RTC boot with a stale or wrong date.
// The guard keeps two references:
// - a last-known-good wall time (LKG), persisted in the state directory and
//   only ever moved forward from a trusted clock: a clock earlier than it is
//   wrong, whatever NTP or fake-hwclock say;
// - a baseline pairing the wall clock with the monotonic clock, taken while the
//   clock was trusted: while the agent runs, the monotonic clock tells how much
//   time really passed, so a wall-clock step shows up as the difference.
//
// Rules (see docs/certificates.md "Clock sanity"):
// - wall < LKG - tolerance                  → suspicious 'behind-last-known-good'
//   (clears by itself once the clock is past LKG again).
// - a forward step > maxForwardJump while running → suspicious 'jumped-forward'
//   (clears when the clock comes back, or an operator runs
//   `edge-agent certs trust-clock`); the flag survives a restart.
// - smaller steps either way are accepted (NTP corrections) and re-baseline.
// While suspicious, nothing is issued, and `trustedNow()` answers the
// monotonic estimate instead of the wall clock.
import { readFile, writeFile, rename } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'

export type TimerHandle = { readonly __timer: unique symbol } | NodeJS.Timeout

/** Everything time-related the certs components use, injectable for tests. */
export interface Clock {
  /** Wall-clock time in ms since the epoch; may jump. */
  now(): number
  /** Monotonic ms since an arbitrary origin; never jumps. */
  monotonic(): number
  /** Runs fn after ms (monotonic). fn may return a promise; fake clocks await it. */
  setTimeout(fn: () => unknown, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(() => void fn(), Math.min(Math.max(0, ms), MAX_TIMER_MS))
    t.unref()
    return t
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

/** setTimeout's ceiling is 2^31-1 ms (24.8 days); callers re-arm past it. */
export const MAX_TIMER_MS = 2_147_483_647

export type ClockState = 'ok' | 'suspicious'
export type ClockReason = 'behind-last-known-good' | 'jumped-forward'

export interface ClockStatus {
  readonly state: ClockState
  readonly reason: ClockReason | null
  /** The wall clock as read. */
  readonly wallTime: number
  /** Best estimate of the real time (the wall clock when trusted). */
  readonly trustedTime: number
  readonly lastKnownGood: number | null
  /** wallTime - trustedTime: how far the wall clock is off, by our estimate. */
  readonly skewMs: number
  /** Wall time at which the clock became suspicious (trusted estimate), if it is. */
  readonly suspiciousSince: number | null
}

export interface ClockGuardOptions {
  readonly clock: Clock
  /** Where LKG and a pending forward-jump flag are kept; none in memory-only tests. */
  readonly file?: string
  /** Steps at most this big are normal; also the slack below LKG. Default 300 000 (5 min). */
  readonly toleranceMs?: number
  /** A forward step larger than this while running is suspicious. Default 604 800 000 (7 days). */
  readonly maxForwardJumpMs?: number
  /** How often LKG is written while trusted. Default 60 000. */
  readonly persistEveryMs?: number
}

interface Persisted {
  lastKnownGood: number
  /** Set while a forward jump is unresolved: the trusted time when it was seen. */
  forwardJumpFrom?: number
}

export interface ClockGuardEvents {
  change: [status: ClockStatus]
}

export class ClockGuard extends EventEmitter<ClockGuardEvents> {
  readonly #clock: Clock
  readonly #file: string | undefined
  readonly #tolerance: number
  readonly #maxForward: number
  readonly #persistEvery: number
  #lkg: number | null = null
  #persistedLkg: number | null = null
  #forwardJumpFrom: number | undefined
  #base: { wall: number; mono: number } | undefined
  #reason: ClockReason | null = null
  #suspiciousSince: number | null = null
  #stepFrom: { wall: number; mono: number } | undefined
  #lastPersistMono = -Infinity
  #writing: Promise<void> = Promise.resolve()

  constructor(opts: ClockGuardOptions) {
    super()
    this.#clock = opts.clock
    this.#file = opts.file
    this.#tolerance = opts.toleranceMs ?? 300_000
    this.#maxForward = opts.maxForwardJumpMs ?? 604_800_000
    this.#persistEvery = opts.persistEveryMs ?? 60_000
  }

  /** Reads the persisted state; a missing file means first start. */
  async load(): Promise<void> {
    if (this.#file === undefined) return
    let text: string
    try {
      text = await readFile(this.#file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    try {
      const p = JSON.parse(text) as Partial<Persisted>
      if (typeof p.lastKnownGood === 'number' && Number.isFinite(p.lastKnownGood))
        this.#lkg = this.#persistedLkg = p.lastKnownGood
      if (typeof p.forwardJumpFrom === 'number') this.#forwardJumpFrom = p.forwardJumpFrom
    } catch {
      // A torn write: start without LKG rather than refuse to run.
    }
  }

  /** Re-evaluates the clock; emits 'change' when the state changes. Cheap: call it often. */
  assess(): ClockStatus {
    const wall = this.#clock.now()
    const mono = this.#clock.monotonic()
    const before = this.#reason
    const lkg = this.#lkg
    if (this.#base === undefined) {
      // First look after start: no monotonic history, only LKG and the flag.
      if (lkg !== null && wall < lkg - this.#tolerance) this.#suspect('behind-last-known-good', lkg)
      else if (this.#forwardJumpFrom !== undefined && wall > this.#forwardJumpFrom + this.#maxForward) {
        this.#suspect('jumped-forward', this.#forwardJumpFrom)
      } else this.#trust(wall, mono)
      if (this.#reason !== null && this.#base === undefined) this.#base = { wall: this.#estimateAtStart(wall), mono }
    } else {
      const expected = this.#base.wall + (mono - this.#base.mono)
      const drift = wall - expected
      if (lkg !== null && wall < lkg - this.#tolerance) this.#suspect('behind-last-known-good', expected)
      else if (drift > this.#maxForward) this.#suspect('jumped-forward', expected)
      else if (this.#reason === 'jumped-forward' && drift > this.#tolerance) this.#suspect('jumped-forward', expected)
      else {
        // An accepted forward step (NTP correcting a stale boot time): remember
        // where it started, so that certificates issued in the next while are
        // valid under either reading of the clock (see notBeforeFloor()).
        if (drift > this.#tolerance) this.#stepFrom = { wall: expected, mono }
        this.#trust(wall, mono)
      }
    }
    const status = this.status()
    if (before !== this.#reason) this.emit('change', status)
    return status
  }

  /** The wall clock if trusted, else the monotonic estimate. Does not re-assess. */
  trustedNow(): number {
    if (this.#reason === null || this.#base === undefined) return this.#clock.now()
    return this.#base.wall + (this.#clock.monotonic() - this.#base.mono)
  }

  /**
   * Earliest notBefore a certificate issued now should carry, before backdating:
   * the trusted time, or, for maxForwardJump after an accepted forward step,
   * the time the step started from. A certificate then stays usable for a
   * peer whose clock never took the step.
   */
  notBeforeFloor(): number {
    const now = this.trustedNow()
    const step = this.#stepFrom
    if (step === undefined) return now
    if (this.#clock.monotonic() - step.mono > this.#maxForward) {
      this.#stepFrom = undefined
      return now
    }
    return Math.min(now, step.wall)
  }

  get suspicious(): boolean {
    return this.#reason !== null
  }

  status(): ClockStatus {
    const wall = this.#clock.now()
    const trusted = this.trustedNow()
    return {
      state: this.#reason === null ? 'ok' : 'suspicious',
      reason: this.#reason,
      wallTime: wall,
      trustedTime: trusted,
      lastKnownGood: this.#lkg,
      skewMs: wall - trusted,
      suspiciousSince: this.#suspiciousSince,
    }
  }

  /** Operator override (`certs trust-clock`): accept the wall clock as it is now, even backwards. */
  trustNow(): ClockStatus {
    const wall = this.#clock.now()
    this.#lkg = wall
    this.#forwardJumpFrom = undefined
    const before = this.#reason
    this.#reason = null
    this.#suspiciousSince = null
    this.#base = { wall, mono: this.#clock.monotonic() }
    this.#persist(true)
    const status = this.status()
    if (before !== null) this.emit('change', status)
    return status
  }

  /** Moves LKG to now (if trusted) and writes it; call after issuing. */
  commit(): Promise<void> {
    if (this.#reason === null) {
      const wall = this.#clock.now()
      if (this.#lkg === null || wall > this.#lkg) this.#lkg = wall
      this.#persist(true)
    }
    return this.#writing
  }

  /** Resolves when pending writes are done. */
  flush(): Promise<void> {
    return this.#writing
  }

  #estimateAtStart(wall: number): number {
    // Behind LKG: the real time is at least LKG. Ahead after a flagged jump:
    // the best we know is where the jump started.
    if (this.#reason === 'behind-last-known-good' && this.#lkg !== null) return Math.max(wall, this.#lkg)
    if (this.#reason === 'jumped-forward' && this.#forwardJumpFrom !== undefined) return this.#forwardJumpFrom
    return wall
  }

  #suspect(reason: ClockReason, trustedEstimate: number): void {
    if (this.#reason === null) this.#suspiciousSince = trustedEstimate
    this.#reason = reason
    if (reason === 'jumped-forward' && this.#forwardJumpFrom === undefined) {
      this.#forwardJumpFrom = trustedEstimate
      this.#persist(true)
    }
  }

  #trust(wall: number, mono: number): void {
    const clearedFlag = this.#forwardJumpFrom !== undefined
    this.#reason = null
    this.#suspiciousSince = null
    this.#forwardJumpFrom = undefined
    this.#base = { wall, mono }
    if (this.#lkg === null || wall > this.#lkg) this.#lkg = wall
    this.#persist(clearedFlag)
  }

  #persist(force: boolean): void {
    if (this.#file === undefined || this.#lkg === null) return
    const mono = this.#clock.monotonic()
    const changed = this.#lkg !== this.#persistedLkg
    const flagChanged = force
    if (!flagChanged && !(changed && mono - this.#lastPersistMono >= this.#persistEvery)) return
    this.#lastPersistMono = mono
    const data: Persisted = { lastKnownGood: this.#lkg }
    if (this.#forwardJumpFrom !== undefined) data.forwardJumpFrom = this.#forwardJumpFrom
    this.#persistedLkg = this.#lkg
    const file = this.#file
    const text = JSON.stringify(data) + '\n'
    this.#writing = this.#writing
      .then(async () => {
        const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`
        await writeFile(tmp, text, { mode: 0o600 })
        await rename(tmp, file)
      })
      .catch(() => undefined)
  }
}
