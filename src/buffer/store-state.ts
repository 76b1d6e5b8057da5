// The SqliteStore's state shared by its parts: the write path
// (commit-batch.ts), the drain path (drain.ts) and the housekeeping
// (maintenance.ts). Memory follows the file: counters change only from the
// effects of a committed transaction (see sqlite-store.ts, write path).
import type { Logger } from 'pino'
import type { DiskSpace, SqliteDatabase } from '../storage/index.js'
import { BufferError } from '../storage/index.js'
import { toBufferError } from '../storage/index.js'
import type { RunContinuity, LastRun } from './continuity.js'
import type { DropAccounting } from './drop-accounting.js'
import type { DropLedger } from './drop-ledger.js'
import type { LossReportTarget, ReportGroup } from './loss-report.js'
import type { GroupCommit } from './group-commit.js'
import { LiveTail } from './live-tail.js'
import { getOrSet, newMap } from './map-of.js'
import type { DeletedRow, Statements } from './message-schema.js'
import type {
  AppendResult,
  BufferHealth,
  BufferStats,
  DegradedReason,
  DropReason,
  MessageStoreEvents,
  NormalizedMessage,
  StoredMessage,
} from './message-store.js'
import type { TopicLedger } from './topic-ledger.js'

export interface QueueState {
  depth: number
  bytes: number
  /** priority → rows; used for per-queue oldest age and the eviction candidates. */
  readonly byPriority: Map<number, number>
}

export type AppendOp = {
  readonly kind: 'append'
  readonly msg: NormalizedMessage
  readonly resolve: (r: AppendResult) => void
  readonly fail: (err: Error) => void
}
export type AckOp = {
  readonly kind: 'ack'
  readonly ids: readonly number[]
  readonly resolve: () => void
  readonly fail: (err: Error) => void
}
export type DeleteOp = {
  readonly kind: 'delete'
  readonly ids: readonly number[]
  readonly reason: 'expired' | 'conflated' | 'upstream-rejected'
  readonly resolve: () => void
  readonly fail: (err: Error) => void
}
/**
 * Acknowledged messages a power cut took (continuity.ts), found at start:
 * counted in the same durable drop accounting as any drop (ledger, totals,
 * loss reports), in one transaction. The rows are gone, so their queue is
 * not known: `queue` is the one the store reports to when there is exactly
 * one, '' otherwise, and every reporting queue gets a loss report.
 */
export type LostOp = {
  readonly kind: 'lost'
  readonly queue: string
  readonly count: number
  readonly ids: { readonly from: number; readonly to: number } | null
  /** When the loss happened at the latest: the run record's last save (epoch ms). */
  readonly at: number
  readonly resolve: () => void
  readonly fail: (err: Error) => void
}
export type Op = AppendOp | AckOp | DeleteOp | LostOp

export type Effect =
  | { readonly t: 'insert'; readonly msg: StoredMessage }
  /** 'merged': a queued loss report replaced by a newer one carrying its counts (loss-report.ts); not a drop. */
  | { readonly t: 'delete'; readonly row: DeletedRow; readonly reason: DropReason | 'acked' | 'merged' }
  | {
      readonly t: 'drop-only'
      readonly reason: DropReason
      readonly rule: string
      readonly queue: string
      readonly count?: number
    }

export type Phase = 'new' | 'starting' | 'running' | 'stopping' | 'stopped'

/**
 * Enough for what arrives between a commit and the next take when the drain keeps up; a backlog is read from the
 * file.
 */
const LIVE_TAIL_LIMITS = { maxRows: 1024, maxBytes: 1024 * 1024 }
const newLiveTail = (): LiveTail => new LiveTail(LIVE_TAIL_LIMITS)
const newQueueState = (): QueueState => ({ depth: 0, bytes: 0, byPriority: new Map() })

type Emit = <K extends keyof MessageStoreEvents & string>(event: K, ...args: MessageStoreEvents[K]) => boolean

