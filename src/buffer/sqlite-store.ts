// SqliteStore: the durable MessageStore (better-sqlite3, WAL, group commit).
//
// What it owns: the buffer_messages table of the agent's database file, the
// in-memory in-flight set, the byte/row counters, the drop counters, and the
// health state. The contract and its invariants are in message-store.ts;
// pragmas, durability modes (and what each loses on power failure),
// migrations and quarantine are in database.ts.
//
// Write path. append() validates, then enqueues into a GroupCommit. A batch
// (≤ maxBatch operations, or what arrived within batchWindowMs — by default
// the rest of the current event-loop turn) runs as ONE
// `BEGIN IMMEDIATE … COMMIT`: admission against the cap (evicting per
// policy), priority inheritance, conflation, the insert, plus any acks and
// drop-deletes queued meanwhile. Only after COMMIT returns are the append
// promises resolved (→ PUBACK). Counters change only after a successful
// commit, from the effects recorded during the transaction, so a rollback
// leaves memory and file in agreement.
//
// Faults.
// - SQLITE_FULL (real ENOSPC or max_page_count): the batch rolled back; its
//   appends reject with EDGE_ERR_BUFFER_FULL (retryable, fullReason
//   'disk-full', counted as 'disk-full' drops), health → degraded
//   'disk-full', and the store runs with a reduced cap (98 % of the bytes
//   committed at failure): 'drop-*' messages then evict to make room (freed
//   pages are reused without growing the file), 'refuse' messages are
//   rejected until acks free space. Every diskFullRetryMs a probe commits
//   a 64 KiB filler row and deletes it again; when that succeeds the cap is
//   restored and the degraded state clears — with or without traffic.
//   Nothing acknowledged is ever dropped by this path.
// - Free space below minFreeBytes (statfs, cached, rechecked at most every
//   diskCheckIntervalMs): degraded 'disk-low'; the cap becomes "no net
//   growth" (same policy handling, drops counted as 'disk-full'), and the
//   WAL is checkpointed and truncated after every commit, since rewriting
//   rows in place still appends WAL frames until the next checkpoint.
//   Real ENOSPC can make even an ack fail (a DELETE needs WAL space too):
//   the floor is what keeps the store away from that; it is the first line
//   of defence, SQLITE_FULL handling the second.
// - I/O errors, busy, corruption while running: the batch's promises reject
//   with a typed error, health → degraded ('io-error' / 'busy' clear on the
//   next successful commit; 'corrupt' is sticky — the next start runs
//   quick_check and quarantines). Timers catch everything: nothing here can
//   crash the process, nothing fails silently (state + rate-limited log).
//
// Read path. takeBatch reads each priority of the queue, highest first, as
// one range of the drain index after a per-(queue, priority) cursor: every
// row at or below the cursor is in flight, being deleted, or gone. Rows are
// inserted above every cursor (ids only grow); a release moves the cursor
// back to the released row. So a take costs O(batch), however many rows are
// in flight. Rows whose TTL passed are dropped there ('expired') and by a
// periodic sweep.
//
// Concurrency. better-sqlite3 is synchronous and every transaction here
// begins and ends inside one synchronous call, so the connection can be
// shared with the aedes persistence (database.ts). Another process (the CLI)
// may write too: PRAGMA data_version reveals it, and the counters are then
// recounted.

import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  BufferError,
  defaultStatFs,
  DiskSpace,
  type Durability,
  type Migration,
  openDatabase,
  readQuarantineLog,
  type SqliteDatabase,
  type StatFs,
  toBufferError,
} from '../storage/index.js'
import { executeBatch } from './commit-batch.js'
import { checkIds, release, takeBatch } from './drain.js'
import { DropAccounting } from './drop-accounting.js'
import { DropLedger, type LedgerQuery, type LedgerRange } from './drop-ledger.js'
import { GroupCommit, type GroupCommitTimers } from './group-commit.js'
import type { LossReportTarget } from './loss-report.js'
import { RunContinuity, type PowerLoss } from './continuity.js'
import { exportRows, peekRows, purgeRows } from './admin-ops.js'
import { Maintenance } from './maintenance.js'
import { MESSAGE_STORE_MIGRATIONS, prepareStatements, type Statements } from './message-schema.js'
import {
  type AppendInput,
  type AppendResult,
  type BufferHealth,
  type BufferStats,
  type HandedOutDropReason,
  type MessageExport,
  type MessageStore,
  type MessageStoreEvents,
  type NormalizedMessage,
  normalizeAppend,
  type PeekedMessage,
  type StoredMessage,
} from './message-store.js'
import { collectStats } from './stats.js'
import { type Op, StoreState } from './store-state.js'
import { TopicLedger } from './topic-ledger.js'

