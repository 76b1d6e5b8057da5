// MemoryStore: the MessageStore contract held in memory, for bridge unit
// tests (and as a reference of the semantics: it is written for clarity,
// not speed — most operations are O(rows)). It passes the same contract
// suite as SqliteStore (test/helpers/message-store-contract.ts), so a
// bridge test against it tests what production runs. Nothing survives the
// process, hence durability 'memory'; "commit" is immediate.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import { DropAccounting } from './drop-accounting.js'
import { BufferError, emptyHistogram } from '../storage/index.js'
import {
  type AppendInput,
  type AppendResult,
  type BufferHealth,
  type BufferStats,
  type DropReason,
  type HandedOutDropReason,
  type MessageExport,
  type MessageStore,
  type MessageStoreEvents,
  normalizeAppend,
  type PeekedMessage,
  type QueueStats,
  type StoredMessage,
  toStoredMessage,
} from './message-store.js'

export interface MemoryStoreOptions {
  /** Default: a silent logger. */
  readonly logger?: Logger
  /** Byte cap (same accounting as SqliteStore: estimateMessageBytes). Default 64 MiB. */
  readonly maxBytes?: number
  /** Clock, epoch ms. Default Date.now. */
  readonly now?: () => number
  /** One drop summary line per reason per this many ms. Default 10000. */
  readonly dropLogIntervalMs?: number
}

interface Row {
  msg: StoredMessage
  /** Drain priority (msg.priority, as stored). */
  priority: number
}

const OK: BufferHealth = { state: 'ok', reasons: [], since: null, lastError: null }

export class MemoryStore extends EventEmitter<MessageStoreEvents> implements MessageStore {
  readonly name = 'buffer'
  readonly #log: Logger
  readonly #now: () => number
  readonly #maxBytes: number
  readonly #drops: DropAccounting
  /** Insertion order = id order (ids only grow). */
  readonly #rows = new Map<number, Row>()
  readonly #inFlight = new Set<number>()
  #nextId = 1
  #bytes = 0
  #state: 'new' | 'running' | 'stopped' = 'new'
  readonly #counters = { appended: 0, taken: 0, acked: 0, released: 0, commits: 0, failedCommits: 0 }
  readonly #knownQueues = new Set<string>()

