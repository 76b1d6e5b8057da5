// Reconnect delays: "decorrelated jitter" (AWS Architecture Blog, Exponential
// Backoff and Jitter, 2015; Mosquitto's restart_timeout default):
//   delay = min(cap, random_between(base, previous × 3))
// so retries spread out instead of arriving in synchronized waves from
// hundreds of sites. Pure: the random source and the clock are injected.

export interface BackoffOptions {
  /** First and smallest delay, ms. */
  readonly baseMs: number
  /** Largest delay, ms. */
  readonly capMs: number
  /** A connection that stayed up this long resets the sequence, ms. */
  readonly resetAfterMs: number
  /** Uniform in [0, 1). Default Math.random. */
  readonly random?: () => number
}

export class Backoff {
  readonly #o: Required<BackoffOptions>
  #previous: number
  #attempt = 0

  constructor(options: BackoffOptions) {
    if (!(options.baseMs > 0) || !(options.capMs >= options.baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= capMs (got ${options.baseMs}, ${options.capMs})`)
    }
    this.#o = { random: Math.random, ...options }
    this.#previous = options.baseMs
  }

  /** Number of delays handed out since the last reset. */
  get attempt(): number {
    return this.#attempt
  }

  /** The next delay, ms (integer). */
  next(): number {
    const { baseMs, capMs, random } = this.#o
    const upper = Math.min(capMs, this.#previous * 3)
    const delay = Math.min(capMs, Math.round(baseMs + random() * Math.max(0, upper - baseMs)))
    this.#previous = Math.max(baseMs, delay)
    this.#attempt++
    return delay
  }

  /** Start over from baseMs. */
  reset(): void {
    this.#previous = this.#o.baseMs
    this.#attempt = 0
  }

  /** Call when a connection ends: resets if it had been up at least resetAfterMs ("stable"). */
  connectionEnded(upForMs: number): void {
    if (upForMs >= this.#o.resetAfterMs) this.reset()
  }
}

/** A delay with ±fraction uniform jitter (for probes and timers that should not align). */
export function jittered(ms: number, fraction: number, random: () => number = Math.random): number {
  return Math.max(0, Math.round(ms * (1 - fraction + 2 * fraction * random())))
}
