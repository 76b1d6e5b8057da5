// Per-second rates of monotonically increasing counters over a sliding window,
// for /status ("messages per second now"). Prometheus users compute their own
// rates from the *_total counters; this is for humans and `edge-agent status`.

export class RateMeter {
  readonly #samples: { t: number; values: Record<string, number> }[] = []
  #timer: NodeJS.Timeout | undefined

  constructor(
    private readonly read: () => Record<string, number>,
    private readonly windowMs = 10_000,
    private readonly intervalMs = 1_000,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    if (this.#timer) return
    this.sample()
    this.#timer = setInterval(() => this.sample(), this.intervalMs)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  sample(): void {
    const t = this.now()
    this.#samples.push({ t, values: this.read() })
    while (this.#samples.length > 2 && t - (this.#samples[1]?.t ?? t) >= this.windowMs) this.#samples.shift()
  }

  /** Rate per second of each counter over the window; 0 until two samples exist. */
  rates(): Record<string, number> {
    const first = this.#samples[0]
    const last = this.#samples[this.#samples.length - 1]
    const out: Record<string, number> = {}
    if (!first || !last || last.t === first.t) {
      for (const k of Object.keys(last?.values ?? this.read())) out[k] = 0
      return out
    }
    const dt = (last.t - first.t) / 1000
    for (const [k, v] of Object.entries(last.values)) out[k] = Math.max(0, (v - (first.values[k] ?? 0)) / dt)
    return out
  }
}
