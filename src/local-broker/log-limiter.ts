// Rate-limits repetitive log lines per key: a device stuck in a reconnect loop
// must not flood the journal. The first `burst` lines of a key in each window
// are written; the rest are counted and reported in one line when the key's
// next window opens (or on flush()). No timers: nothing to clean up.
import type { Logger } from 'pino'

interface Window {
  start: number
  written: number
  suppressed: number
  level: 'info' | 'warn'
  msg: string
}

export class LogLimiter {
  readonly #windows = new Map<string, Window>()

  constructor(
    private readonly log: Logger,
    private readonly windowMs = 10_000,
    private readonly burst = 5,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, fields: object, msg: string): void {
    this.#write('warn', key, fields, msg)
  }

  info(key: string, fields: object, msg: string): void {
    this.#write('info', key, fields, msg)
  }

  /** Reports every pending suppressed count. */
  flush(): void {
    for (const [key, w] of this.#windows) this.#report(key, w)
    this.#windows.clear()
  }

  #write(level: 'info' | 'warn', key: string, fields: object, msg: string): void {
    const t = this.now()
    let w = this.#windows.get(key)
    if (w === undefined || t - w.start >= this.windowMs) {
      if (w) this.#report(key, w)
      w = { start: t, written: 0, suppressed: 0, level, msg }
      this.#windows.set(key, w)
    }
    if (w.written < this.burst) {
      w.written++
      this.log[level](fields, msg)
    } else {
      w.suppressed++
    }
  }

  #report(key: string, w: Window): void {
    if (w.suppressed === 0) return
    this.log[w.level](
      { key, suppressed: w.suppressed, windowMs: this.windowMs, example: w.msg },
      'similar log lines suppressed',
    )
  }
}
