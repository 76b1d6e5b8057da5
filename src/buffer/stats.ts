// The store's stats (SqliteStore.stats()): memory's counters, plus the few
// reads that only the file can answer (oldest row per queue, durable drop
// totals). A failed read is logged and leaves its field empty: stats serve
// /status and must not throw while the store runs.
import { emptyHistogram, toBufferError, type Durability } from '../storage/index.js'
import type { DurableDropTotals } from './drop-ledger.js'
import type { BufferStats, QueueStats } from './message-store.js'
import type { StoreState } from './store-state.js'

export function collectStats(st: StoreState, durability: Durability): BufferStats {
  const now = st.now()
  const s = st.s
  const queues: QueueStats[] = []
  for (const [name, q] of [...st.queues].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    let oldestId = Infinity
    let oldestAt: number | null = null
    if (s !== null && q.depth > 0) {
      try {
        for (const [p, n] of q.byPriority) {
          if (n <= 0) continue
          const r = s.oldestOfPriority.get(name, p) as { id: number; created_at: number } | undefined
          if (r !== undefined && r.id < oldestId) {
            oldestId = r.id
            oldestAt = r.created_at
          }
        }
      } catch (err) {
        st.logError(toBufferError(err, 'stats'), 'buffer stats query failed', {})
      }
    }
    queues.push({
      queue: name,
      depth: q.depth,
      bytes: q.bytes,
      inFlight: st.inFlightByQueue.get(name) ?? 0,
      oldestAgeMs: oldestAt === null ? null : Math.max(0, now - oldestAt),
    })
  }
  return {
    durability,
    health: st.health(),
    queues,
    totals: {
      messages: st.totalRows,
      bytes: st.totalBytes,
      inFlight: st.inFlight.size,
      ...st.counters,
      walFsyncs: st.lease?.walSyncs ?? 0,
      walFsyncDurations: st.lease?.walSyncDurations ?? emptyHistogram(),
    },
    drops: {
      total: st.drops.total,
      byReason: st.drops.byReason(),
      byRule: st.drops.byRule(),
      sinceCreated: durableDrops(st),
    },
    rates: st.rates(now),
    limits: {
      maxBytes: st.maxBytes,
      effectiveMaxBytes: Math.min(
        st.maxBytes,
        st.pressureCap ?? Infinity,
        st.reasons.has('disk-low') ? st.totalBytes : Infinity,
      ),
      minFreeBytes: st.minFreeBytes,
      freeBytes: st.disk?.freeBytes ?? null,
    },
    quarantine: st.quarantine,
    lastRun: st.lastRun,
  }
}

function durableDrops(st: StoreState): DurableDropTotals | null {
  const l = st.dropLedger
  if (l === null) return null
  try {
    return l.totals()
  } catch (err) {
    st.logError(toBufferError(err, 'stats'), 'buffer stats query failed', {})
    return null
  }
}