export class StoreState {
  phase: Phase = 'new'
  lease: SqliteDatabase | null = null
  s: Statements | null = null
  gc: GroupCommit<Op> | null = null
  disk: DiskSpace | null = null
  ledger: TopicLedger | null = null
  /** Durable drop counts and ranges, written in the transaction that drops (drop-ledger.ts). */
  dropLedger: DropLedger | null = null
  /** queue → where its loss reports go; queues not listed get none (loss-report.ts). */
  lossReports: ReadonlyMap<string, LossReportTarget> = new Map()
  /** reportKey → the newest report row written for it, while it may still be queued. */
  readonly pendingReports = new Map<string, { readonly id: number; readonly group: ReportGroup }>()

  maxBytes = 0
  minFreeBytes = 0
  nextId = 1
  /** buffer_meta.next_id as committed: every id below it is reserved (see ID_BLOCK in commit-batch.ts). */
  idReserved = 0
  totalBytes = 0
  totalRows = 0
  readonly queues = new Map<string, QueueState>()
  /** id → the message handed out (its columns answer acks and releases without a read). */
  readonly inFlight = new Map<number, StoredMessage>()
  readonly inFlightByQueue = new Map<string, number>()
  /** Ids with an ack waiting for its commit: not released, not re-taken. */
  readonly acking = new Set<number>()
  /** Ids with a drop-delete waiting for its commit: not handed out. */
  readonly doomed = new Set<number>()
  /** queue → priority → drain cursor (see sqlite-store.ts, read path). */
  readonly cursors = new Map<string, Map<number, number>>()
  /** queue → priority → the newest committed rows, while the drain keeps up (live-tail.ts). */
  readonly tails = new Map<string, Map<number, LiveTail>>()

  pressureCap: number | null = null
  pressureSince = 0
  readonly reasons = new Set<DegradedReason>()
  degradedSince: number | null = null
  lastError: { code: string; message: string; at: number } | null = null
  readonly errorLogAt = new Map<string, { at: number; suppressed: number }>()
  dataVersion = 0
  quarantine: { count: number; last: { movedTo: string; at: number; reason: string } | null } = { count: 0, last: null }
  /** The run record (continuity.ts): told of every acknowledged id, saved by the maintenance tick. */
  continuity: RunContinuity | null = null
  /** How the previous run ended, as found at start. */
  lastRun: LastRun | null = null

  /** Fsyncs whose appends wait (durability 'full'); stop() waits for them. */
  readonly syncing = new Set<Promise<void>>()
  readonly counters = { appended: 0, taken: 0, acked: 0, released: 0, commits: 0, failedCommits: 0 }
  rateSamples: Array<{ at: number; appended: number; taken: number; acked: number }> = []

  constructor(
    readonly log: Logger,
    readonly now: () => number,
    readonly drops: DropAccounting,
    private readonly emit: Emit,
  ) {}

  stoppedError(): BufferError {
    return new BufferError(
      'EDGE_ERR_BUFFER_STOPPED',
      this.phase === 'new' ? 'buffer is not started' : 'buffer is stopped',
      {
        retryable: true,
      },
    )
  }

  queue(name: string): QueueState {
    return getOrSet(this.queues, name, newQueueState)
  }

  markInFlight(m: StoredMessage): void {
    this.inFlight.set(m.id, m)
    this.inFlightByQueue.set(m.queue, (this.inFlightByQueue.get(m.queue) ?? 0) + 1)
  }

  dropInFlight(id: number): void {
    const f = this.inFlight.get(id)
    if (f === undefined) return
    this.inFlight.delete(id)
    decrement(this.inFlightByQueue, f.queue)
  }

  /** A row at or below its drain cursor became eligible again (released). */
  rewind(queue: string, priority: number, id: number): void {
    const cursors = this.cursors.get(queue)
    const at = cursors?.get(priority)
    if (cursors !== undefined && at !== undefined && at >= id) cursors.set(priority, id - 1)
    this.tails.get(queue)?.get(priority)?.drop()
  }

  /** Forget every drain position: the next takes read the file from the start. */
  resetDrain(): void {
    this.cursors.clear()
    this.tails.clear()
  }

