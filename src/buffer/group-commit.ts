// Group commit: collect operations from many callers and run them as one
// batch, so that one fsync acknowledges many messages.
//
// A batch is executed when it holds `maxBatch` operations (at once, inside
// the enqueue() that filled it) or `windowMs` after its first operation,
// whichever comes first; the window stretches to `holdMs()` while the next
// fsync may not start yet (a bounded fsync rate). The window timer exists only while operations are
// pending: an idle store has no timer and does no work. `execute` runs
// synchronously (better-sqlite3 is synchronous) and must settle every
// operation it is given; if it throws, every operation of the batch is
// failed with that error, so no caller waits forever.
//
// Timers are injectable (MQTT.js / undici style) so tests can drive the window.

export interface Settleable {
  fail(err: Error): void
}

export interface GroupCommitTimers {
  /** Called with ms = 0 for "after the current event-loop turn" (Node: setImmediate). */
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

// A 0 ms window means "end of this event-loop turn": setImmediate, because
// setTimeout(fn, 0) waits at least 1 ms in Node. Everything that arrived in
// the same poll phase (many sockets' data events) still lands in one batch.
const defaultTimers: GroupCommitTimers = {
  setTimeout: (fn, ms) => (ms <= 0 ? { immediate: setImmediate(fn) } : { timeout: setTimeout(fn, ms) }),
  clearTimeout: (h) => {
    const handle = h as { immediate?: NodeJS.Immediate; timeout?: NodeJS.Timeout }
    if (handle.immediate !== undefined) clearImmediate(handle.immediate)
    if (handle.timeout !== undefined) clearTimeout(handle.timeout)
  },
}

export interface GroupCommitOptions<Op extends Settleable> {
  /** Operations per batch, ≥ 1. */
  readonly maxBatch: number
  /** Milliseconds to wait for more operations after the first one, ≥ 0. */
  readonly windowMs: number
  /** Runs one batch synchronously; must settle every operation. */
  readonly execute: (batch: Op[]) => void
  readonly timers?: GroupCommitTimers
  /**
   * Milliseconds the batch may wait beyond `windowMs`, asked when its first operation arrives: the time until the
   * next fsync may start (storage/wal-sync.ts, rate bound). Committing sooner would acknowledge nothing sooner; waiting
   * makes fewer, larger transactions. Default none.
   */
  readonly holdMs?: () => number
}

export class GroupCommit<Op extends Settleable> {
  readonly #maxBatch: number
  readonly #windowMs: number
  readonly #execute: (batch: Op[]) => void
  readonly #timers: GroupCommitTimers
  readonly #holdMs: (() => number) | undefined
  #pending: Op[] = []
  #timer: unknown = undefined
  #executing = false

  constructor(options: GroupCommitOptions<Op>) {
    if (!Number.isSafeInteger(options.maxBatch) || options.maxBatch < 1)
      throw new RangeError('maxBatch must be an integer ≥ 1')
    if (!Number.isFinite(options.windowMs) || options.windowMs < 0) throw new RangeError('windowMs must be ≥ 0')
    this.#maxBatch = options.maxBatch
    this.#windowMs = options.windowMs
    this.#execute = options.execute
    this.#timers = options.timers ?? defaultTimers
    this.#holdMs = options.holdMs
  }

  /** Operations waiting for the next batch. */
  get pending(): number {
    return this.#pending.length
  }

  enqueue(op: Op): void {
    this.#pending.push(op)
    if (this.#pending.length >= this.#maxBatch) {
      // Full batch: commit now rather than wait for the window. Not while a
      // batch is executing (an event listener appending from inside a
      // commit): that batch's caller drains us right after it returns.
      if (!this.#executing) this.flush()
      return
    }
    if (this.#timer === undefined) {
      const ms = Math.max(this.#windowMs, this.#holdMs?.() ?? 0)
      this.#timer = this.#timers.setTimeout(() => {
        this.#timer = undefined
        this.flush()
      }, ms)
    }
  }

  /** Execute everything pending now, in batches of at most maxBatch. */
  flush(): void {
    if (this.#executing) return
    // Bounded: each round removes at least one operation. Operations enqueued
    // while a batch executes (from a listener) are picked up by the next round.
    while (this.#pending.length > 0) {
      const batch = this.#pending.length <= this.#maxBatch ? this.#pending : this.#pending.slice(0, this.#maxBatch)
      this.#pending = this.#pending.length <= this.#maxBatch ? [] : this.#pending.slice(this.#maxBatch)
      this.#executing = true
      try {
        this.#execute(batch)
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err))
        for (const op of batch) op.fail(e)
      } finally {
        this.#executing = false
      }
    }
    if (this.#timer !== undefined) {
      this.#timers.clearTimeout(this.#timer)
      this.#timer = undefined
    }
  }

  /** Fail everything pending (abrupt close) and drop the timer. */
  abort(err: Error): void {
    if (this.#timer !== undefined) {
      this.#timers.clearTimeout(this.#timer)
      this.#timer = undefined
    }
    const ops = this.#pending
    this.#pending = []
    for (const op of ops) op.fail(err)
  }
}
