// One group-commit batch of the SqliteStore (see sqlite-store.ts, write
// path): appends, acks and drop-deletes in ONE `BEGIN IMMEDIATE … COMMIT`.
// Admission against the cap (evicting per policy), conflation and priority
// inheritance happen inside the transaction and only record effects; memory
// follows from the effects after COMMIT returns, and the append promises
// resolve after that (durability 'full': after the WAL fsync), so a rollback
// leaves memory and file in agreement.
import { performance } from 'node:perf_hooks'
import type Database from 'better-sqlite3'
import { BufferError, type BufferErrorCode, type SqliteDatabase, toBufferError } from '../storage/index.js'
import { type DeletedRow, type Statements, WHEN_FULL_CODE } from './message-schema.js'
import { isReported, LOSS_REPORT_RULE, type ReportGroup, reportKey, reportPayload } from './loss-report.js'
import {
  type AppendResult,
  type DropReason,
  estimateMessageBytes,
  MAX_PRIORITY,
  type NormalizedMessage,
  type StoredMessage,
  toStoredMessage,
} from './message-store.js'
import type { AppendOp, Effect, LostOp, Op, StoreState } from './store-state.js'
import type { TopicLedger } from './topic-ledger.js'

const MiB = 1024 * 1024

/**
 * Ids are reserved in blocks: buffer_meta.next_id is written once per
 * ID_BLOCK ids, not in every commit, which saves a page of WAL per commit
 * (a commit of one message writes about four). After a restart the ids
 * go on above the reserved block: never reused, with a gap.
 */
const ID_BLOCK = 4096

/** Below this many acks of one (queue, priority) in an op, the count query costs what it saves. */
const MIN_RANGE_ACK = 4

type Outcome =
  { readonly ok: true; readonly value: AppendResult | undefined } | { readonly ok: false; readonly err: BufferError }

/** Run one batch. Synchronous; settles every op. */
export function executeBatch(st: StoreState, batch: Op[]): void {
  const lease = st.lease
  const s = st.s
  const ledger = st.ledger
  if (lease === null || s === null || ledger === null || !lease.db.open) {
    const err = st.stoppedError()
    for (const op of batch) op.fail(err)
    return
  }
  new CommitBatch(st, lease, s, ledger, batch).run()
}

class CommitBatch {
  readonly #started = performance.now()
  readonly #now: number
  readonly #cap: number
  readonly #constrained: boolean
  readonly #diskLow: boolean
  readonly #effects: Effect[] = []
  readonly #outcomes: Outcome[]
  readonly #txPriorities = new Set<number>()
  #bytes: number
  #inserted = 0
  #acks = 0
  #deletes = 0
  #nextId: number
  #reserved = 0
  /** Loss reports to write at the end of the transaction, by reportKey. */
  readonly #reports = new Map<string, ReportGroup>()
  /** Reports written this batch: recorded as pending, and their drain cursor rewound, after the commit. */
  readonly #written: Array<{ key: string; id: number; group: ReportGroup; reused: boolean; priority: number }> = []