const MiB = 1024 * 1024

export interface SqliteStoreOptions {
  /** Directory of the database file; created with mode 0700 if missing. */
  readonly dataDir: string
  /** Default 'edge-agent.db'. */
  readonly fileName?: string
  readonly logger: Logger
  /** Default 'full' (WAL + synchronous=FULL). See database.ts for what each mode loses on power failure. */
  readonly durability?: Durability
  /** Operations per group-commit transaction. Default 256. */
  readonly maxBatch?: number
  /**
   * Milliseconds a batch waits for more operations after its first. Default 0:
   * commit at the end of the current event-loop turn. Batching then comes from
   * the commit itself — the loop is blocked while SQLite fsyncs, devices' packets
   * pile up in the socket buffers, and the next poll phase hands them all to one
   * batch — so batches grow with load and with fsync latency, and an idle store
   * adds no delay; a fixed window was slower and added latency at every load
   * (bench/buffer-append.ts; figures in docs/benchmarks.md). A positive window
   * caps the commit rate instead (fewer, larger WAL writes, e.g. to spare
   * flash), at that latency.
   */
  readonly batchWindowMs?: number
  /**
   * Durability 'full': WAL fsyncs per second at most; a commit that follows an fsync closer than 1/this s waits for
   * the rest of the interval, sharing the next fsync with what arrives meanwhile (storage/wal-sync.ts). Default 0: no
   * bound (the agent passes buffer.maxFsyncsPerSecond).
   */
  readonly maxFsyncsPerSecond?: number
  /**
   * Cap on the sum of estimateMessageBytes() of stored rows (in flight included), bytes.
   * Default: 25 % of the data file system, clamped to [64 MiB, 1 GiB] (256 MiB if statfs fails).
   */
  readonly maxBytes?: number
  /** Free-space floor of the data file system, bytes. Default min(200 MiB, 5 % of its size). 0 disables. */
  readonly minFreeBytes?: number
  /** Free space at which a tripped floor clears, bytes. Default 2 × minFreeBytes. */
  readonly resumeFreeBytes?: number
  /** Minimum milliseconds between two statfs calls. Default 1000. */
  readonly diskCheckIntervalMs?: number
  /** Milliseconds between TTL sweeps. Default 5000. */
  readonly sweepIntervalMs?: number
  /** Period of the maintenance timer (sweep, disk, logs, rates), ms. Default 1000. */
  readonly maintenanceIntervalMs?: number
  /** One drop summary line per reason per this many ms. Default 10000. */
  readonly dropLogIntervalMs?: number
  /** After SQLITE_FULL, milliseconds between disk probes (see the header). Default 5000. */
  readonly diskFullRetryMs?: number
  /** Hard cap on the database file (PRAGMA max_page_count), bytes. Default: none. */
  readonly maxFileBytes?: number
  /** Other owners' migrations to apply on the same file (see database.ts). */
  readonly migrations?: readonly Migration[]
  /** PRAGMA quick_check at open. Default 'quick'. */
  readonly startupCheck?: 'quick' | 'none'
  /** Move a corrupt file aside and start fresh (default true); the CLI passes false. */
  readonly quarantineCorrupt?: boolean
  /** Clock, epoch ms. Default Date.now. */
  readonly now?: () => number
  /** statfs replacement (tests). */
  readonly statfs?: StatFs
  /** Timers of the group-commit window (tests). */
  readonly timers?: GroupCommitTimers
  /** Most rows kept in the drop ledger (drop-ledger.ts); older ranges are trimmed, and counted. Default 10 000. */
  readonly maxDropLedgerRows?: number
  /**
   * false: count drops in memory only, as before issue #19. For bench/drop-accounting.ts's comparison; never in the
   * agent.
   */
  readonly durableDrops?: boolean
}

/** Database files used by a started SqliteStore of this process. */
const ownedFiles = new Set<string>()

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n))
}

