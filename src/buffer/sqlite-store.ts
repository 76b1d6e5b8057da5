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
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import type Database from 'better-sqlite3'
import type { Logger } from 'pino'
import { type Durability, type Migration, openDatabase, readQuarantineLog, type SqliteDatabase } from './database.js'
import { defaultStatFs, DiskSpace, type StatFs } from './disk-space.js'
import { RunContinuity, type LastRun } from './continuity.js'
import { DropAccounting } from './drop-accounting.js'
import { BufferError, type BufferErrorCode, toBufferError } from './errors.js'
import { GroupCommit, type GroupCommitTimers } from './group-commit.js'
import { LiveTail } from './live-tail.js'
import { TopicLedger } from './topic-ledger.js'
import { getOrSet, newMap } from './map-of.js'
import {
  type DeletedRow,
  MESSAGE_STORE_MIGRATIONS,
  type MessageRow,
  prepareStatements,
  rawRowToMessage,
  type RawMessageRow,
  rowToPeeked,
  type Statements,
  WHEN_FULL_CODE,
} from './message-schema.js'
import {
  type AppendInput,
  type AppendResult,
  type BufferHealth,
  type BufferStats,
  type DegradedReason,
  type DropReason,
  type MessageExport,
  type MessageStore,
  type MessageStoreEvents,
  type NormalizedMessage,
  normalizeAppend,
  type PeekedMessage,
  type QueueStats,
  type StoredMessage,
  toStoredMessage,
} from './message-store.js'

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
   * adds no delay. bench/buffer-append.ts, 1 KiB payloads, WAL+FULL on this
   * machine's virtio disk: 10 closed-loop publishers 15.4 k msg/s (p50 0.6 ms)
   * with 0 ms against 3.3 k msg/s (p50 2.9 ms) with 2 ms; 100 publishers
   * 28.9 k against 13.8 k msg/s. A positive window caps the commit rate
   * instead (fewer, larger WAL writes, e.g. to spare flash), at that latency.
   */
  readonly batchWindowMs?: number
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
}

interface QueueState {
  depth: number
  bytes: number
  /** priority → rows; used for per-queue oldest age and the eviction candidates. */
  readonly byPriority: Map<number, number>
}

type AppendOp = {
  readonly kind: 'append'
  readonly msg: NormalizedMessage
  readonly resolve: (r: AppendResult) => void
  readonly fail: (err: Error) => void
}
type AckOp = { readonly kind: 'ack'; readonly ids: readonly number[]; readonly resolve: () => void; readonly fail: (err: Error) => void }
type DeleteOp = {
  readonly kind: 'delete'
  readonly ids: readonly number[]
  readonly reason: 'expired' | 'conflated'
  readonly resolve: () => void
  readonly fail: (err: Error) => void
}
type Op = AppendOp | AckOp | DeleteOp

type Effect =
  | { readonly t: 'insert'; readonly msg: StoredMessage }
  | { readonly t: 'delete'; readonly row: DeletedRow; readonly reason: DropReason | 'acked' }
  | { readonly t: 'drop-only'; readonly reason: DropReason; readonly rule: string; readonly queue: string }

type Outcome = { readonly ok: true; readonly value: AppendResult | undefined } | { readonly ok: false; readonly err: BufferError }

type State = 'new' | 'starting' | 'running' | 'stopping' | 'stopped'

/** Database files used by a started SqliteStore of this process. */
const ownedFiles = new Set<string>()

const PROBE_BYTES = 64 * 1024
/** Enough for what arrives between a commit and the next take when the drain keeps up; a backlog is read from the file. */
const LIVE_TAIL_LIMITS = { maxRows: 1024, maxBytes: 1024 * 1024 }
const PAGE_ROWS = 500
const newLiveTail = (): LiveTail => new LiveTail(LIVE_TAIL_LIMITS)
const newQueueState = (): QueueState => ({ depth: 0, bytes: 0, byPriority: new Map() })

/**
 * Ids are reserved in blocks: buffer_meta.next_id is written once per
 * ID_BLOCK ids, not in every commit, which saves a page of WAL per commit
 * (a commit of one message writes about four). After a restart the ids
 * go on above the reserved block: never reused, with a gap.
 */
const ID_BLOCK = 4096

export class SqliteStore extends EventEmitter<MessageStoreEvents> implements MessageStore {
  readonly name = 'buffer'
  readonly #o: SqliteStoreOptions
  readonly #log: Logger
  readonly #now: () => number
  #state: State = 'new'
  #stopping: Promise<void> | undefined
  #lease: SqliteDatabase | null = null
  #ownsFile = false
  #s: Statements | null = null
  #gc: GroupCommit<Op> | null = null
  #disk: DiskSpace | null = null
  #drops: DropAccounting
  #maintenance: ReturnType<typeof setInterval> | undefined

  #maxBytes = 0
  #minFreeBytes = 0
  #nextId = 1
  /** buffer_meta.next_id as committed: every id below it is reserved (see ID_BLOCK). */
  #idReserved = 0
  #totalBytes = 0
  #totalRows = 0
  readonly #queues = new Map<string, QueueState>()
  /** id → the message handed out (its columns answer acks and releases without a read). */
  readonly #inFlight = new Map<number, StoredMessage>()
  readonly #inFlightByQueue = new Map<string, number>()
  /** Ids with an ack waiting for its commit: not released, not re-taken. */
  readonly #acking = new Set<number>()
  /** Ids with a drop-delete waiting for its commit: not handed out. */
  readonly #doomed = new Set<number>()
  #ledger: TopicLedger | null = null
  /** queue → priority → drain cursor (see the header, read path). */
  readonly #cursors = new Map<string, Map<number, number>>()
  /** queue → priority → the newest committed rows, while the drain keeps up (live-tail.ts). */
  readonly #tails = new Map<string, Map<number, LiveTail>>()

  #pressureCap: number | null = null
  #pressureSince = 0
  readonly #reasons = new Set<DegradedReason>()
  #degradedSince: number | null = null
  #lastError: { code: string; message: string; at: number } | null = null
  readonly #errorLogAt = new Map<string, { at: number; suppressed: number }>()

  #dataVersion = 0
  #lastSweepAt = 0
  #lastWalCheckAt = 0
  #lastVacuumAt = 0
  #quarantine: { count: number; last: { movedTo: string; at: number; reason: string } | null } = { count: 0, last: null }
  #continuity: RunContinuity | null = null
  #lastRun: LastRun | null = null

