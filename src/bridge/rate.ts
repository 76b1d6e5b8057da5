// Token buckets and per-second rates for the bridge (pure; clock injected).

/** A token bucket: `rate` tokens per second, holding at most `burst`. */
export class TokenBucket {
  #tokens: number
  #at: number

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly now: () => number,
  ) {
    this.#tokens = burst
    this.#at = now()
  }

  #refill(): void {
    const t = this.now()
    if (t > this.#at) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((t - this.#at) / 1000) * this.rate)
      this.#at = t
    }
  }

  /** Takes one token if available. */
  tryTake(): boolean {
    this.#refill()
    if (this.#tokens >= 1) {
      this.#tokens -= 1
      return true
    }
    return false
  }

  /** Whole tokens available now (at most `max`), taken. */
  take(max: number): number {
    this.#refill()
    const n = Math.max(0, Math.min(max, Math.floor(this.#tokens)))
    this.#tokens -= n
    return n
  }

  /** Milliseconds until one token is available. */
  msUntilToken(): number {
    this.#refill()
    return this.#tokens >= 1 ? 0 : Math.ceil(((1 - this.#tokens) / this.rate) * 1000)
  }

  /** Last refill time, epoch ms (for idle cleanup). */
  get touchedAt(): number {
    return this.#at
  }
}

/** Per-topic token buckets with a bound on how many topics are tracked. */
export class TopicRateLimiter {
  readonly #buckets = new Map<string, TokenBucket>()

  constructor(
    readonly perSec: number,
    private readonly now: () => number,
    private readonly maxTopics = 100_000,
  ) {}

  allow(topic: string): boolean {
    let b = this.#buckets.get(topic)
    if (b === undefined) {
      if (this.#buckets.size >= this.maxTopics) this.sweep(true)
      b = new TokenBucket(this.perSec, Math.max(1, this.perSec), this.now)
      this.#buckets.set(topic, b)
    }
    return b.tryTake()
  }

  /** Forget buckets that are full again (idle ≥ 1 s / refilled); `all` forgets the oldest half when over the bound. */
  sweep(all = false): void {
    const t = this.now()
    for (const [topic, b] of this.#buckets) {
      if (t - b.touchedAt > Math.max(1000, 1000 / this.perSec) * 2) this.#buckets.delete(topic)
    }
    if (all && this.#buckets.size >= this.maxTopics) {
      let n = Math.floor(this.#buckets.size / 2)
      for (const topic of this.#buckets.keys()) {
        if (n-- <= 0) break
        this.#buckets.delete(topic)
      }
    }
  }
}

/** Rates of monotonically increasing counters over a sliding window; sample() once a second. */
export class RateWindow {
  readonly #samples: { t: number; v: Record<string, number> }[] = []

  constructor(
    private readonly read: () => Record<string, number>,
    private readonly now: () => number,
    private readonly windowMs = 10_000,
  ) {}

  sample(): void {
    const t = this.now()
    this.#samples.push({ t, v: this.read() })
    while (this.#samples.length > 2 && t - (this.#samples[1]?.t ?? t) >= this.windowMs) this.#samples.shift()
  }

  rates(): Record<string, number> {
    const first = this.#samples[0]
    const cur = { t: this.now(), v: this.read() }
    const out: Record<string, number> = {}
    if (first === undefined || cur.t <= first.t) {
      for (const k of Object.keys(cur.v)) out[k] = 0
      return out
    }
    const dt = (cur.t - first.t) / 1000
    for (const [k, v] of Object.entries(cur.v)) out[k] = Math.round((Math.max(0, v - (first.v[k] ?? 0)) / dt) * 10) / 10
    return out
  }
}
