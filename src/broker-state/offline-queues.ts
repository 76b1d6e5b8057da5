// The bounded outgoing queues of persistent sessions (invariant 4 of
// persistence.ts): per-client counters (rows, bytes) kept in memory, the
// enqueue that evicts a client's oldest PUBLISH rows while over a bound, and
// the drop counters with their rate-limited warning.
import type { Logger } from 'pino'
import { encodePacket, type EncodedPacket } from './packet-codec.js'
import { numberOrNull, type QueueCounters, type Statements, stringOrNull } from './statements.js'
import type { PersistedPacket } from './types.js'

/** queue-full: evicted as the oldest of a full queue; too-large: bigger than the whole byte bound, never queued. */
export type OfflineDropReason = 'queue-full' | 'too-large'

interface RowMeta {
  cmd: string
  brokerId: string | null
  brokerCounter: number | null
  messageId: number | null
  /** Drop the client's oldest PUBLISH rows while over a bound. */
  evict: boolean
}

export interface QueuedEncoding {
  enc: EncodedPacket
  meta: RowMeta
}

export interface EnqueueRow {
  clientId: string
  e: QueuedEncoding
}

export interface EnqueueOutcome {
  queues: Map<string, QueueCounters>
  drops: Map<string, number>
}

export function queuedEncoding(packet: PersistedPacket, evict: boolean): QueuedEncoding {
  return {
    enc: encodePacket(packet),
    meta: {
      cmd: typeof packet.cmd === 'string' ? packet.cmd : 'publish',
      brokerId: stringOrNull(packet.brokerId),
      brokerCounter: numberOrNull(packet.brokerCounter),
      messageId: numberOrNull(packet.messageId),
      evict,
    },
  }
}

export interface OfflineQueuesOptions {
  readonly log: Logger
  readonly maxCount: number
  readonly maxBytes: number
  readonly dropLogIntervalMs: number
  readonly now: () => number
}

export class OfflineQueues {
  readonly maxCount: number
  readonly maxBytes: number
  #queues = new Map<string, QueueCounters>()
  #queuedTotal = 0
  #queuedBytesTotal = 0
  #dropped = 0
  #droppedByReason: Record<OfflineDropReason, number> = { 'queue-full': 0, 'too-large': 0 }
  #dropsSinceLog = new Map<string, number>()
  #reasonsSinceLog: Record<OfflineDropReason, number> = { 'queue-full': 0, 'too-large': 0 }
  #lastDropLogAt = Number.NEGATIVE_INFINITY

  constructor(private readonly o: OfflineQueuesOptions) {
    this.maxCount = o.maxCount
    this.maxBytes = o.maxBytes
  }

  /** Counters from the file (setup). */
  load(s: Statements): void {
    this.#queues = new Map()
    this.#queuedTotal = 0
    this.#queuedBytesTotal = 0
    for (const row of s.outCounters.all()) {
      this.#queues.set(row.client_id, { count: row.count, bytes: row.bytes })
      this.#queuedTotal += row.count
      this.#queuedBytesTotal += row.bytes
    }
  }

  clear(): void {
    this.#queues.clear()
  }

  get clients(): number {
    return this.#queues.size
  }
  get rows(): number {
    return this.#queuedTotal
  }
  get bytes(): number {
    return this.#queuedBytesTotal
  }
  get dropped(): number {
    return this.#dropped
  }
  droppedBy(reason: OfflineDropReason): number {
    return this.#droppedByReason[reason]
  }

  /** Runs inside the enqueue transaction; changes no counter (a rollback must leave memory as it was). */
  enqueueRows(s: Statements, rows: readonly EnqueueRow[]): EnqueueOutcome {
    const queues = new Map<string, QueueCounters>()
    const drops = new Map<string, number>()
    const now = this.o.now()
    for (const { clientId, e } of rows) {
      const { enc, meta } = e
      let q = queues.get(clientId)
      if (q === undefined) {
        const current = this.#queues.get(clientId)
        q = { count: current?.count ?? 0, bytes: current?.bytes ?? 0 }
        queues.set(clientId, q)
      }
      s.outInsert.run(
        clientId,
        meta.cmd,
        meta.brokerId,
        meta.brokerCounter,
        meta.messageId,
        enc.header,
        enc.payload,
        enc.payloadKind,
        enc.bytes,
        now,
      )
      q.count += 1
      q.bytes += enc.bytes
      while (meta.evict && (q.count > this.maxCount || q.bytes > this.maxBytes)) {
        const dropped = s.outDropOldest.get(clientId)
        if (dropped === undefined) break // only PUBREL rows left: they are never dropped
        q.count -= 1
        q.bytes -= dropped.bytes
        drops.set(clientId, (drops.get(clientId) ?? 0) + 1)
      }
    }
    return { queues, drops }
  }

  /** After a commit: what the transaction decided. */
  applyOutcome(outcome: EnqueueOutcome): void {
    for (const [id, q] of outcome.queues) this.set(id, q)
    for (const [id, n] of outcome.drops) this.recordDrop(id, n, 'queue-full')
  }

  set(clientId: string, q: QueueCounters): void {
    const before = this.#queues.get(clientId)
    this.#queuedTotal += q.count - (before?.count ?? 0)
    this.#queuedBytesTotal += q.bytes - (before?.bytes ?? 0)
    if (q.count <= 0) this.#queues.delete(clientId)
    else this.#queues.set(clientId, q)
  }

  adjust(clientId: string, count: number, bytes: number): void {
    const q = this.#queues.get(clientId) ?? { count: 0, bytes: 0 }
    this.set(clientId, { count: q.count + count, bytes: q.bytes + bytes })
  }

  recordDrop(clientId: string, n: number, reason: OfflineDropReason): void {
    this.#dropped += n
    this.#droppedByReason[reason] += n
    this.#dropsSinceLog.set(clientId, (this.#dropsSinceLog.get(clientId) ?? 0) + n)
    this.#reasonsSinceLog[reason] += n
    // the first drop after a quiet interval is logged at once, later ones are summed
    if (this.o.now() - this.#lastDropLogAt >= this.o.dropLogIntervalMs) this.flushDropLog()
  }

  /** One warning per interval: how many were dropped since the last one, why, and for how many clients. */
  flushDropLog(): void {
    if (this.#dropsSinceLog.size === 0) return
    let dropped = 0
    let topClient = ''
    let topCount = 0
    for (const [id, n] of this.#dropsSinceLog) {
      dropped += n
      if (n > topCount) {
        topCount = n
        topClient = id
      }
    }
    this.o.log.warn(
      {
        dropped,
        queueFull: this.#reasonsSinceLog['queue-full'],
        tooLarge: this.#reasonsSinceLog['too-large'],
        clients: this.#dropsSinceLog.size,
        clientId: topClient,
        droppedTotal: this.#dropped,
        maxOfflineMessagesPerClient: this.maxCount,
        maxOfflineBytesPerClient: this.maxBytes,
      },
      'offline messages dropped',
    )
    this.#dropsSinceLog.clear()
    this.#reasonsSinceLog = { 'queue-full': 0, 'too-large': 0 }
    this.#lastDropLogAt = this.o.now()
  }
}