  constructor(options: MemoryStoreOptions = {}) {
    super()
    this.#log = options.logger?.child({ component: 'buffer' }) ?? silentLogger()
    this.#now = options.now ?? Date.now
    this.#maxBytes = options.maxBytes ?? 64 * 1024 * 1024
    this.#drops = new DropAccounting(this.#log, options.dropLogIntervalMs ?? 10_000, this.#now)
  }

  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#state === 'stopped') throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'buffer is stopped')
    this.#state = 'running'
  }

  async stop(): Promise<void> {
    if (this.#state === 'stopped') return
    this.#drops.flush()
    this.#inFlight.clear()
    this.#state = 'stopped'
  }

  async append(input: AppendInput): Promise<AppendResult> {
    this.#running()
    const m = normalizeAppend(input)
    const now = this.#now()
    if (m.expiresAt !== null && m.expiresAt <= now) {
      this.#drops.record('expired', m.rule, m.queue)
      return { id: null, dropped: 'expired' }
    }
    if (m.size > this.#maxBytes) {
      this.#drops.record('refused', m.rule, m.queue)
      throw new BufferError('EDGE_ERR_BUFFER_FULL', 'message is larger than the buffer cap', {
        fullReason: 'too-large',
      })
    }
    const over = this.#bytes + m.size - this.#maxBytes
    if (over > 0) {
      const victims = m.whenFull === 'refuse' ? null : this.#victims(m.whenFull, m.priority, over)
      if (victims === null) {
        this.#drops.record('refused', m.rule, m.queue)
        throw new BufferError('EDGE_ERR_BUFFER_FULL', 'buffer full: message refused', {
          retryable: true,
          fullReason: 'buffer-full',
        })
      }
      for (const id of victims) this.#delete(id, 'evicted-full')
    }
    // Conflation (invariant 5).
    if (m.conflation === 'latest-only') {
      for (const [id, r] of [...this.#rows]) {
        if (r.msg.queue === m.queue && r.msg.topic === m.topic && !this.#inFlight.has(id)) this.#delete(id, 'conflated')
      }
    }
    // Invariant 4 (message-store.ts): no higher than the topic's older queued rows.
    let priority = m.priority
    for (const r of this.#rows.values()) {
      if (r.msg.queue === m.queue && r.msg.topic === m.topic && r.priority < priority) priority = r.priority
    }
    const id = this.#nextId++
    const msg = toStoredMessage(m, id, priority, now)
    this.#rows.set(id, { msg, priority })
    this.#bytes += msg.size
    this.#knownQueues.add(m.queue)
    this.#counters.appended++
    this.#counters.commits++
    this.emit('commit', { appends: 1, acks: 0, deletes: 0, durationMs: 0 })
    this.emit('appended', [m.queue])
    return { id, dropped: null }
  }

  async takeBatch(queue: string, max: number): Promise<StoredMessage[]> {
    this.#running()
    if (typeof queue !== 'string' || queue.length === 0)
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'queue must be a non-empty string')
    if (!Number.isSafeInteger(max) || max < 1)
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'max must be an integer ≥ 1')
    const now = this.#now()
    const out: StoredMessage[] = []
    for (const [id, r] of this.#drainOrder(queue)) {
      if (out.length >= max) break
      if (this.#inFlight.has(id)) continue
      if (r.msg.expiresAt !== null && r.msg.expiresAt <= now) {
        this.#delete(id, 'expired')
        continue
      }
      this.#inFlight.add(id)
      out.push(view(r))
    }
    this.#counters.taken += out.length
    return out
  }

  async ack(ids: readonly number[]): Promise<void> {
    this.#running()
    for (const id of checkIds(ids)) {
      this.#inFlight.delete(id)
      const r = this.#rows.get(id)
      if (r === undefined) continue
      this.#rows.delete(id)
      this.#bytes -= r.msg.size
      this.#counters.acked++
    }
  }

  async drop(ids: readonly number[], reason: HandedOutDropReason): Promise<void> {
    this.#running()
    for (const id of checkIds(ids)) this.#delete(id, reason)
  }

  async release(ids: readonly number[]): Promise<void> {
    this.#running()
    for (const id of checkIds(ids)) {
      if (!this.#inFlight.delete(id)) continue
      this.#counters.released++
      const r = this.#rows.get(id)
      if (r === undefined || r.msg.conflation !== 'latest-only') continue
      const newer = [...this.#rows.values()].some(
        (o) => o.msg.queue === r.msg.queue && o.msg.topic === r.msg.topic && o.msg.id > id,
      )
      if (newer) this.#delete(id, 'conflated')
    }
  }

  async releaseAll(queue?: string): Promise<number> {
    this.#running()
    const ids = [...this.#inFlight].filter((id) => queue === undefined || this.#rows.get(id)?.msg.queue === queue)
    await this.release(ids)
    return ids.length
  }

  async peek(queue?: string, limit = 100): Promise<PeekedMessage[]> {
    this.#running()
    const rows = queue === undefined ? [...this.#rows] : this.#drainOrder(queue)
    return rows.slice(0, limit).map(([id, r]) => ({ ...view(r), inFlight: this.#inFlight.has(id) }))
  }

  async purge(queue?: string): Promise<number> {
    this.#running()
    let n = 0
    for (const [id, r] of [...this.#rows]) {
      if (queue !== undefined && r.msg.queue !== queue) continue
      this.#delete(id, 'purged')
      n++
    }
    return n
  }

  async exportRows(queue?: string): Promise<MessageExport> {
    this.#running()
    const snapshot = [...this.#rows].filter(([, r]) => queue === undefined || r.msg.queue === queue)
    const inFlight = this.#inFlight
    async function* rows(): AsyncGenerator<PeekedMessage> {
      for (const [id, r] of snapshot) yield { ...view(r), inFlight: inFlight.has(id) }
    }
    return { total: snapshot.length, rows: rows() }
  }

  /** Drop every expired row not in flight (SqliteStore does this on a timer). Returns the count. */
  sweepExpired(): number {
    const now = this.#now()
    let n = 0
    for (const [id, r] of [...this.#rows]) {
      if (r.msg.expiresAt !== null && r.msg.expiresAt <= now && !this.#inFlight.has(id)) {
        this.#delete(id, 'expired')
        n++
      }
    }
    return n
  }

  stats(): BufferStats {
    const now = this.#now()
    const queues = new Map<string, { depth: number; bytes: number; inFlight: number; oldest: number | null }>()
    for (const q of this.#knownQueues) queues.set(q, { depth: 0, bytes: 0, inFlight: 0, oldest: null })
    for (const [id, r] of this.#rows) {
      const q = queues.get(r.msg.queue)
      if (q === undefined) continue
      q.depth++
      q.bytes += r.msg.size
      if (this.#inFlight.has(id)) q.inFlight++
      if (q.oldest === null) q.oldest = r.msg.createdAt
    }
    const list: QueueStats[] = [...queues]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([queue, q]) => ({
        queue,
        depth: q.depth,
        bytes: q.bytes,
        inFlight: q.inFlight,
        oldestAgeMs: q.oldest === null ? null : Math.max(0, now - q.oldest),
      }))
    return {
      durability: 'memory',
      health: OK,
      queues: list,
      totals: {
        messages: this.#rows.size,
        bytes: this.#bytes,
        inFlight: this.#inFlight.size,
        ...this.#counters,
        walFsyncs: 0,
        walFsyncDurations: emptyHistogram(),
      },
      drops: { total: this.#drops.total, byReason: this.#drops.byReason(), byRule: this.#drops.byRule() },
      rates: { appendPerSec: 0, takePerSec: 0, ackPerSec: 0 },
      limits: { maxBytes: this.#maxBytes, effectiveMaxBytes: this.#maxBytes, minFreeBytes: 0, freeBytes: null },
      quarantine: { count: 0, last: null },
    }
  }

  health(): BufferHealth {
    return OK
  }

  /** Rows of one queue in drain order: priority desc, then id. */
  #drainOrder(queue: string): Array<[number, Row]> {
    return [...this.#rows]
      .filter(([, r]) => r.msg.queue === queue)
      .sort(([a, ra], [b, rb]) => rb.priority - ra.priority || a - b)
  }

  #victims(policy: 'drop-oldest' | 'drop-lowest-priority', priority: number, over: number): number[] | null {
    let candidates = [...this.#rows].filter(([id, r]) => !this.#inFlight.has(id) && r.msg.whenFull !== 'refuse')
    if (policy === 'drop-lowest-priority') {
      candidates = candidates
        .filter(([, r]) => r.priority <= priority)
        .sort(([a, ra], [b, rb]) => ra.priority - rb.priority || a - b)
    }
    const out: number[] = []
    let freed = 0
    for (const [id, r] of candidates) {
      if (freed >= over) break
      out.push(id)
      freed += r.msg.size
    }
    return freed >= over ? out : null
  }

  #delete(id: number, reason: DropReason): void {
    const r = this.#rows.get(id)
    if (r === undefined) return
    this.#rows.delete(id)
    this.#inFlight.delete(id)
    this.#bytes -= r.msg.size
    this.#drops.record(reason, r.msg.rule, r.msg.queue)
  }

  #running(): void {
    if (this.#state !== 'running') {
      throw new BufferError(
        'EDGE_ERR_BUFFER_STOPPED',
        this.#state === 'new' ? 'buffer is not started' : 'buffer is stopped',
        {
          retryable: true,
        },
      )
    }
  }
}

function view(r: Row): StoredMessage {
  return r.priority === r.msg.priority ? r.msg : { ...r.msg, priority: r.priority }
}

function checkIds(ids: readonly number[]): number[] {
  if (!Array.isArray(ids)) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be an array')
  for (const id of ids)
    if (!Number.isSafeInteger(id) || id < 1)
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be positive integers')
  return [...new Set(ids)]
}

function silentLogger(): Logger {
  const noop = (): void => {}
  const log = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop, child: () => log }
  return log as unknown as Logger
}