  tail(queue: string, priority: number): LiveTail {
    return getOrSet(getOrSet(this.tails, queue, newMap<number, LiveTail>), priority, newLiveTail)
  }

  /** Queue a drop-delete (expired / conflated) for the next batch; the ids are hidden from takeBatch meanwhile. */
  enqueueDelete(ids: number[], reason: 'expired' | 'conflated'): void {
    const gc = this.gc
    if (gc === null || ids.length === 0) return
    for (const id of ids) this.doomed.add(id)
    gc.enqueue({
      kind: 'delete',
      ids,
      reason,
      resolve: () => {},
      fail: () => {
        // The rows stay; the sweep (expired) or the next release (conflated)
        // retries. They may sit below a drain cursor: read from the start again.
        for (const id of ids) this.doomed.delete(id)
        this.resetDrain()
      },
    })
  }

  applyEffect(e: Effect, appendedQueues: Set<string>): void {
    switch (e.t) {
      case 'insert': {
        const m = e.msg
        const q = this.queue(m.queue)
        q.depth++
        q.bytes += m.size
        q.byPriority.set(m.priority, (q.byPriority.get(m.priority) ?? 0) + 1)
        this.totalRows++
        this.totalBytes += m.size
        this.tails.get(m.queue)?.get(m.priority)?.push(m)
        appendedQueues.add(m.queue)
        return
      }
      case 'delete': {
        const q = this.queue(e.row.queue)
        q.depth--
        q.bytes -= e.row.size
        decrement(q.byPriority, e.row.priority)
        this.totalRows--
        this.totalBytes -= e.row.size
        if (e.reason !== 'acked') {
          this.tails.get(e.row.queue)?.get(e.row.priority)?.delete(e.row.id)
          if (e.reason !== 'merged') this.drops.record(e.reason, e.row.rule, e.row.queue)
          this.dropInFlight(e.row.id)
        }
        return
      }
      case 'drop-only':
        this.drops.record(e.reason, e.rule, e.queue, e.count ?? 1)
        return
    }
  }

  /**
   * Below the floor or after ENOSPC, "no net growth" of rows is not enough:
   * every commit appends WAL frames, and the WAL is only rewound after a
   * checkpoint (wal_autocheckpoint = 1000 pages ≈ 4 MiB). Checkpoint and
   * truncate now so the WAL gives its space back and cannot creep into the
   * floor. Best effort: a failure here changes nothing that was committed.
   */
  checkpointForSpace(): void {
    try {
      this.lease?.db.pragma('wal_checkpoint(TRUNCATE)')
    } catch (err) {
      this.log.debug({ err }, 'buffer checkpoint for space failed')
    }
  }

  /** (Re)build counters from the file: one scan at start, or after another connection wrote. */
  load(): void {
    const s = this.s
    const db = this.lease?.db
    if (s === null || db === undefined) return
    const maxId = (s.maxId.get() as number | null) ?? 0
    const meta = (s.getMeta.get('next_id') as number | undefined) ?? 1
    this.nextId = Math.max(this.nextId, meta, maxId + 1)
    this.idReserved = meta
    for (const q of this.queues.values()) {
      q.depth = 0
      q.bytes = 0
      q.byPriority.clear()
    }
    this.totalRows = 0
    this.totalBytes = 0
    for (const r of s.aggregate.all() as Array<{ queue: string; priority: number; n: number; bytes: number }>) {
      const q = this.queue(r.queue)
      q.depth += r.n
      q.bytes += r.bytes
      q.byPriority.set(r.priority, r.n)
      this.totalRows += r.n
      this.totalBytes += r.bytes
    }
    // buffer_topics must count every row (invariant 4 depends on it); it can
    // only disagree after a bug or a hand edit of the file: rebuild it then.
    const ledgerRows = s.topicRowCount.get() as number
    if (ledgerRows !== this.totalRows) {
      this.log.warn({ ledgerRows, rows: this.totalRows }, 'buffer topic ledger disagreed with the rows, rebuilt')
      db.transaction(() => {
        s.topicDeleteAll.run()
        s.topicRebuild.run()
      }).immediate()
    }
    // Forget in-flight ids whose rows another connection deleted.
    for (const id of [...this.inFlight.keys()]) if (s.selectById.get(id) === undefined) this.dropInFlight(id)
    this.resetDrain()
    this.dataVersion = db.pragma('data_version', { simple: true }) as number
  }

