// Drop accounting: every message that leaves the store without an upstream
// ack is counted here, by reason and by rule, and reported in the log at a
// bounded rate — one summary line per reason per `logIntervalMs` (the first
// drop after a quiet period is reported at once, so a single drop is never
// invisible for 10 s). No timers of its own: the owner calls tick() from its
// maintenance timer, and flush() on stop.
import type { Logger } from 'pino'
import { DROP_REASONS, type DropReason, emptyDropCounts } from './message-store.js'

interface Window {
  /** When the last line for this reason was written (epoch ms). */
  lastLogAt: number
  pending: number
  byRule: Map<string, number>
  byQueue: Map<string, number>
}

// Conflation drops are the feature working as configured, and a purge is an
// operator's action: neither deserves a warning.
const LEVEL: Record<DropReason, 'debug' | 'info' | 'warn' | 'error'> = {
  'evicted-full': 'warn',
  expired: 'warn',
  conflated: 'debug',
  refused: 'warn',
  'disk-full': 'warn',
  purged: 'info',
  'upstream-rejected': 'warn',
  'power-loss': 'error',
}

export class DropAccounting {
  readonly #byReason = emptyDropCounts()
  readonly #byRule = new Map<string, Record<DropReason, number>>()
  readonly #windows = new Map<DropReason, Window>()
  #total = 0

  constructor(
    private readonly log: Logger,
    private readonly logIntervalMs: number,
    private readonly now: () => number,
  ) {}

  record(reason: DropReason, rule: string, queue: string, count = 1): void {
    if (count <= 0) return
    this.#total += count
    this.#byReason[reason] += count
    let r = this.#byRule.get(rule)
    if (r === undefined) {
      r = emptyDropCounts()
      this.#byRule.set(rule, r)
    }
    r[reason] += count
    let w = this.#windows.get(reason)
    if (w === undefined) {
      w = { lastLogAt: Number.NEGATIVE_INFINITY, pending: 0, byRule: new Map(), byQueue: new Map() }
      this.#windows.set(reason, w)
    }
    w.pending += count
    w.byRule.set(rule, (w.byRule.get(rule) ?? 0) + count)
    w.byQueue.set(queue, (w.byQueue.get(queue) ?? 0) + count)
    if (this.now() - w.lastLogAt >= this.logIntervalMs) this.#report(reason, w)
  }

  /** Write the summaries whose interval has elapsed. */
  tick(): void {
    const t = this.now()
    for (const [reason, w] of this.#windows) {
      if (w.pending > 0 && t - w.lastLogAt >= this.logIntervalMs) this.#report(reason, w)
    }
  }

  /** Write every pending summary now (on stop). */
  flush(): void {
    for (const [reason, w] of this.#windows) if (w.pending > 0) this.#report(reason, w)
  }

  get total(): number {
    return this.#total
  }

  byReason(): Record<DropReason, number> {
    return { ...this.#byReason }
  }

  /** rule → reason → count, zero counts left out. */
  byRule(): Record<string, Partial<Record<DropReason, number>>> {
    const out: Record<string, Partial<Record<DropReason, number>>> = {}
    for (const [rule, counts] of this.#byRule) {
      const o: Partial<Record<DropReason, number>> = {}
      for (const reason of DROP_REASONS) if (counts[reason] > 0) o[reason] = counts[reason]
      out[rule] = o
    }
    return out
  }

  #report(reason: DropReason, w: Window): void {
    const t = this.now()
    const windowMs = Number.isFinite(w.lastLogAt) ? t - w.lastLogAt : 0
    this.log[LEVEL[reason]](
      {
        reason,
        count: w.pending,
        byRule: Object.fromEntries(w.byRule),
        byQueue: Object.fromEntries(w.byQueue),
        windowMs,
        totalForReason: this.#byReason[reason],
      },
      'buffer messages dropped',
    )
    w.lastLogAt = t
    w.pending = 0
    w.byRule.clear()
    w.byQueue.clear()
  }
}
