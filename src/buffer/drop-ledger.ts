// Durable drop accounting: every row that leaves the buffer without an
// upstream ack is counted in SQLite in the SAME transaction that deletes it
// (or, for a message never stored, that refuses it), so the counts survive
// kill -9 and power loss exactly as the rows do (durability 'full'): after a
// restart, acknowledged = delivered + counted drops, per queue, rule and
// reason.
//
// Two tables:
// - buffer_drop_counts: one row per (queue, rule, reason), the running total
//   since the store was created. Never trimmed.
// - buffer_drop_ledger: ranges an operator can query (`edge-agent buffer
//   drops`). One row per run of drops of the same (reason, rule, queue,
//   topic): a drop extends the newest row of its key when that row's last
//   drop is at most COALESCE_MS older (by message time), otherwise it opens
//   a new row. Past maxLedgerRows the oldest rows are deleted; how many rows
//   and drops were trimmed, and how many drops were coalesced into existing
//   rows, is kept in buffer_meta, so nothing is silently forgotten (the
//   counts table still has every drop).
//
// The in-process counters and the rate-limited log line stay in
// drop-accounting.ts; this file is only what must survive the process.
import type Database from 'better-sqlite3'
import type { Migration } from '../storage/index.js'
import type { DropReason } from './message-store.js'

export const DROP_LEDGER_MIGRATIONS: readonly Migration[] = [
  {
    id: 'buffer/003-drop-ledger',
    up: (db) => {
      db.exec(`
        CREATE TABLE buffer_drop_counts (
          queue  TEXT    NOT NULL,
          rule   TEXT    NOT NULL,
          reason TEXT    NOT NULL,
          count  INTEGER NOT NULL,
          PRIMARY KEY (queue, rule, reason)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE buffer_drop_ledger (
          id          INTEGER PRIMARY KEY,
          reason      TEXT    NOT NULL,
          rule        TEXT    NOT NULL,
          queue       TEXT    NOT NULL,
          topic       TEXT    NOT NULL,
          first_at    INTEGER NOT NULL,
          last_at     INTEGER NOT NULL,
          count       INTEGER NOT NULL,
          first_id    INTEGER,
          last_id     INTEGER
        ) STRICT;
        CREATE INDEX buffer_drop_ledger_key ON buffer_drop_ledger (reason, rule, queue, topic, id);
        CREATE INDEX buffer_drop_ledger_time ON buffer_drop_ledger (last_at);
      `)
      db.prepare("INSERT OR IGNORE INTO buffer_meta (key, value) VALUES ('drops_since', ?)").run(Date.now())
    },
  },
]

/** Drops closer than this (message time) to the newest range of their key extend it. */
export const COALESCE_MS = 60_000
export const DEFAULT_MAX_LEDGER_ROWS = 10_000

export interface DropEvent {
  readonly reason: DropReason
  readonly rule: string
  readonly queue: string
  readonly topic: string
  /** The message's time: created_at of a stored row, arrival of a refused one (epoch ms). */
  readonly at: number
  /** Row id, null for a message that was never stored. */
  readonly id: number | null
}

export interface LedgerRange {
  readonly reason: DropReason
  readonly rule: string
  readonly queue: string
  readonly topic: string
  readonly firstAt: number
  readonly lastAt: number
  readonly count: number
  readonly firstId: number | null
  readonly lastId: number | null
}

export interface DurableDropTotals {
  /** Epoch ms the counting began (the store's creation, or the upgrade that added it). */
  readonly since: number
  readonly total: number
  readonly byReason: Readonly<Partial<Record<DropReason, number>>>
  readonly byRule: Readonly<Record<string, Readonly<Partial<Record<DropReason, number>>>>>
  readonly byQueue: Readonly<Record<string, Readonly<Partial<Record<DropReason, number>>>>>
  readonly ledger: {
    readonly rows: number
    readonly coalesced: number
    readonly trimmedRows: number
    readonly trimmedDrops: number
  }
}

export interface LedgerQuery {
  readonly since?: number
  readonly rule?: string
  readonly limit?: number
}