export class SqliteStore extends EventEmitter<MessageStoreEvents> implements MessageStore {
  readonly name = 'buffer'
  readonly #o: SqliteStoreOptions
  readonly #st: StoreState
  #stopping: Promise<void> | undefined
  #ownsFile = false
  #timer: ReturnType<typeof setInterval> | undefined

  constructor(options: SqliteStoreOptions) {
    super()
    // No I/O here (STYLE 5.1): options are kept, everything else waits for start().
    this.#o = options
    const log = options.logger.child({ component: 'buffer' })
    const now = options.now ?? Date.now
    const drops = new DropAccounting(log, options.dropLogIntervalMs ?? 10_000, now)
    this.#st = new StoreState(log, now, drops, (event, ...args) =>
      (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args),
    )
  }

  /** Absolute path of the database file (valid before start). */
  get path(): string {
    return join(this.#o.dataDir, this.#o.fileName ?? 'edge-agent.db')
  }

  /** The database lease, for owners that share the connection (after start). */
  get database(): SqliteDatabase {
    if (this.#st.lease === null) throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'buffer is not started')
    return this.#st.lease
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#st.phase === 'running') return
    if (this.#st.phase !== 'new')
      throw new BufferError('EDGE_ERR_BUFFER_STOPPED', `buffer cannot start from state '${this.#st.phase}'`)
    signal.throwIfAborted()
    this.#st.phase = 'starting'
    const o = this.#o
    try {
      const continuity = new RunContinuity({
        dataDir: o.dataDir,
        durability: o.durability ?? 'full',
        logger: this.#st.log,
        now: this.#st.now,
      })
      const lease = openDatabase(this.path, {
        mustHoldStore: continuity.storeExisted,
        logger: this.#st.log,
        durability: o.durability ?? 'full',
        migrations: [...MESSAGE_STORE_MIGRATIONS, ...(o.migrations ?? [])],
        startupCheck: o.startupCheck ?? 'quick',
        quarantineCorrupt: o.quarantineCorrupt ?? true,
        now: this.#st.now,
        ...(o.maxFileBytes === undefined ? {} : { maxFileBytes: o.maxFileBytes }),
        ...(o.maxFsyncsPerSecond === undefined ? {} : { maxSyncsPerSecond: o.maxFsyncsPerSecond }),
      })
      this.#st.lease = lease
      if (ownedFiles.has(lease.path)) {
        // Two stores on one connection would keep two sets of counters and
        // in-flight marks that cannot see each other's writes.
        throw new BufferError(
          'EDGE_ERR_BUFFER_INVALID',
          'another SqliteStore in this process already uses this database file',
        )
      }
      ownedFiles.add(lease.path)
      this.#ownsFile = true
      signal.throwIfAborted() // the catch below closes the lease
      this.#st.s = prepareStatements(lease.db)
      this.#st.ledger = new TopicLedger(this.#st.s)
      if (o.durableDrops !== false) {
        this.#st.dropLedger = new DropLedger(
          lease.db,
          o.maxDropLedgerRows === undefined ? {} : { maxRows: o.maxDropLedgerRows },
        )
      }
      this.#resolveLimits()
      this.#st.load()
      this.#st.quarantine = readQuarantineLog(lease.db)
      const atStart = { nextId: this.#st.nextId, quarantined: lease.quarantined !== null }
      const lastRun = continuity.begin(atStart, this.#st.totalRows)
      this.#st.lastRun = lastRun
      this.#st.continuity = continuity
      this.#st.gc = new GroupCommit<Op>({
        maxBatch: o.maxBatch ?? 256,
        windowMs: o.batchWindowMs ?? 0,
        execute: (batch) => executeBatch(this.#st, batch),
        holdMs: () => lease.syncDelayMs(),
        ...(o.timers === undefined ? {} : { timers: o.timers }),
      })
      if (lastRun.loss !== null) this.#recordPowerLoss(lastRun.loss)
      const t = this.#st.now()
      this.#st.sampleRates(t) // baseline: rates are meaningful from the start
      const maintenance = new Maintenance(this.#st, o)
      this.#timer = setInterval(() => maintenance.tick(), o.maintenanceIntervalMs ?? 1000)
      // The agent's lifetime is held by its servers, not by housekeeping.
      this.#timer.unref()
      this.#st.phase = 'running'
      this.#st.log.info(
        {
          path: lease.path,
          durability: lease.durability,
          maxBytes: this.#st.maxBytes,
          minFreeBytes: this.#st.minFreeBytes,
          rows: this.#st.totalRows,
          bytes: this.#st.totalBytes,
          quarantined: this.#st.quarantine.count,
        },
        'buffer started',
      )
    } catch (err) {
      this.#st.phase = 'stopped'
      this.#releaseFile()
      if (this.#st.lease !== null) {
        this.#st.lease.close()
        this.#st.lease = null
      }
      if (signal.aborted) throw err
      throw toBufferError(err, 'start buffer')
    }
  }

  /**
   * The previous run's power loss, counted like any drop: durably, in one
   * transaction (drop ledger, totals 'since created', loss reports). Rule ''
   * (the rows are gone, their rules with them); queue: see LostOp. A failed
   * commit still counts it in memory and says so: the loss is never silent.
   */
  #recordPowerLoss(loss: PowerLoss): void {
    const gc = this.#st.gc
    if (gc === null) return
    const reporting = [...this.#st.lossReports.keys()]
    const queue = reporting.length === 1 ? (reporting[0] as string) : ''
    gc.enqueue({
      kind: 'lost',
      queue,
      count: loss.count,
      ids: loss.ids,
      at: loss.after,
      resolve: () => {},
      fail: (err) => {
        this.#st.log.error({ err, count: loss.count }, 'power loss could not be recorded durably')
        this.#st.drops.record('power-loss', '', queue, loss.count)
      },
    })
    gc.flush()
  }

  /** Flush the pending batch, checkpoint (TRUNCATE) and close. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    if (this.#st.phase === 'new') {
      this.#st.phase = 'stopped'
      return
    }
    this.#st.phase = 'stopping'
    if (this.#timer !== undefined) clearInterval(this.#timer)
    try {
      this.#st.gc?.flush()
    } catch (err) {
      this.#st.log.error({ err }, 'final buffer flush failed')
    }
    await Promise.allSettled([...this.#st.syncing])
    this.#st.drops.flush()
    this.#closeDatabase()
    await this.#st.continuity?.settled()
    this.#st.continuity?.end(this.#st.totalRows)
    this.#st.phase = 'stopped'
    this.#st.log.info({ rows: this.#st.totalRows, bytes: this.#st.totalBytes }, 'buffer stopped')
  }

  /**
   * Abrupt close (undici's destroy): pending operations are rejected, not
   * committed. Nothing acknowledged is lost; used by tests to simulate a crash
   * between batches, and by the agent if a graceful stop hangs.
   */
  destroy(): void {
    if (this.#st.phase === 'stopped') return
    this.#stopping ??= Promise.resolve()
    this.#st.phase = 'stopping'
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#st.gc?.abort(new BufferError('EDGE_ERR_BUFFER_STOPPED', 'buffer destroyed', { retryable: true }))
    this.#closeDatabase()
    this.#st.phase = 'stopped'
  }

  #releaseFile(): void {
    if (this.#ownsFile && this.#st.lease !== null) ownedFiles.delete(this.#st.lease.path)
    this.#ownsFile = false
  }

  #closeDatabase(): void {
    this.#releaseFile()
    this.#st.inFlight.clear()
    this.#st.inFlightByQueue.clear()
    this.#st.acking.clear()
    this.#st.doomed.clear()
    this.#st.resetDrain()
    this.#st.ledger = null
    this.#st.dropLedger = null
    this.#st.s = null
    const lease = this.#st.lease
    this.#st.lease = null
    lease?.close()
  }

  // -------------------------------------------------------------------------
  // Write path

  append(input: AppendInput): Promise<AppendResult> {
    const gc = this.#st.gc
    if (this.#st.phase !== 'running' || gc === null) return Promise.reject(this.#st.stoppedError())
    let msg: NormalizedMessage
    try {
      msg = normalizeAppend(input)
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    return new Promise<AppendResult>((resolve, reject) => {
      const acked = (r: AppendResult): void => {
        if (r.id !== null) this.#st.continuity?.noteAcked(r.id)
        resolve(r)
      }
      gc.enqueue({ kind: 'append', msg, resolve: acked, fail: reject })
    })
  }

  ack(ids: readonly number[]): Promise<void> {
    const gc = this.#st.gc
    if (this.#st.phase !== 'running' || gc === null) return Promise.reject(this.#st.stoppedError())
    const valid = checkIds(ids)
    if (valid instanceof BufferError) return Promise.reject(valid)
    if (valid.length === 0) return Promise.resolve()
    for (const id of valid) if (this.#st.inFlight.has(id)) this.#st.acking.add(id)
    return new Promise<void>((resolve, reject) => {
      gc.enqueue({
        kind: 'ack',
        ids: valid,
        resolve,
        fail: (err) => {
          for (const id of valid) this.#st.acking.delete(id)
          reject(err)
        },
      })
    })
  }

  drop(ids: readonly number[], reason: HandedOutDropReason): Promise<void> {
    const gc = this.#st.gc
    if (this.#st.phase !== 'running' || gc === null) return Promise.reject(this.#st.stoppedError())
    const valid = checkIds(ids)
    if (valid instanceof BufferError) return Promise.reject(valid)
    if (valid.length === 0) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      gc.enqueue({ kind: 'delete', ids: valid, reason, resolve, fail: reject })
    })
  }

  // -------------------------------------------------------------------------
  // Drain path (drain.ts)

  async takeBatch(queue: string, max: number): Promise<StoredMessage[]> {
    return takeBatch(this.#st, this.#running(), queue, max)
  }

  async release(ids: readonly number[]): Promise<void> {
    release(this.#st, this.#running(), ids)
  }

  async releaseAll(queue?: string): Promise<number> {
    this.#running()
    const ids: number[] = []
    for (const [id, f] of this.#st.inFlight)
      if ((queue === undefined || f.queue === queue) && !this.#st.acking.has(id)) ids.push(id)
    await this.release(ids)
    return ids.length
  }

  // -------------------------------------------------------------------------
  // CLI helpers

  async peek(queue?: string, limit = 100): Promise<PeekedMessage[]> {
    return peekRows(this.#st, this.#running(), queue, limit)
  }

  purge(queue?: string): Promise<number> {
    return purgeRows(this.#st, () => this.#running(), queue)
  }

  async exportRows(queue?: string): Promise<MessageExport> {
    return exportRows(this.#st, () => this.#running(), queue)
  }

  // -------------------------------------------------------------------------
  // Stats and health

  stats(): BufferStats {
    return collectStats(this.#st, this.#st.lease?.durability ?? this.#o.durability ?? 'full')
  }

  health(): BufferHealth {
    return this.#st.health()
  }

  /**
   * Where each queue's loss reports go (loss-report.ts); queues not listed
   * get none. No I/O: may be called before start (the agent does, once the
   * bridges and their rules exist).
   */
  setLossReports(targets: ReadonlyMap<string, LossReportTarget>): void {
    this.#st.lossReports = new Map(targets)
  }

  /** Ranges of the drop ledger, oldest first (`edge-agent buffer drops`). */
  dropRanges(query: LedgerQuery = {}): LedgerRange[] {
    this.#running()
    try {
      return this.#st.dropLedger?.ranges(query) ?? []
    } catch (err) {
      throw this.#st.readFailure(err, 'drop ledger')
    }
  }

  #resolveLimits(): void {
    const o = this.#o
    const statfs = o.statfs ?? defaultStatFs
    let total: number | null = null
    try {
      total = statfs(o.dataDir).totalBytes
    } catch (err) {
      this.#st.log.warn({ err, dataDir: o.dataDir }, 'statfs failed, using fixed buffer limits')
    }
    this.#st.maxBytes =
      o.maxBytes ?? (total === null ? 256 * MiB : clamp(Math.floor(total * 0.25), 64 * MiB, 1024 * MiB))
    this.#st.minFreeBytes =
      o.minFreeBytes ?? (total === null ? 200 * MiB : Math.min(200 * MiB, Math.floor(total * 0.05)))
    if (!(this.#st.maxBytes > 0)) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'maxBytes must be > 0')
    this.#st.disk = new DiskSpace({
      path: o.dataDir,
      minFreeBytes: this.#st.minFreeBytes,
      resumeFreeBytes: o.resumeFreeBytes ?? 2 * this.#st.minFreeBytes,
      checkIntervalMs: o.diskCheckIntervalMs ?? 1000,
      now: this.#st.now,
      statfs,
    })
  }

  #running(): Statements {
    if (this.#st.phase !== 'running' || this.#st.s === null) throw this.#st.stoppedError()
    return this.#st.s
  }
}