  constructor(
    private readonly st: StoreState,
    private readonly lease: SqliteDatabase,
    private readonly s: Statements,
    private readonly ledger: TopicLedger,
    private readonly batch: Op[],
  ) {
    this.#now = st.now()
    this.#diskLow = st.disk?.isLow() ?? false
    st.setReason('disk-low', this.#diskLow)
    let cap = st.maxBytes
    if (st.pressureCap !== null) cap = Math.min(cap, st.pressureCap)
    if (this.#diskLow) cap = Math.min(cap, st.totalBytes)
    this.#cap = cap
    this.#constrained = this.#diskLow || st.pressureCap !== null
    this.#outcomes = new Array<Outcome>(batch.length)
    this.#bytes = st.totalBytes
    this.#nextId = st.nextId
  }

  run(): void {
    const st = this.st
    try {
      this.lease.db.transaction(() => this.#transaction()).immediate()
    } catch (err) {
      this.ledger.discard()
      st.dropLedger?.discard()
      st.nextId = Math.max(st.nextId, this.#nextId) // ids are never reused, even uncommitted ones
      onCommitFailure(st, this.batch, err)
      return
    }
    st.nextId = this.#nextId
    st.idReserved = Math.max(st.idReserved, this.#reserved)
    this.#afterCommit()
  }

  #transaction(): void {
    const batch = this.batch
    for (let i = 0; i < batch.length; i++) {
      const op = batch[i] as Op
      if (op.kind === 'append') {
        this.#appendOne(i, op.msg)
      } else if (op.kind === 'ack') {
        this.#acks += this.#ackIds(op.ids)
        this.#outcomes[i] = { ok: true, value: undefined }
      } else if (op.kind === 'lost') {
        this.#lost(op)
        this.#outcomes[i] = { ok: true, value: undefined }
      } else {
        for (const id of op.ids) if (this.#deleteRow(id, op.reason)) this.#deletes++
        this.#outcomes[i] = { ok: true, value: undefined }
      }
    }
    this.#writeReports()
    this.st.dropLedger?.flush()
    this.ledger.flush()
    if (this.#nextId > this.st.idReserved) {
      // 'normal'/'off': exact, so that continuity.ts can tell which acknowledged ids a cut rolled back.
      this.#reserved = this.#nextId + (this.lease.durability === 'full' ? ID_BLOCK : 0)
      this.s.setMeta.run('next_id', this.#reserved)
    }
  }

  /** Committed: now memory may follow the file, then the ops settle. */
  #afterCommit(): void {
    const st = this.st
    const appendedQueues = new Set<string>()
    for (const e of this.#effects) st.applyEffect(e, appendedQueues)
    for (const op of this.batch) {
      if (op.kind === 'ack') {
        for (const id of op.ids) {
          st.acking.delete(id)
          st.dropInFlight(id)
        }
      } else if (op.kind === 'delete') {
        for (const id of op.ids) st.doomed.delete(id)
      }
    }
    for (const w of this.#written) {
      st.pendingReports.set(w.key, { id: w.id, group: w.group })
      // A reused id may lie below the drain position of its priority: read it from there again.
      if (w.reused) st.rewind(w.group.queue, w.priority, w.id)
    }
    if (this.#diskLow) st.checkpointForSpace()
    st.counters.commits++
    st.counters.appended += this.#inserted
    st.counters.acked += this.#acks
    st.setReason('io-error', false)
    st.setReason('busy', false)
    const wait = this.lease.durability === 'full' && this.#inserted > 0
    const durable: Array<{ op: AppendOp; value: AppendResult }> = []
    for (let i = 0; i < this.batch.length; i++) {
      const op = this.batch[i] as Op
      const out = this.#outcomes[i]
      if (out === undefined) continue
      if (!out.ok) op.fail(out.err)
      else if (op.kind !== 'append') op.resolve()
      else if (wait) durable.push({ op, value: out.value as AppendResult })
      else op.resolve(out.value as AppendResult)
    }
    if (durable.length > 0) resolveWhenSynced(st, this.lease, durable)
    const durationMs = performance.now() - this.#started
    st.emitSafe('commit', { appends: this.#inserted, acks: this.#acks, deletes: this.#deletes, durationMs })
    if (appendedQueues.size > 0) st.emitSafe('appended', [...appendedQueues])
  }

  #deleteRow(id: number, reason: DropReason | 'acked'): boolean {
    const row = this.s.deleteById.get(id) as DeletedRow | undefined
    if (row === undefined) return false
    this.ledger.remove(row.queue, row.topic)
    this.#bytes -= row.size
    this.#effects.push({ t: 'delete', row, reason })
    if (reason !== 'acked') {
      const at = row.created_at ?? this.#now
      this.st.dropLedger?.add({ reason, rule: row.rule, queue: row.queue, topic: row.topic, at, id: row.id })
      this.#noteReport(reason, row.rule, row.queue, at, row.id, row.priority)
    }
    return true
  }

  /**
   * Acks, as range deletes where they can be: the in-flight rows of one
   * (queue, priority) were taken in id order, so when the rows between the
   * lowest and the highest acked id are exactly the acked ones (counted on
   * the drain index first), one DELETE removes them all. Anything else (an
   * unacked row in between, a row no longer in flight) goes row by row.
   * Same transaction either way: nothing changes in what a crash can leave.
   */
  #ackIds(ids: readonly number[]): number {
    let acked = 0
    const runs = new Map<string, StoredMessage[]>()
    for (const id of ids) {
      const f = this.st.inFlight.get(id)
      if (f === undefined) {
        if (this.#deleteRow(id, 'acked')) acked++
        continue
      }
      const key = `${f.priority}\u0000${f.queue}`
      const run = runs.get(key)
      if (run === undefined) runs.set(key, [f])
      else run.push(f)
    }
    for (const run of runs.values()) {
      if (run.length >= MIN_RANGE_ACK && this.#ackRange(run)) {
        acked += run.length
        continue
      }
      for (const f of run) if (this.#ackRow(f.id)) acked++
    }
    return acked
  }

  /** One range delete for in-flight rows of one (queue, priority), if nothing else lies between them. */
  #ackRange(run: StoredMessage[]): boolean {
    run.sort((a, b) => a.id - b.id)
    const first = run[0] as StoredMessage
    const lo = first.id
    const hi = (run[run.length - 1] as StoredMessage).id
    if (this.s.countAckRange.get(first.queue, first.priority, lo, hi) !== run.length) return false
    this.s.deleteAckRange.run(first.queue, first.priority, lo, hi)
    for (const f of run) {
      this.ledger.remove(f.queue, f.topic)
      this.#bytes -= f.size
      this.#effects.push({ t: 'delete', row: f, reason: 'acked' })
    }
    return true
  }

  /** An ack: for an in-flight row (the usual case) memory has the row's columns already. */
  #ackRow(id: number): boolean {
    const f = this.st.inFlight.get(id)
    if (f === undefined) return this.#deleteRow(id, 'acked')
    if (this.s.deleteAcked.run(id).changes === 0) return false
    this.ledger.remove(f.queue, f.topic)
    this.#bytes -= f.size
    this.#effects.push({ t: 'delete', row: f, reason: 'acked' })
    return true
  }

  /** A message that is not stored (refused, or expired on arrival): counted, with no row id. */
  #dropUnstored(reason: DropReason, m: NormalizedMessage): void {
    this.#effects.push({ t: 'drop-only', reason, rule: m.rule, queue: m.queue })
    this.st.dropLedger?.add({ reason, rule: m.rule, queue: m.queue, topic: m.topic, at: this.#now, id: null })
    this.#noteReport(reason, m.rule, m.queue, this.#now, null, m.priority)
  }

  /** Messages a power cut took (LostOp): one durable drop of `count`, and a loss report on every reporting queue. */
  #lost(op: LostOp): void {
    const rule = ''
    const topic = ''
    this.#effects.push({ t: 'drop-only', reason: 'power-loss', rule, queue: op.queue, count: op.count })
    const dl = this.st.dropLedger
    dl?.add({ reason: 'power-loss', rule, queue: op.queue, topic, at: op.at, id: op.ids?.from ?? null }, op.count)
    if (op.ids !== null) dl?.add({ reason: 'power-loss', rule, queue: op.queue, topic, at: op.at, id: op.ids.to }, 0)
    // Fresh ids (placeId null) at the highest priority: the lost messages were the newest, gone before anything
    // queued now.
    for (const queue of this.st.lossReports.keys()) {
      if (op.ids === null) {
        this.#noteReport('power-loss', rule, queue, op.at, null, MAX_PRIORITY, op.count)
      } else {
        this.#noteReport('power-loss', rule, queue, op.at, op.ids.from, MAX_PRIORITY, op.count)
        this.#noteReport('power-loss', rule, queue, op.at, op.ids.to, MAX_PRIORITY, 0)
      }
      const g = this.#reports.get(reportKey(queue, 'power-loss', rule))
      if (g !== undefined) g.placeId = null
    }
  }

  #noteReport(
    reason: DropReason,
    rule: string,
    queue: string,
    at: number,
    id: number | null,
    priority: number,
    count = 1,
  ): void {
    if (rule === LOSS_REPORT_RULE || !isReported(reason) || !this.st.lossReports.has(queue)) return
    const key = reportKey(queue, reason, rule)
    let g = this.#reports.get(key)
    if (g === undefined) {
      g = {
        queue,
        reason,
        rule,
        count: 0,
        firstAt: at,
        lastAt: at,
        firstId: id,
        lastId: id,
        placeId: id,
        placePriority: priority,
      }
      this.#reports.set(key, g)
    }
    g.count += count
    g.firstAt = Math.min(g.firstAt, at)
    g.lastAt = Math.max(g.lastAt, at)
    if (id !== null) {
      g.firstId = g.firstId === null ? id : Math.min(g.firstId, id)
      g.lastId = g.lastId === null ? id : Math.max(g.lastId, id)
      // The gap ends at the newest dropped row: the report takes its place.
      if (g.placeId === null || id > g.placeId) {
        g.placeId = id
        g.placePriority = priority
      }
    }
  }

  /**
   * One report row per key with drops in this batch, in the transaction; an earlier still-queued report of the key is
   * folded in.
   */
  #writeReports(): void {
    const st = this.st
    for (const [key, g] of this.#reports) {
      const target = st.lossReports.get(g.queue)
      if (target === undefined) continue
      const prev = st.pendingReports.get(key)
      if (prev !== undefined && !st.inFlight.has(prev.id) && !st.acking.has(prev.id) && !st.doomed.has(prev.id)) {
        const row = this.s.deleteById.get(prev.id) as DeletedRow | undefined
        if (row !== undefined && row.rule === LOSS_REPORT_RULE) {
          this.ledger.remove(row.queue, row.topic)
          this.#bytes -= row.size
          this.#effects.push({ t: 'delete', row, reason: 'merged' })
          const p = prev.group
          g.count += p.count
          g.firstAt = Math.min(g.firstAt, p.firstAt)
          g.lastAt = Math.max(g.lastAt, p.lastAt)
          g.firstId = p.firstId === null ? g.firstId : g.firstId === null ? p.firstId : Math.min(g.firstId, p.firstId)
          g.lastId = p.lastId === null ? g.lastId : g.lastId === null ? p.lastId : Math.max(g.lastId, p.lastId)
        }
      }
      const payload = reportPayload(g, target, this.#now)
      const reused = g.placeId !== null
      const id = g.placeId ?? this.#nextId++
      const priority = this.ledger.add(g.queue, target.topic, g.placePriority)
      const size = estimateMessageBytes({
        queue: g.queue,
        topic: target.topic,
        payload,
        rule: LOSS_REPORT_RULE,
        propertiesJson: null,
      })
      this.s.insert.run(
        id,
        g.queue,
        target.topic,
        1,
        0,
        priority,
        LOSS_REPORT_RULE,
        0,
        WHEN_FULL_CODE.refuse,
        this.#now,
        null,
        size,
        payload,
        null,
      )
      this.#bytes += size
      const msg: StoredMessage = {
        id,
        queue: g.queue,
        topic: target.topic,
        payload,
        qos: 1,
        retain: false,
        priority,
        rule: LOSS_REPORT_RULE,
        conflation: 'none',
        whenFull: 'refuse',
        createdAt: this.#now,
        expiresAt: null,
        properties: undefined,
        size,
      }
      this.#effects.push({ t: 'insert', msg })
      this.#written.push({ key, id, group: { ...g }, reused, priority })
    }
  }

  #refuse(i: number, m: NormalizedMessage, fullReason: 'buffer-full' | 'disk-full' | 'too-large'): void {
    const dropReason: DropReason = fullReason === 'disk-full' ? 'disk-full' : 'refused'
    this.#dropUnstored(dropReason, m)
    this.#outcomes[i] = {
      ok: false,
      err: new BufferError(
        'EDGE_ERR_BUFFER_FULL',
        fullReason === 'too-large' ? 'message is larger than the buffer cap' : 'buffer full: message refused',
        { retryable: fullReason !== 'too-large', fullReason },
      ),
    }
  }

  #appendOne(i: number, m: NormalizedMessage): void {
    const st = this.st
    const s = this.s
    const now = this.#now
    if (m.expiresAt !== null && m.expiresAt <= now) {
      this.#dropUnstored('expired', m)
      this.#outcomes[i] = { ok: true, value: { id: null, dropped: 'expired' } }
      return
    }
    if (m.size > st.maxBytes) {
      this.#refuse(i, m, 'too-large')
      return
    }
    const over = this.#bytes + m.size - this.#cap
    if (over > 0) {
      const fullReason = this.#constrained ? 'disk-full' : 'buffer-full'
      if (m.whenFull === 'refuse') {
        this.#refuse(i, m, fullReason)
        return
      }
      const victims = selectVictims(st, s, m, over, this.#txPriorities)
      if (victims === null) {
        this.#refuse(i, m, fullReason)
        return
      }
      const reason: DropReason = this.#constrained ? 'disk-full' : 'evicted-full'
      for (const v of victims) this.#deleteRow(v, reason)
    }
    // Conflation (invariant 5): older rows of the topic not in flight go.
    if (m.conflation === 'latest-only') {
      for (const id of s.topicIds.all(m.queue, m.topic) as number[]) {
        if (!st.inFlight.has(id)) this.#deleteRow(id, 'conflated')
      }
    }
    // Invariant 4: stored no higher than the topic's older queued rows.
    const priority = this.ledger.add(m.queue, m.topic, m.priority)
    const id = this.#nextId++
    // Positional: binding by name costs more per row (docs/benchmarks.md).
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
    this.#bytes += m.size
    this.#inserted++
    this.#txPriorities.add(priority)
    this.#effects.push({ t: 'insert', msg: toStoredMessage(m, id, priority, now) })
    this.#outcomes[i] = { ok: true, value: { id, dropped: null } }
  }
}

/**
 * Durability 'full': the appends of a commit are acknowledged once its WAL
 * frames are fsync'd (wal-sync.ts), not before. Meanwhile the rows are
 * visible and may already be sent upstream: if power fails first, the
 * device (never acknowledged) sends again, a duplicate, never a loss.
 */
function resolveWhenSynced(
  st: StoreState,
  lease: SqliteDatabase,
  appends: ReadonlyArray<{ op: AppendOp; value: AppendResult }>,
): void {
  const p = lease.syncWal().then(
    () => {
      for (const a of appends) a.op.resolve(a.value)
    },
    (raw: unknown) => {
      const err = toBufferError(raw, 'sync the buffer to disk')
      st.counters.failedCommits++
      st.lastError = { code: err.code, message: err.message, at: st.now() }
      st.setReason('io-error', true)
      st.logError(err, 'buffer fsync failed: appends not acknowledged (devices will resend)', { ops: appends.length })
      for (const a of appends) a.op.fail(err)
    },
  )
  st.syncing.add(p)
  void p.finally(() => st.syncing.delete(p))
}

/**
 * Rows to evict so that `over` bytes are freed for `m`, per m.whenFull, or
 * null if not enough evictable rows exist (then nothing is evicted).
 * Candidates: rows whose own policy is not 'refuse', not in flight, not
 * already doomed. Reads buffer_messages_evict per priority, oldest first.
 */
function selectVictims(
  st: StoreState,
  s: Statements,
  m: NormalizedMessage,
  over: number,
  txPriorities: ReadonlySet<number>,
): number[] | null {
  const priorities = new Set<number>(txPriorities)
  for (const q of st.queues.values()) for (const [p, n] of q.byPriority) if (n > 0) priorities.add(p)
  let ordered = [...priorities].sort((a, b) => a - b)
  if (m.whenFull === 'drop-lowest-priority') ordered = ordered.filter((p) => p <= m.priority)
  const cursors = ordered.map((p) => new EvictCursor(s.evictCandidates, p, st.inFlight, st.doomed))
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

function onCommitFailure(st: StoreState, batch: Op[], raw: unknown): void {
  const err = toBufferError(raw, 'commit batch')
  st.counters.failedCommits++
  st.lastError = { code: err.code, message: err.message, at: st.now() }
  let code: BufferErrorCode = err.code
  if (code === 'EDGE_ERR_BUFFER_IO') {
    // ENOSPC sometimes surfaces as SQLITE_IOERR_WRITE rather than SQLITE_FULL.
    st.disk?.refresh()
    const free = st.disk?.freeBytes
    if (free !== null && free !== undefined && free < MiB) code = 'EDGE_ERR_BUFFER_FULL'
  }
  const appends = batch.filter((op): op is AppendOp => op.kind === 'append')
  if (code === 'EDGE_ERR_BUFFER_FULL') {
    st.checkpointForSpace()
    st.pressureCap = Math.floor(st.totalBytes * 0.98)
    st.pressureSince = st.now()
    st.setReason('disk-full', true)
    for (const op of appends) st.drops.record('disk-full', op.msg.rule, op.msg.queue)
  } else if (code === 'EDGE_ERR_BUFFER_CORRUPT') {
    st.setReason('corrupt', true)
  } else if (code === 'EDGE_ERR_BUFFER_BUSY') {
    st.setReason('busy', true)
  } else {
    st.setReason('io-error', true)
  }
  st.logError(err, 'buffer commit failed', { ops: batch.length, appends: appends.length })
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