const SQL = {
  countAdd: `INSERT INTO buffer_drop_counts (queue, rule, reason, count) VALUES (?, ?, ?, ?)
    ON CONFLICT (queue, rule, reason) DO UPDATE SET count = count + excluded.count`,
  counts: 'SELECT queue, rule, reason, count FROM buffer_drop_counts',
  newestOfKey: `SELECT id, last_at, first_id, last_id FROM buffer_drop_ledger
    WHERE reason = ? AND rule = ? AND queue = ? AND topic = ? ORDER BY id DESC LIMIT 1`,
  extend: `UPDATE buffer_drop_ledger SET count = count + ?, first_at = min(first_at, ?), last_at = max(last_at, ?),
    first_id = coalesce(min(first_id, ?), first_id, ?), last_id = coalesce(max(last_id, ?), last_id, ?) WHERE id = ?`,
  open: `INSERT INTO buffer_drop_ledger (reason, rule, queue, topic, first_at, last_at, count, first_id, last_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ledgerRows: 'SELECT count(*) FROM buffer_drop_ledger',
  oldestRows: 'SELECT id, count FROM buffer_drop_ledger ORDER BY id LIMIT ?',
  deleteRow: 'DELETE FROM buffer_drop_ledger WHERE id = ?',
  metaGet: 'SELECT value FROM buffer_meta WHERE key = ?',
  metaAdd: `INSERT INTO buffer_meta (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = value + excluded.value`,
} as const

type Statements = { -readonly [K in keyof typeof SQL]: Database.Statement }

interface Pending {
  reason: DropReason
  rule: string
  queue: string
  topic: string
  firstAt: number
  lastAt: number
  count: number
  firstId: number | null
  lastId: number | null
}

/**
 * Collects the drops of one transaction (add) and writes them (flush, still
 * inside the transaction). discard() after a rollback. Reads (totals, ranges)
 * work on any connection, the CLI's read-only one included.
 */
export class DropLedger {
  readonly #s: Statements
  readonly #pending = new Map<string, Pending>()
  readonly #maxRows: number
  /** Rows in the ledger as of the last flush (null: not counted yet). */
  #rows: number | null = null
  /**
   * key → the newest range of the key, as written by this connection: saves
   * the lookup per key and commit while a buffer evicts. Cleared on rollback
   * (discard) and when it grows past a bound; a cached range that was trimmed
   * meanwhile is noticed (the UPDATE changes nothing) and a new one opened.
   */
  readonly #newest = new Map<string, { id: number; lastAt: number }>()

  constructor(db: Database.Database, options: { maxRows?: number } = {}) {
    const s: Partial<Statements> = {}
    for (const k of Object.keys(SQL) as Array<keyof typeof SQL>) s[k] = db.prepare(SQL[k])
    this.#s = s as Statements
    this.#maxRows = options.maxRows ?? DEFAULT_MAX_LEDGER_ROWS
  }

  add(e: DropEvent, count = 1): void {
    const key = `${e.reason}\u0000${e.rule}\u0000${e.queue}\u0000${e.topic}`
    const p = this.#pending.get(key)
    if (p === undefined) {
      this.#pending.set(key, { ...e, firstAt: e.at, lastAt: e.at, count, firstId: e.id, lastId: e.id })
      return
    }
    p.count += count
    p.firstAt = Math.min(p.firstAt, e.at)
    p.lastAt = Math.max(p.lastAt, e.at)
    if (e.id !== null) {
      p.firstId = p.firstId === null ? e.id : Math.min(p.firstId, e.id)
      p.lastId = p.lastId === null ? e.id : Math.max(p.lastId, e.id)
    }
  }

  get pending(): boolean {
    return this.#pending.size > 0
  }

  /** Write what add() collected. Call inside the transaction that dropped the rows; throws roll it back. */
  flush(): void {
    if (this.#pending.size === 0) return
    const s = this.#s
    const counts = new Map<string, { queue: string; rule: string; reason: string; n: number }>()
    let coalesced = 0
    let opened = 0
    if (this.#newest.size > 4 * this.#maxRows) this.#newest.clear()
    for (const [key, p] of this.#pending) {
      const ck = `${p.queue}\u0000${p.rule}\u0000${p.reason}`
      const c = counts.get(ck)
      if (c === undefined) counts.set(ck, { queue: p.queue, rule: p.rule, reason: p.reason, n: p.count })
      else c.n += p.count
      let newest = this.#newest.get(key)
      if (newest === undefined) {
        const r = s.newestOfKey.get(p.reason, p.rule, p.queue, p.topic) as { id: number; last_at: number } | undefined
        if (r !== undefined) newest = { id: r.id, lastAt: r.last_at }
      }
      if (
        newest !== undefined &&
        p.firstAt - newest.lastAt <= COALESCE_MS &&
        s.extend.run(p.count, p.firstAt, p.lastAt, p.firstId, p.firstId, p.lastId, p.lastId, newest.id).changes > 0
      ) {
        this.#newest.set(key, { id: newest.id, lastAt: Math.max(newest.lastAt, p.lastAt) })
        coalesced += p.count
      } else {
        const id = Number(
          s.open.run(p.reason, p.rule, p.queue, p.topic, p.firstAt, p.lastAt, p.count, p.firstId, p.lastId)
            .lastInsertRowid,
        )
        this.#newest.set(key, { id, lastAt: p.lastAt })
        opened++
      }
    }
    this.#pending.clear()
    for (const c of counts.values()) s.countAdd.run(c.queue, c.rule, c.reason, c.n)
    if (coalesced > 0) s.metaAdd.run('drops_coalesced', coalesced)
    if (opened > 0) this.#trim(opened)
  }

  discard(): void {
    this.#pending.clear()
    this.#newest.clear()
    this.#rows = null
  }

  #trim(opened: number): void {
    const s = this.#s
    this.#rows = this.#rows === null ? (s.ledgerRows.pluck().get() as number) : this.#rows + opened
    const over = this.#rows - this.#maxRows
    if (over <= 0) return
    let drops = 0
    for (const r of s.oldestRows.all(over) as Array<{ id: number; count: number }>) {
      s.deleteRow.run(r.id)
      drops += r.count
    }
    s.metaAdd.run('drops_trimmed_rows', over)
    s.metaAdd.run('drops_trimmed_drops', drops)
    this.#rows -= over
  }

  totals(): DurableDropTotals {
    return readTotals(this.#s)
  }

  ranges(q: LedgerQuery = {}): LedgerRange[] {
    return readRanges(this.#s.open.database, q)
  }
}

function readTotals(s: Statements): DurableDropTotals {
  const byReason: Partial<Record<DropReason, number>> = {}
  const byRule: Record<string, Partial<Record<DropReason, number>>> = {}
  const byQueue: Record<string, Partial<Record<DropReason, number>>> = {}
  let total = 0
  for (const r of s.counts.all() as Array<{ queue: string; rule: string; reason: DropReason; count: number }>) {
    total += r.count
    byReason[r.reason] = (byReason[r.reason] ?? 0) + r.count
    const ru = (byRule[r.rule] ??= {})
    ru[r.reason] = (ru[r.reason] ?? 0) + r.count
    const qu = (byQueue[r.queue] ??= {})
    qu[r.reason] = (qu[r.reason] ?? 0) + r.count
  }
  const meta = (k: string): number => (s.metaGet.pluck().get(k) as number | undefined) ?? 0
  return {
    since: meta('drops_since'),
    total,
    byReason,
    byRule,
    byQueue,
    ledger: {
      rows: s.ledgerRows.pluck().get() as number,
      coalesced: meta('drops_coalesced'),
      trimmedRows: meta('drops_trimmed_rows'),
      trimmedDrops: meta('drops_trimmed_drops'),
    },
  }
}

/** Ledger ranges, oldest first, for a connection of any kind (the CLI reads them read-only). */
export function readRanges(db: Database.Database, q: LedgerQuery = {}): LedgerRange[] {
  const where: string[] = []
  const args: Array<string | number> = []
  if (q.since !== undefined) {
    where.push('last_at >= ?')
    args.push(q.since)
  }
  if (q.rule !== undefined) {
    where.push('rule = ?')
    args.push(q.rule)
  }
  const sql = `SELECT reason, rule, queue, topic, first_at AS firstAt, last_at AS lastAt, count,
    first_id AS firstId, last_id AS lastId FROM buffer_drop_ledger
    ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT ?`
  args.push(q.limit ?? 100_000)
  return db.prepare(sql).all(...args) as LedgerRange[]
}

/** Durable totals for a connection of any kind (the CLI). Null when the file predates the ledger. */
export function readDurableTotals(db: Database.Database): DurableDropTotals | null {
  const has = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'buffer_drop_counts'").get()
  if (has === undefined) return null
  const s: Partial<Statements> = {}
  for (const k of ['counts', 'metaGet', 'ledgerRows'] as const) s[k] = db.prepare(SQL[k])
  return readTotals(s as Statements)
}
