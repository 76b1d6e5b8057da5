// Drop counts read from the agent's /status, and their total over the run.
//
// readDropCounts() is the ONE place that knows where /status keeps them. The
// buffer's drops are read from /status `buffer.drops.sinceCreated`: totals
// counted in SQLite with the drops themselves (src/buffer/drop-ledger.ts), so
// they survive kill -9 and DropTotals takes the newest reading as the total.
// An agent without them (an older build) falls back to the per-process
// counters, summed over process lifetimes: approximate across a kill.

export interface DropCounts {
  /** True when the counts are durable totals since the store was created (survive restarts). */
  readonly sinceStoreCreated: boolean
  /** Buffer drops by rule name, then by reason. */
  readonly byRule: Readonly<Record<string, Readonly<Record<string, number>>>>
  /** Buffer drops by reason, all rules. */
  readonly byReason: Readonly<Record<string, number>>
  /** Bridge drops by reason (messages never stored: rate-limited, upstream-rejected, …), all upstreams. */
  readonly bridge: Readonly<Record<string, number>>
}

/** Reasons the bridge reports in upstreams[].drops that the buffer counts itself (not added twice). */
const BUFFER_REASONS = new Set(['evicted-full', 'expired', 'conflated', 'refused', 'disk-full', 'purged'])

interface StatusLike {
  readonly buffer?: {
    readonly drops?: {
      readonly byReason?: Record<string, number>
      readonly byRule?: Record<string, Record<string, number>>
      readonly sinceCreated?: {
        readonly byReason?: Record<string, number>
        readonly byRule?: Record<string, Record<string, number>>
      } | null
    }
  }
  readonly upstreams?: readonly { readonly drops?: Record<string, number> }[]
}

export function readDropCounts(status: unknown): DropCounts {
  const s = status as StatusLike
  const bridge: Record<string, number> = {}
  for (const u of s.upstreams ?? []) {
    for (const [reason, n] of Object.entries(u.drops ?? {})) {
      if (!BUFFER_REASONS.has(reason)) bridge[reason] = (bridge[reason] ?? 0) + n
    }
  }
  const durable = s.buffer?.drops?.sinceCreated
  if (durable !== undefined && durable !== null) {
    return { sinceStoreCreated: true, byRule: durable.byRule ?? {}, byReason: durable.byReason ?? {}, bridge }
  }
  return {
    sinceStoreCreated: false,
    byRule: s.buffer?.drops?.byRule ?? {},
    byReason: s.buffer?.drops?.byReason ?? {},
    bridge,
  }
}

export function emptyDrops(): DropCounts {
  return { sinceStoreCreated: false, byRule: {}, byReason: {}, bridge: {} }
}

function add(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = { ...a }
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v
  return out
}

export function addDrops(a: DropCounts, b: DropCounts): DropCounts {
  const byRule: Record<string, Record<string, number>> = {}
  for (const r of new Set([...Object.keys(a.byRule), ...Object.keys(b.byRule)]))
    byRule[r] = add(a.byRule[r] ?? {}, b.byRule[r] ?? {})
  return {
    sinceStoreCreated: a.sinceStoreCreated && b.sinceStoreCreated,
    byRule,
    byReason: add(a.byReason, b.byReason),
    bridge: add(a.bridge, b.bridge),
  }
}

export function sumOf(r: Readonly<Record<string, number>>): number {
  return Object.values(r).reduce((x, y) => x + y, 0)
}

/**
 * Drops over the whole run, across agent processes. Feed every /status reading
 * with observe(); call endOfLife() when the process is gone (after a kill or a
 * stop), before the next one starts.
 */
export class DropTotals {
  #closed = emptyDrops()
  #current = emptyDrops()
  #durable = false
  /** Lifetimes that ended after their last reading: the total may miss their last drops. */
  #unobservedEnds = 0

  observe(c: DropCounts): void {
    this.#current = c
    this.#durable = c.sinceStoreCreated
  }

  /**
   * The process ended (kill -9 or clean stop). Without durable totals, the drops
   * between its last /status reading and its end are not seen.
   */
  endOfLife(): void {
    // Durable totals stay the total until the next process reports its own.
    if (this.#durable) return
    this.#closed = addDrops(this.#closed, this.#current)
    this.#unobservedEnds++
    this.#current = emptyDrops()
  }

  get durable(): boolean {
    return this.#durable
  }

  get unobservedEnds(): number {
    return this.#durable ? 0 : this.#unobservedEnds
  }

  total(): DropCounts {
    return this.#durable ? this.#current : addDrops(this.#closed, this.#current)
  }
}