  health(): BufferHealth {
    return {
      state: this.reasons.size === 0 ? 'ok' : 'degraded',
      reasons: [...this.reasons].sort(),
      since: this.degradedSince,
      lastError: this.lastError,
    }
  }

  setReason(reason: DegradedReason, on: boolean): void {
    if (on === this.reasons.has(reason)) return
    const wasOk = this.reasons.size === 0
    if (on) this.reasons.add(reason)
    else this.reasons.delete(reason)
    if (wasOk && on) this.degradedSince = this.now()
    if (this.reasons.size === 0) this.degradedSince = null
    const h = this.health()
    if (on) this.log.warn({ reason, reasons: h.reasons, freeBytes: this.disk?.freeBytes ?? null }, 'buffer degraded')
    else
      this.log.info(
        { cleared: reason, reasons: h.reasons },
        h.state === 'ok' ? 'buffer healthy again' : 'buffer degraded reason cleared',
      )
    this.emitSafe('health', h)
  }

  /** A listener that throws must not fail a commit or a timer tick: log it and carry on. */
  emitSafe<K extends keyof MessageStoreEvents & string>(event: K, ...args: MessageStoreEvents[K]): void {
    try {
      this.emit(event, ...args)
    } catch (err) {
      this.log.error({ err, event }, 'buffer event listener threw')
    }
  }

  /** One counter sample per second (by the injected clock), kept for ~10 s: rates = counters now − oldest sample. */
  sampleRates(now: number): void {
    const last = this.rateSamples[this.rateSamples.length - 1]
    if (last !== undefined && now - last.at < 1000) return
    this.rateSamples.push({
      at: now,
      appended: this.counters.appended,
      taken: this.counters.taken,
      acked: this.counters.acked,
    })
    while (this.rateSamples.length > 2 && now - (this.rateSamples[0]?.at ?? now) > 10_000) this.rateSamples.shift()
  }

  rates(now: number): BufferStats['rates'] {
    const first = this.rateSamples[0]
    const c = this.counters
    if (first === undefined || now - first.at <= 0) return { appendPerSec: 0, takePerSec: 0, ackPerSec: 0 }
    const dt = (now - first.at) / 1000
    return {
      appendPerSec: (c.appended - first.appended) / dt,
      takePerSec: (c.taken - first.taken) / dt,
      ackPerSec: (c.acked - first.acked) / dt,
    }
  }

  /** A failed read or CLI write: typed error + health, never a crash. */
  readFailure(raw: unknown, what: string): BufferError {
    const err = toBufferError(raw, what)
    this.lastError = { code: err.code, message: err.message, at: this.now() }
    if (err.code === 'EDGE_ERR_BUFFER_CORRUPT') this.setReason('corrupt', true)
    else if (err.code === 'EDGE_ERR_BUFFER_BUSY') this.setReason('busy', true)
    else if (err.code === 'EDGE_ERR_BUFFER_IO') this.setReason('io-error', true)
    this.logError(err, 'buffer operation failed', { op: what })
    return err
  }

  /** At most one line per error code per 10 s, with the number suppressed meanwhile. */
  logError(err: BufferError, msg: string, fields: Record<string, unknown>): void {
    const now = this.now()
    const w = this.errorLogAt.get(err.code)
    if (w !== undefined && now - w.at < 10_000) {
      w.suppressed++
      return
    }
    this.errorLogAt.set(err.code, { at: now, suppressed: 0 })
    this.log.error({ err, code: err.code, sqliteCode: err.sqliteCode, suppressed: w?.suppressed ?? 0, ...fields }, msg)
  }
}

export function decrement<K>(m: Map<K, number>, k: K): void {
  const n = (m.get(k) ?? 0) - 1
  if (n <= 0) m.delete(k)
  else m.set(k, n)
}