  /** Fsyncs whose appends wait (durability 'full'); stop() waits for them. */
  readonly #syncing = new Set<Promise<void>>()
  readonly #counters = { appended: 0, taken: 0, acked: 0, released: 0, commits: 0, failedCommits: 0 }
  #rateSamples: Array<{ at: number; appended: number; taken: number; acked: number }> = []

  constructor(options: SqliteStoreOptions) {
    super()
    // No I/O here (STYLE 5.1): options are kept, everything else waits for start().
    this.#o = options
    this.#log = options.logger.child({ component: 'buffer' })
    this.#now = options.now ?? Date.now
    this.#drops = new DropAccounting(this.#log, options.dropLogIntervalMs ?? 10_000, this.#now)
  }

  /** Absolute path of the database file (valid before start). */
  get path(): string {
    return join(this.#o.dataDir, this.#o.fileName ?? 'edge-agent.db')
  }

  /** The database lease, for owners that share the connection (after start). */
  get database(): SqliteDatabase {
    if (this.#lease === null) throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'buffer is not started')
    return this.#lease
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#state === 'running') return
    if (this.#state !== 'new') throw new BufferError('EDGE_ERR_BUFFER_STOPPED', `buffer cannot start from state '${this.#state}'`)
    signal.throwIfAborted()
    this.#state = 'starting'
    const o = this.#o
    try {
      const continuity = new RunContinuity({
        dataDir: o.dataDir,
        durability: o.durability ?? 'full',
        logger: this.#log,
        now: this.#now,
      })
      const lease = openDatabase(this.path, {
        mustHoldStore: continuity.storeExisted,
        logger: this.#log,
        durability: o.durability ?? 'full',
        migrations: [...MESSAGE_STORE_MIGRATIONS, ...(o.migrations ?? [])],
        startupCheck: o.startupCheck ?? 'quick',
        quarantineCorrupt: o.quarantineCorrupt ?? true,
        now: this.#now,
        ...(o.maxFileBytes === undefined ? {} : { maxFileBytes: o.maxFileBytes }),
      })
      this.#lease = lease
      if (ownedFiles.has(lease.path)) {
        // Two stores on one connection would keep two sets of counters and
        // in-flight marks that cannot see each other's writes.
        throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'another SqliteStore in this process already uses this database file')
      }
      ownedFiles.add(lease.path)
      this.#ownsFile = true
      signal.throwIfAborted() // the catch below closes the lease
      this.#s = prepareStatements(lease.db)
      this.#ledger = new TopicLedger(this.#s)
      this.#resolveLimits()
      this.#load()
      this.#quarantine = readQuarantineLog(lease.db)
      const atStart = { nextId: this.#nextId, quarantined: lease.quarantined !== null }
      this.#lastRun = continuity.begin(atStart, this.#totalRows)
      this.#continuity = continuity
      if (this.#lastRun.loss !== null) this.#drops.record('power-loss', '', '', this.#lastRun.loss.count)
      this.#gc = new GroupCommit<Op>({
        maxBatch: o.maxBatch ?? 256,
        windowMs: o.batchWindowMs ?? 0,
        execute: (batch) => this.#execute(batch),
        ...(o.timers === undefined ? {} : { timers: o.timers }),
      })
      const t = this.#now()
      this.#sampleRates(t) // baseline: rates are meaningful from the start
      this.#lastSweepAt = t - (o.sweepIntervalMs ?? 5000) // sweep at the first tick
      this.#lastWalCheckAt = t
      this.#lastVacuumAt = t
      this.#maintenance = setInterval(() => this.#tick(), o.maintenanceIntervalMs ?? 1000)
      // The agent's lifetime is held by its servers, not by housekeeping.
      this.#maintenance.unref()
      this.#state = 'running'
      this.#log.info(
        {
          path: lease.path,
          durability: lease.durability,
          maxBytes: this.#maxBytes,
          minFreeBytes: this.#minFreeBytes,
          rows: this.#totalRows,
          bytes: this.#totalBytes,
          quarantined: this.#quarantine.count,
        },
        'buffer started',
      )
    } catch (err) {
      this.#state = 'stopped'
      this.#releaseFile()
      if (this.#lease !== null) {
        this.#lease.close()
        this.#lease = null
      }
      if (signal.aborted) throw err
      throw toBufferError(err, 'start buffer')
    }
  }

  /** Flush the pending batch, checkpoint (TRUNCATE) and close. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    if (this.#state === 'new') {
      this.#state = 'stopped'
      return
    }
    this.#state = 'stopping'
    if (this.#maintenance !== undefined) clearInterval(this.#maintenance)
    try {
      this.#gc?.flush()
    } catch (err) {
      this.#log.error({ err }, 'final buffer flush failed')
    }
    await Promise.allSettled([...this.#syncing])
    this.#drops.flush()
    this.#closeDatabase()
    this.#continuity?.end(this.#totalRows)
    this.#state = 'stopped'
    this.#log.info({ rows: this.#totalRows, bytes: this.#totalBytes }, 'buffer stopped')
  }

  /**
   * Abrupt close (undici's destroy): pending operations are rejected, not
   * committed. Nothing acknowledged is lost; used by tests to simulate a crash
   * between batches, and by the agent if a graceful stop hangs.
   */
  destroy(): void {
    if (this.#state === 'stopped') return
    this.#stopping ??= Promise.resolve()
    this.#state = 'stopping'
    if (this.#maintenance !== undefined) clearInterval(this.#maintenance)
    this.#gc?.abort(new BufferError('EDGE_ERR_BUFFER_STOPPED', 'buffer destroyed', { retryable: true }))
    this.#closeDatabase()
    this.#state = 'stopped'
  }

  #releaseFile(): void {
    if (this.#ownsFile && this.#lease !== null) ownedFiles.delete(this.#lease.path)
    this.#ownsFile = false
  }

  #closeDatabase(): void {
    this.#releaseFile()
    this.#inFlight.clear()
    this.#inFlightByQueue.clear()
    this.#acking.clear()
    this.#doomed.clear()
    this.#resetDrain()
    this.#ledger = null
    this.#s = null
    const lease = this.#lease
    this.#lease = null
    lease?.close()
  }

  // -------------------------------------------------------------------------
  // Write path

  append(input: AppendInput): Promise<AppendResult> {
    const gc = this.#gc
    if (this.#state !== 'running' || gc === null) return Promise.reject(this.#stoppedError())
    let msg: NormalizedMessage
    try {
      msg = normalizeAppend(input)
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    return new Promise<AppendResult>((resolve, reject) => {
      const acked = (r: AppendResult): void => {
        if (r.id !== null) this.#continuity?.noteAcked(r.id)
        resolve(r)
      }
      gc.enqueue({ kind: 'append', msg, resolve: acked, fail: reject })
    })
  }

  ack(ids: readonly number[]): Promise<void> {
    const gc = this.#gc
    if (this.#state !== 'running' || gc === null) return Promise.reject(this.#stoppedError())
    const valid = checkIds(ids)
    if (valid instanceof BufferError) return Promise.reject(valid)
    if (valid.length === 0) return Promise.resolve()
    for (const id of valid) if (this.#inFlight.has(id)) this.#acking.add(id)
    return new Promise<void>((resolve, reject) => {
      gc.enqueue({
        kind: 'ack',
        ids: valid,
        resolve,
        fail: (err) => {
          for (const id of valid) this.#acking.delete(id)
          reject(err)
        },
      })
    })
  }

  /** Queue a drop-delete (expired / conflated) for the next batch; the ids are hidden from takeBatch meanwhile. */
  #enqueueDelete(ids: number[], reason: 'expired' | 'conflated'): void {
    const gc = this.#gc
    if (gc === null || ids.length === 0) return
    for (const id of ids) this.#doomed.add(id)
    gc.enqueue({
      kind: 'delete',
      ids,
      reason,
      resolve: () => {},
      fail: () => {
        // The rows stay; the sweep (expired) or the next release (conflated)
        // retries. They may sit below a drain cursor: read from the start again.
        for (const id of ids) this.#doomed.delete(id)
        this.#resetDrain()
      },
    })
  }

  /** One group-commit batch. Synchronous; settles every op. */
  #execute(batch: Op[]): void {
    const lease = this.#lease
    const s = this.#s
    const ledger = this.#ledger
    if (lease === null || s === null || ledger === null || !lease.db.open) {
      const err = this.#stoppedError()
      for (const op of batch) op.fail(err)
      return
    }
    const db = lease.db
    const started = performance.now()
    const now = this.#now()
    const diskLow = this.#disk?.isLow() ?? false
    this.#setReason('disk-low', diskLow)
    let cap = this.#maxBytes
    if (this.#pressureCap !== null) cap = Math.min(cap, this.#pressureCap)
    if (diskLow) cap = Math.min(cap, this.#totalBytes)
    const constrained = diskLow || this.#pressureCap !== null

    const effects: Effect[] = []
    const outcomes: Outcome[] = new Array<Outcome>(batch.length)
    const txPriorities = new Set<number>()
    let bytes = this.#totalBytes
    let inserted = 0
    let acks = 0
    let deletes = 0
    let nextId = this.#nextId
    let reserved = 0

    const deleteRow = (id: number, reason: DropReason | 'acked'): boolean => {
      const row = s.deleteById.get(id) as DeletedRow | undefined
      if (row === undefined) return false
      ledger.remove(row.queue, row.topic)
      bytes -= row.size
      effects.push({ t: 'delete', row, reason })
      return true
    }

    /** An ack: for an in-flight row (the usual case) memory has the row's columns already. */
    const ackRow = (id: number): boolean => {
      const f = this.#inFlight.get(id)
      if (f === undefined) return deleteRow(id, 'acked')
      if (s.deleteAcked.run(id).changes === 0) return false
      ledger.remove(f.queue, f.topic)
      bytes -= f.size
      effects.push({ t: 'delete', row: f, reason: 'acked' })
      return true
    }

    const refuse = (i: number, m: NormalizedMessage, fullReason: 'buffer-full' | 'disk-full' | 'too-large'): void => {
      const dropReason: DropReason = fullReason === 'disk-full' ? 'disk-full' : 'refused'
      effects.push({ t: 'drop-only', reason: dropReason, rule: m.rule, queue: m.queue })
      outcomes[i] = {
        ok: false,
        err: new BufferError(
          'EDGE_ERR_BUFFER_FULL',
          fullReason === 'too-large' ? 'message is larger than the buffer cap' : 'buffer full: message refused',
          { retryable: fullReason !== 'too-large', fullReason },
        ),
      }
    }

    const appendOne = (i: number, m: NormalizedMessage): void => {
      if (m.expiresAt !== null && m.expiresAt <= now) {
        effects.push({ t: 'drop-only', reason: 'expired', rule: m.rule, queue: m.queue })
        outcomes[i] = { ok: true, value: { id: null, dropped: 'expired' } }
        return
      }
      if (m.size > this.#maxBytes) {
        refuse(i, m, 'too-large')
        return
      }
      const over = bytes + m.size - cap
      if (over > 0) {
        const fullReason = constrained ? 'disk-full' : 'buffer-full'
        if (m.whenFull === 'refuse') {
          refuse(i, m, fullReason)
          return
        }
        const victims = this.#selectVictims(s, m, over, txPriorities)
        if (victims === null) {
          refuse(i, m, fullReason)
          return
        }
        const reason: DropReason = constrained ? 'disk-full' : 'evicted-full'
        for (const v of victims) deleteRow(v, reason)
      }
      // Conflation (invariant 5): older rows of the topic not in flight go.
      if (m.conflation === 'latest-only') {
        for (const id of s.topicIds.all(m.queue, m.topic) as number[]) {
          if (!this.#inFlight.has(id)) deleteRow(id, 'conflated')
        }
      }
      // Invariant 4: stored no higher than the topic's older queued rows.
      const priority = ledger.add(m.queue, m.topic, m.priority)
      const id = nextId++
      // Positional: binding by name costs 1.5 µs more per row (better-sqlite3 12).
      s.insert.run(
        id,
        m.queue,
        m.topic,
        m.qos,
        m.retain ? 1 : 0,
        priority,
        m.rule,
        m.conflation === 'latest-only' ? 1 : 0,
        WHEN_FULL_CODE[m.whenFull],
        now,
        m.expiresAt,
        m.size,
        m.payload,
        m.propertiesJson,
      )
      bytes += m.size
      inserted++
      txPriorities.add(priority)
      effects.push({ t: 'insert', msg: toStoredMessage(m, id, priority, now) })
      outcomes[i] = { ok: true, value: { id, dropped: null } }
    }

    try {
      db.transaction(() => {
        for (let i = 0; i < batch.length; i++) {
          const op = batch[i] as Op
          if (op.kind === 'append') {
            appendOne(i, op.msg)
          } else if (op.kind === 'ack') {
            for (const id of op.ids) if (ackRow(id)) acks++
            outcomes[i] = { ok: true, value: undefined }
          } else {
            for (const id of op.ids) if (deleteRow(id, op.reason)) deletes++
            outcomes[i] = { ok: true, value: undefined }
          }
        }
        ledger.flush()
        if (nextId > this.#idReserved) {
          // 'normal'/'off': exact, so that continuity.ts can tell which acknowledged ids a cut rolled back.
          reserved = nextId + (lease.durability === 'full' ? ID_BLOCK : 0)
          s.setMeta.run('next_id', reserved)
        }
      }).immediate()
    } catch (err) {
      ledger.discard()
      this.#nextId = Math.max(this.#nextId, nextId) // ids are never reused, even uncommitted ones
      this.#onCommitFailure(batch, err)
      return
    }
    this.#nextId = nextId
    this.#idReserved = Math.max(this.#idReserved, reserved)

    // Committed: now memory may follow the file.
    const appendedQueues = new Set<string>()
    for (const e of effects) this.#applyEffect(e, appendedQueues)
    for (const op of batch) {
      if (op.kind === 'ack') {
        for (const id of op.ids) {
          this.#acking.delete(id)
          this.#dropInFlight(id)
        }
      } else if (op.kind === 'delete') {
        for (const id of op.ids) this.#doomed.delete(id)
      }
    }
    if (diskLow) this.#checkpointForSpace()
    this.#counters.commits++
    this.#counters.appended += inserted
    this.#counters.acked += acks
    this.#setReason('io-error', false)
    this.#setReason('busy', false)
    const wait = lease.durability === 'full' && inserted > 0
    const durable: Array<{ op: AppendOp; value: AppendResult }> = []
    for (let i = 0; i < batch.length; i++) {
      const op = batch[i] as Op
      const out = outcomes[i]
      if (out === undefined) continue
      if (!out.ok) op.fail(out.err)
      else if (op.kind !== 'append') op.resolve()
      else if (wait) durable.push({ op, value: out.value as AppendResult })
      else op.resolve(out.value as AppendResult)
    }
    if (durable.length > 0) this.#resolveWhenSynced(lease, durable)
    this.#emitSafe('commit', { appends: inserted, acks, deletes, durationMs: performance.now() - started })
    if (appendedQueues.size > 0) this.#emitSafe('appended', [...appendedQueues])
  }

  /**
   * Durability 'full': the appends of a commit are acknowledged once its WAL
   * frames are fsync'd (wal-sync.ts), not before. Meanwhile the rows are
   * visible and may already be sent upstream: if power fails first, the
   * device (never acknowledged) sends again, a duplicate, never a loss.
   */
  #resolveWhenSynced(lease: SqliteDatabase, appends: ReadonlyArray<{ op: AppendOp; value: AppendResult }>): void {
    const p = lease.syncWal().then(
      () => {
        for (const a of appends) a.op.resolve(a.value)
      },
      (raw: unknown) => {
        const err = toBufferError(raw, 'sync the buffer to disk')
        this.#counters.failedCommits++
        this.#lastError = { code: err.code, message: err.message, at: this.#now() }
        this.#setReason('io-error', true)
        this.#logError(err, 'buffer fsync failed: appends not acknowledged (devices will resend)', { ops: appends.length })
        for (const a of appends) a.op.fail(err)
      },
    )
    this.#syncing.add(p)
    void p.finally(() => this.#syncing.delete(p))
  }

  #applyEffect(e: Effect, appendedQueues: Set<string>): void {
    switch (e.t) {
      case 'insert': {
        const m = e.msg
        const q = this.#queue(m.queue)
        q.depth++
        q.bytes += m.size
        q.byPriority.set(m.priority, (q.byPriority.get(m.priority) ?? 0) + 1)
        this.#totalRows++
        this.#totalBytes += m.size
        this.#tails.get(m.queue)?.get(m.priority)?.push(m)
        appendedQueues.add(m.queue)
        return
      }
      case 'delete': {
        const q = this.#queue(e.row.queue)
        q.depth--
        q.bytes -= e.row.size
        decrement(q.byPriority, e.row.priority)
        this.#totalRows--
        this.#totalBytes -= e.row.size
        if (e.reason !== 'acked') {
          this.#tails.get(e.row.queue)?.get(e.row.priority)?.delete(e.row.id)
          this.#drops.record(e.reason, e.row.rule, e.row.queue)
          this.#dropInFlight(e.row.id)
        }
        return
      }
      case 'drop-only':
        this.#drops.record(e.reason, e.rule, e.queue)
        return
    }
  }

  /**
   * Rows to evict so that `over` bytes are freed for `m`, per m.whenFull, or
   * null if not enough evictable rows exist (then nothing is evicted).
   * Candidates: rows whose own policy is not 'refuse', not in flight, not
   * already doomed. Reads buffer_messages_evict per priority, oldest first.
   */
  #selectVictims(s: Statements, m: NormalizedMessage, over: number, txPriorities: ReadonlySet<number>): number[] | null {
    const priorities = new Set<number>(txPriorities)
    for (const q of this.#queues.values()) for (const [p, n] of q.byPriority) if (n > 0) priorities.add(p)
    let ordered = [...priorities].sort((a, b) => a - b)
    if (m.whenFull === 'drop-lowest-priority') ordered = ordered.filter((p) => p <= m.priority)
    const cursors = ordered.map((p) => new EvictCursor(s.evictCandidates, p, this.#inFlight, this.#doomed))
    const victims: number[] = []
    let freed = 0
    // Bounded by the number of evictable rows: every step consumes one candidate.
    while (freed < over) {
      let pick: EvictCursor | undefined
      if (m.whenFull === 'drop-lowest-priority') {
        pick = cursors.find((c) => c.peek() !== undefined)
      } else {
        for (const c of cursors) {
          const head = c.peek()
          if (head !== undefined && (pick === undefined || head.id < (pick.peek()?.id ?? Infinity))) pick = c
        }
      }
      const v = pick?.take()
      if (v === undefined) return null
      victims.push(v.id)
      freed += v.size
    }
    return victims
  }

  #onCommitFailure(batch: Op[], raw: unknown): void {
    const err = toBufferError(raw, 'commit batch')
    this.#counters.failedCommits++
    this.#lastError = { code: err.code, message: err.message, at: this.#now() }
    let code: BufferErrorCode = err.code
    if (code === 'EDGE_ERR_BUFFER_IO') {
      // ENOSPC sometimes surfaces as SQLITE_IOERR_WRITE rather than SQLITE_FULL.
      this.#disk?.refresh()
      const free = this.#disk?.freeBytes
      if (free !== null && free !== undefined && free < MiB) code = 'EDGE_ERR_BUFFER_FULL'
    }
    const appends = batch.filter((op): op is AppendOp => op.kind === 'append')
    if (code === 'EDGE_ERR_BUFFER_FULL') {
      this.#checkpointForSpace()
      this.#pressureCap = Math.floor(this.#totalBytes * 0.98)
      this.#pressureSince = this.#now()
      this.#setReason('disk-full', true)
      for (const op of appends) this.#drops.record('disk-full', op.msg.rule, op.msg.queue)
    } else if (code === 'EDGE_ERR_BUFFER_CORRUPT') {
      this.#setReason('corrupt', true)
    } else if (code === 'EDGE_ERR_BUFFER_BUSY') {
      this.#setReason('busy', true)
    } else {
      this.#setReason('io-error', true)
    }
    this.#logError(err, 'buffer commit failed', { ops: batch.length, appends: appends.length })
    const failure =
      code === err.code
        ? err
        : new BufferError('EDGE_ERR_BUFFER_FULL', 'commit batch: disk is full', {
            cause: raw,
            retryable: true,
            fullReason: 'disk-full',
            ...(err.sqliteCode === undefined ? {} : { sqliteCode: err.sqliteCode }),
          })
    for (const op of batch) op.fail(failure)
  }

  // -------------------------------------------------------------------------
  // Drain path

  async takeBatch(queue: string, max: number): Promise<StoredMessage[]> {
    const s = this.#running()
    if (typeof queue !== 'string' || queue.length === 0) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'queue must be a non-empty string')
    if (!Number.isSafeInteger(max) || max < 1) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'max must be an integer ≥ 1')
    const now = this.#now()
    const out: StoredMessage[] = []
    const expired: number[] = []
    const q = this.#queues.get(queue)
    if (q === undefined) return out
    const priorities = [...q.byPriority].filter(([, n]) => n > 0).map(([p]) => p).sort((a, b) => b - a)
    const cursors = getOrSet(this.#cursors, queue, newMap<number, number>)
    try {
      // Every row considered moves the cursor past it, so the loops end.
      const consider = (priority: number, m: StoredMessage): void => {
        cursors.set(priority, m.id)
        if (this.#inFlight.has(m.id) || this.#doomed.has(m.id)) return
        if (m.expiresAt !== null && m.expiresAt <= now) {
          expired.push(m.id)
          this.#doomed.add(m.id)
          return
        }
        this.#markInFlight(m)
        out.push(m)
      }
      for (const priority of priorities) {
        const tail = this.#tail(queue, priority)
        if (tail.complete) {
          // Caught up: the rest of this priority is in memory.
          for (let m = tail.shift(); m !== undefined; m = out.length < max ? tail.shift() : undefined) consider(priority, m)
          if (out.length >= max) break
          continue
        }
        while (out.length < max) {
          const limit = max - out.length
          const rows = s.takeRange.all(queue, priority, cursors.get(priority) ?? 0, limit) as RawMessageRow[]
          for (const row of rows) consider(priority, rawRowToMessage(row))
          if (rows.length < limit) {
            tail.markComplete()
            break
          }
        }
        if (out.length >= max) break
      }
    } catch (err) {
      // Hand back what we marked: nobody will ever ack it.
      for (const m of out) this.#dropInFlight(m.id)
      for (const id of expired) this.#doomed.delete(id)
      this.#resetDrain()
      throw this.#readFailure(err, 'take batch')
    }
    if (expired.length > 0) {
      for (const id of expired) this.#doomed.delete(id) // #enqueueDelete re-adds them
      this.#enqueueDelete(expired, 'expired')
    }
    this.#counters.taken += out.length
    return out
  }

  async release(ids: readonly number[]): Promise<void> {
    const s = this.#running()
    const valid = checkIds(ids)
    if (valid instanceof BufferError) throw valid
    const superseded: number[] = []
    try {
      for (const id of valid) {
        const f = this.#inFlight.get(id)
        if (f === undefined || this.#acking.has(id)) continue
        this.#dropInFlight(id)
        this.#rewind(f.queue, f.priority, id)
        this.#counters.released++
        // Invariant 5: a released latest-only row with a newer row of its
        // topic is conflated instead of redelivered.
        if (f.conflation === 'latest-only' && s.topicHasNewer.get(f.queue, f.topic, id) !== undefined) superseded.push(id)
      }
    } catch (err) {
      throw this.#readFailure(err, 'release')
    }
    this.#enqueueDelete(superseded, 'conflated')
  }

  async releaseAll(queue?: string): Promise<number> {
    this.#running()
    const ids: number[] = []
    for (const [id, f] of this.#inFlight) if ((queue === undefined || f.queue === queue) && !this.#acking.has(id)) ids.push(id)
    await this.release(ids)
    return ids.length
  }

  /** A row at or below its drain cursor became eligible again (released). */
  #rewind(queue: string, priority: number, id: number): void {
    const cursors = this.#cursors.get(queue)
    const at = cursors?.get(priority)
    if (cursors !== undefined && at !== undefined && at >= id) cursors.set(priority, id - 1)
    this.#tails.get(queue)?.get(priority)?.drop()
  }

  /** Forget every drain position: the next takes read the file from the start. */
  #resetDrain(): void {
    this.#cursors.clear()
    this.#tails.clear()
  }

  #tail(queue: string, priority: number): LiveTail {
    return getOrSet(getOrSet(this.#tails, queue, newMap<number, LiveTail>), priority, newLiveTail)
  }

  #markInFlight(m: StoredMessage): void {
    this.#inFlight.set(m.id, m)
    this.#inFlightByQueue.set(m.queue, (this.#inFlightByQueue.get(m.queue) ?? 0) + 1)
  }

  #dropInFlight(id: number): void {
    const f = this.#inFlight.get(id)
    if (f === undefined) return
    this.#inFlight.delete(id)
    decrement(this.#inFlightByQueue, f.queue)
  }

  // -------------------------------------------------------------------------
  // CLI helpers

  async peek(queue?: string, limit = 100): Promise<PeekedMessage[]> {
    const s = this.#running()
    if (!Number.isSafeInteger(limit) || limit < 1) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'limit must be an integer ≥ 1')
    try {
      if (queue === undefined) {
        return (s.pageAll.all(0, limit) as MessageRow[]).map((r) => rowToPeeked(r, this.#inFlight.has(r.id)))
      }
      const ids = s.takeIds.all(queue, limit) as number[]
      const out: PeekedMessage[] = []
      for (const id of ids) {
        const row = s.selectById.get(id) as MessageRow | undefined
        if (row !== undefined) out.push(rowToPeeked(row, this.#inFlight.has(id)))
      }
      return out
    } catch (err) {
      throw this.#readFailure(err, 'peek')
    }
  }

  async purge(queue?: string): Promise<number> {
    let purged = 0
    // Chunks of PAGE_ROWS rows, one transaction each, yielding in between:
    // the write lock is never held long and appends keep flowing.
    for (let round = 0; round < Number.MAX_SAFE_INTEGER; round++) {
      const s = this.#running()
      const ledger = this.#ledger as TopicLedger
      const db = this.database.db
      const effects: Effect[] = []
      let n = 0
      try {
        db.transaction(() => {
          const ids = (queue === undefined ? s.purgeChunkAll.all(PAGE_ROWS) : s.purgeChunk.all(queue, PAGE_ROWS)) as number[]
          for (const id of ids) {
            const row = s.deleteById.get(id) as DeletedRow | undefined
            if (row !== undefined) {
              ledger.remove(row.queue, row.topic)
              effects.push({ t: 'delete', row, reason: 'purged' })
              n++
            }
          }
          ledger.flush()
        }).immediate()
      } catch (err) {
        ledger.discard()
        throw this.#readFailure(err, 'purge')
      }
      const ignored = new Set<string>()
      for (const e of effects) {
        this.#applyEffect(e, ignored)
        if (e.t === 'delete') {
          this.#acking.delete(e.row.id)
          this.#doomed.delete(e.row.id)
        }
      }
      purged += n
      if (n < PAGE_ROWS) break
      await yieldToLoop()
    }
    if (purged > 0) this.#log.info({ queue: queue ?? null, purged }, 'buffer purged')
    return purged
  }

  async exportRows(queue?: string): Promise<MessageExport> {
    const s = this.#running()
    let total: number
    try {
      total = (queue === undefined ? s.countAll.get() : s.countByQueue.get(queue)) as number
    } catch (err) {
      throw this.#readFailure(err, 'export')
    }
    const self = this
    async function* rows(): AsyncGenerator<PeekedMessage> {
      let after = 0
      // Keyset pages: no statement stays open between pages, so writers (and
      // WAL checkpoints) are never held up by a slow consumer.
      for (;;) {
        const st = self.#running()
        const page = (queue === undefined ? st.pageAll.all(after, PAGE_ROWS) : st.pageByQueue.all(queue, after, PAGE_ROWS)) as MessageRow[]
        for (const r of page) yield rowToPeeked(r, self.#inFlight.has(r.id))
        const last = page[page.length - 1]
        if (last === undefined || page.length < PAGE_ROWS) return
        after = last.id
        await yieldToLoop()
      }
    }
    return { total, rows: rows() }
  }

  // -------------------------------------------------------------------------
  // Stats and health

  stats(): BufferStats {
    const now = this.#now()
    const s = this.#s
    const queues: QueueStats[] = []
    for (const [name, q] of [...this.#queues].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
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
          this.#logError(toBufferError(err, 'stats'), 'buffer stats query failed', {})
        }
      }
      queues.push({
        queue: name,
        depth: q.depth,
        bytes: q.bytes,
        inFlight: this.#inFlightByQueue.get(name) ?? 0,
        oldestAgeMs: oldestAt === null ? null : Math.max(0, now - oldestAt),
      })
    }
    return {
      durability: this.#lease?.durability ?? this.#o.durability ?? 'full',
      health: this.health(),
      queues,
      totals: {
        messages: this.#totalRows,
        bytes: this.#totalBytes,
        inFlight: this.#inFlight.size,
        ...this.#counters,
      },
      drops: { total: this.#drops.total, byReason: this.#drops.byReason(), byRule: this.#drops.byRule() },
      rates: this.#rates(now),
      limits: {
        maxBytes: this.#maxBytes,
        effectiveMaxBytes: Math.min(
          this.#maxBytes,
          this.#pressureCap ?? Infinity,
          this.#reasons.has('disk-low') ? this.#totalBytes : Infinity,
        ),
        minFreeBytes: this.#minFreeBytes,
        freeBytes: this.#disk?.freeBytes ?? null,
      },
      quarantine: this.#quarantine,
      lastRun: this.#lastRun,
    }
  }

  health(): BufferHealth {
    return {
      state: this.#reasons.size === 0 ? 'ok' : 'degraded',
      reasons: [...this.#reasons].sort(),
      since: this.#degradedSince,
      lastError: this.#lastError,
    }
  }

  #setReason(reason: DegradedReason, on: boolean): void {
    if (on === this.#reasons.has(reason)) return
    const wasOk = this.#reasons.size === 0
    if (on) this.#reasons.add(reason)
    else this.#reasons.delete(reason)
    if (wasOk && on) this.#degradedSince = this.#now()
    if (this.#reasons.size === 0) this.#degradedSince = null
    const h = this.health()
    if (on) this.#log.warn({ reason, reasons: h.reasons, freeBytes: this.#disk?.freeBytes ?? null }, 'buffer degraded')
    else this.#log.info({ cleared: reason, reasons: h.reasons }, h.state === 'ok' ? 'buffer healthy again' : 'buffer degraded reason cleared')
    this.#emitSafe('health', h)
  }

  /** A listener that throws must not fail a commit or a timer tick: log it and carry on. */
  #emitSafe<K extends keyof MessageStoreEvents & string>(event: K, ...args: MessageStoreEvents[K]): void {
    try {
      ;(this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args)
    } catch (err) {
      this.#log.error({ err, event }, 'buffer event listener threw')
    }
  }

  /** One counter sample per second (by the injected clock), kept for ~10 s: rates = counters now − oldest sample. */
  #sampleRates(now: number): void {
    const last = this.#rateSamples[this.#rateSamples.length - 1]
    if (last !== undefined && now - last.at < 1000) return
    this.#rateSamples.push({ at: now, appended: this.#counters.appended, taken: this.#counters.taken, acked: this.#counters.acked })
    while (this.#rateSamples.length > 2 && now - (this.#rateSamples[0]?.at ?? now) > 10_000) this.#rateSamples.shift()
  }

  #rates(now: number): BufferStats['rates'] {
    const first = this.#rateSamples[0]
    const c = this.#counters
    if (first === undefined || now - first.at <= 0) return { appendPerSec: 0, takePerSec: 0, ackPerSec: 0 }
    const dt = (now - first.at) / 1000
    return {
      appendPerSec: (c.appended - first.appended) / dt,
      takePerSec: (c.taken - first.taken) / dt,
      ackPerSec: (c.acked - first.acked) / dt,
    }
  }

  // -------------------------------------------------------------------------
  // Housekeeping

  #tick(): void {
    if (this.#state !== 'running') return
    try {
      const now = this.#now()
      const o = this.#o
      this.#sampleRates(now)
      const diskLow = this.#disk?.isLow() ?? false
      this.#setReason('disk-low', diskLow)
      if (diskLow) this.#checkpointForSpace()
      if (now - this.#lastSweepAt >= (o.sweepIntervalMs ?? 5000)) this.#sweep(now)
      this.#drops.tick()
      this.#continuity?.save(this.#totalRows)
      if (this.#pressureCap !== null && now - this.#pressureSince >= (o.diskFullRetryMs ?? 5000)) this.#probeDisk(now)
      this.#checkForeignWrites()
      if (now - this.#lastWalCheckAt >= 30_000) this.#checkWal(now)
      if (now - this.#lastVacuumAt >= 60_000 && (this.#gc?.pending ?? 0) === 0) this.#vacuum(now)
    } catch (err) {
      const e = toBufferError(err, 'buffer maintenance')
      this.#lastError = { code: e.code, message: e.message, at: this.#now() }
      if (e.code === 'EDGE_ERR_BUFFER_CORRUPT') this.#setReason('corrupt', true)
      else if (e.code === 'EDGE_ERR_BUFFER_BUSY') this.#setReason('busy', true)
      else this.#setReason('io-error', true)
      this.#logError(e, 'buffer maintenance failed', {})
    }
  }

  /** TTL sweep: at most 1000 rows per tick, via the expiry index; deleted by the next batch. */
  #sweep(now: number): void {
    const s = this.#s
    if (s === null) return
    const found = s.expired.all(now, 1000) as number[]
    const ids = found.filter((id) => !this.#inFlight.has(id) && !this.#doomed.has(id))
    this.#enqueueDelete(ids, 'expired')
    // More than one page expired: sweep again at the next tick.
    this.#lastSweepAt = found.length === 1000 ? now - (this.#o.sweepIntervalMs ?? 5000) : now
  }

  /**
   * After SQLITE_FULL: can the file grow again? Commit a 64 KiB filler row
   * (page allocation hits max_page_count, WAL growth hits ENOSPC), then
   * delete it. Success restores the full cap and clears 'disk-full'.
   */
  #probeDisk(now: number): void {
    const s = this.#s
    const db = this.#lease?.db
    if (s === null || db === undefined) return
    this.#pressureSince = now
    try {
      db.transaction(() => s.probeInsert.run(PROBE_BYTES)).immediate()
    } catch (err) {
      const e = toBufferError(err, 'disk probe')
      if (e.code !== 'EDGE_ERR_BUFFER_FULL') throw e
      return // still full: keep the reduced cap, try again later
    }
    db.transaction(() => s.probeDelete.run()).immediate()
    this.#pressureCap = null
    this.#log.info({ bytes: this.#totalBytes }, 'buffer disk space available again')
    this.#setReason('disk-full', false)
  }

  /**
   * Below the floor or after ENOSPC, "no net growth" of rows is not enough:
   * every commit appends WAL frames, and the WAL is only rewound after a
   * checkpoint (wal_autocheckpoint = 1000 pages ≈ 4 MiB). Checkpoint and
   * truncate now so the WAL gives its space back and cannot creep into the
   * floor. Best effort: a failure here changes nothing that was committed.
   */
  #checkpointForSpace(): void {
    try {
      this.#lease?.db.pragma('wal_checkpoint(TRUNCATE)')
    } catch (err) {
      this.#log.debug({ err }, 'buffer checkpoint for space failed')
    }
  }

  /** Another connection (the CLI) committed: our counters may be stale. */
  #checkForeignWrites(): void {
    const db = this.#lease?.db
    if (db === undefined) return
    const v = db.pragma('data_version', { simple: true }) as number
    if (v === this.#dataVersion) return
    this.#dataVersion = v
    this.#log.info({}, 'buffer changed by another connection, recounting')
    this.#load()
  }

  /** Checkpoint starvation guard (better-sqlite3 docs/performance.md): RESTART when the WAL grew past its limit. */
  #checkWal(now: number): void {
    this.#lastWalCheckAt = now
    const lease = this.#lease
    if (lease === null) return
    let size = 0
    try {
      size = statSync(`${lease.path}-wal`).size
    } catch {
      return
    }
    if (size <= 64 * MiB) return
    const r = (lease.db.pragma('wal_checkpoint(RESTART)') as Array<{ busy: number; log: number; checkpointed: number }>)[0]
    this.#log.info({ walBytes: size, busy: r?.busy ?? null, checkpointed: r?.checkpointed ?? null }, 'buffer wal checkpoint forced')
  }

  /** Give free pages back to the file system after a backlog drained (auto_vacuum=INCREMENTAL). */
  #vacuum(now: number): void {
    this.#lastVacuumAt = now
    const db = this.#lease?.db
    if (db === undefined) return
    const free = db.pragma('freelist_count', { simple: true }) as number
    if (free < 4096) return
    db.pragma('incremental_vacuum(2048)')
    this.#log.info({ freedPages: Math.min(free, 2048) }, 'buffer file shrunk')
  }

  /** (Re)build counters from the file: one scan at start, or after another connection wrote. */
  #load(): void {
    const s = this.#s
    const db = this.#lease?.db
    if (s === null || db === undefined) return
    const maxId = (s.maxId.get() as number | null) ?? 0
    const meta = (s.getMeta.get('next_id') as number | undefined) ?? 1
    this.#nextId = Math.max(this.#nextId, meta, maxId + 1)
    this.#idReserved = meta
    for (const q of this.#queues.values()) {
      q.depth = 0
      q.bytes = 0
      q.byPriority.clear()
    }
    this.#totalRows = 0
    this.#totalBytes = 0
    for (const r of s.aggregate.all() as Array<{ queue: string; priority: number; n: number; bytes: number }>) {
      const q = this.#queue(r.queue)
      q.depth += r.n
      q.bytes += r.bytes
      q.byPriority.set(r.priority, r.n)
      this.#totalRows += r.n
      this.#totalBytes += r.bytes
    }
    // buffer_topics must count every row (invariant 4 depends on it); it can
    // only disagree after a bug or a hand edit of the file: rebuild it then.
    const ledgerRows = s.topicRowCount.get() as number
    if (ledgerRows !== this.#totalRows) {
      this.#log.warn({ ledgerRows, rows: this.#totalRows }, 'buffer topic ledger disagreed with the rows, rebuilt')
      db.transaction(() => {
        s.topicDeleteAll.run()
        s.topicRebuild.run()
      }).immediate()
    }
    // Forget in-flight ids whose rows another connection deleted.
    for (const id of [...this.#inFlight.keys()]) if (s.selectById.get(id) === undefined) this.#dropInFlight(id)
    this.#resetDrain()
    this.#dataVersion = db.pragma('data_version', { simple: true }) as number
  }

  #resolveLimits(): void {
    const o = this.#o
    const statfs = o.statfs ?? defaultStatFs
    let total: number | null = null
    try {
      total = statfs(o.dataDir).totalBytes
    } catch (err) {
      this.#log.warn({ err, dataDir: o.dataDir }, 'statfs failed, using fixed buffer limits')
    }
    this.#maxBytes = o.maxBytes ?? (total === null ? 256 * MiB : clamp(Math.floor(total * 0.25), 64 * MiB, 1024 * MiB))
    this.#minFreeBytes = o.minFreeBytes ?? (total === null ? 200 * MiB : Math.min(200 * MiB, Math.floor(total * 0.05)))
    if (!(this.#maxBytes > 0)) throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'maxBytes must be > 0')
    this.#disk = new DiskSpace({
      path: o.dataDir,
      minFreeBytes: this.#minFreeBytes,
      resumeFreeBytes: o.resumeFreeBytes ?? 2 * this.#minFreeBytes,
      checkIntervalMs: o.diskCheckIntervalMs ?? 1000,
      now: this.#now,
      statfs,
    })
  }

  #queue(name: string): QueueState {
    return getOrSet(this.#queues, name, newQueueState)
  }

  #running(): Statements {
    if (this.#state !== 'running' || this.#s === null) throw this.#stoppedError()
    return this.#s
  }

  #stoppedError(): BufferError {
    return new BufferError('EDGE_ERR_BUFFER_STOPPED', this.#state === 'new' ? 'buffer is not started' : 'buffer is stopped', {
      retryable: true,
    })
  }

  /** A failed read or CLI write: typed error + health, never a crash. */
  #readFailure(raw: unknown, what: string): BufferError {
    const err = toBufferError(raw, what)
    this.#lastError = { code: err.code, message: err.message, at: this.#now() }
    if (err.code === 'EDGE_ERR_BUFFER_CORRUPT') this.#setReason('corrupt', true)
    else if (err.code === 'EDGE_ERR_BUFFER_BUSY') this.#setReason('busy', true)
    else if (err.code === 'EDGE_ERR_BUFFER_IO') this.#setReason('io-error', true)
    this.#logError(err, 'buffer operation failed', { op: what })
    return err
  }

  /** At most one line per error code per 10 s, with the number suppressed meanwhile. */
  #logError(err: BufferError, msg: string, fields: Record<string, unknown>): void {
    const now = this.#now()
    const w = this.#errorLogAt.get(err.code)
    if (w !== undefined && now - w.at < 10_000) {
      w.suppressed++
      return
    }
    this.#errorLogAt.set(err.code, { at: now, suppressed: 0 })
    this.#log.error({ err, code: err.code, sqliteCode: err.sqliteCode, suppressed: w?.suppressed ?? 0, ...fields }, msg)
  }
}

/** Walks buffer_messages_evict for one priority, oldest first, skipping rows that may not be evicted. */
class EvictCursor {
  #buf: Array<{ id: number; size: number }> = []
  #pos = 0
  #after = 0
  #done = false

  constructor(
    private readonly stmt: Database.Statement,
    private readonly priority: number,
    private readonly inFlight: ReadonlyMap<number, unknown>,
    private readonly doomed: ReadonlySet<number>,
  ) {}

  peek(): { id: number; size: number } | undefined {
    // Bounded: each refill advances #after past every row it read.
    while (this.#pos >= this.#buf.length && !this.#done) this.#refill()
    return this.#buf[this.#pos]
  }

  take(): { id: number; size: number } | undefined {
    const v = this.peek()
    if (v !== undefined) this.#pos++
    return v
  }

  #refill(): void {
    const rows = this.stmt.all(this.priority, this.#after, 64) as Array<{ id: number; size: number }>
    const last = rows[rows.length - 1]
    if (last === undefined || rows.length < 64) this.#done = true
    if (last !== undefined) this.#after = last.id
    this.#buf = rows.filter((r) => !this.inFlight.has(r.id) && !this.doomed.has(r.id))
    this.#pos = 0
  }
}

function checkIds(ids: readonly number[]): number[] | BufferError {
  if (!Array.isArray(ids)) return new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be an array')
  for (const id of ids) if (!Number.isSafeInteger(id) || id < 1) return new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be positive integers')
  return [...new Set(ids)]
}

function decrement<K>(m: Map<K, number>, k: K): void {
  const n = (m.get(k) ?? 0) - 1
  if (n <= 0) m.delete(k)
  else m.set(k, n)
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n))
}
