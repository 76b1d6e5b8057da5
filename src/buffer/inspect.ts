// Reading the buffer file from outside the agent (the `edge-agent buffer`
// commands), safely while the agent runs: SQLite WAL lets a second process
// read a consistent snapshot. Read-only connections never checkpoint, never
// quarantine and never migrate; only purge() writes, in one transaction with
// synchronous=FULL, and the running agent notices it (PRAGMA data_version)
// and recounts.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { BufferError } from '../storage/index.js'
import {
  type DurableDropTotals,
  type LedgerQuery,
  type LedgerRange,
  readDurableTotals,
  readRanges,
} from './drop-ledger.js'
import { rowToPeeked, type MessageRow } from './message-schema.js'
import type { PeekedMessage } from './message-store.js'

export const BUFFER_FILE_NAME = 'edge-agent.db'

export interface QueueSummary {
  readonly queue: string
  readonly depth: number
  readonly bytes: number
  readonly oldestCreatedAt: number | null
}

export class BufferInspector {
  readonly #db: Database.Database

  private constructor(db: Database.Database) {
    this.#db = db
  }

  /** Opens `<dataDir>/edge-agent.db`; throws EDGE_ERR_BUFFER_INVALID when there is none. */
  static open(dataDir: string, opts: { write?: boolean } = {}): BufferInspector {
    const path = join(dataDir, BUFFER_FILE_NAME)
    if (!existsSync(path)) {
      throw new BufferError(
        'EDGE_ERR_BUFFER_INVALID',
        `no buffer database at ${path} (has the agent run with this dataDir?)`,
      )
    }
    let db: Database.Database
    try {
      db = new Database(path, { readonly: opts.write !== true, fileMustExist: true, timeout: 5_000 })
      if (opts.write) db.pragma('synchronous = FULL')
      db.pragma('cache_size = -1024') // a large export must not grow the CLI by the default page cache
      const hasTable = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'buffer_messages'").get()
      if (hasTable === undefined) throw new BufferError('EDGE_ERR_BUFFER_INVALID', `${path} holds no message buffer`)
    } catch (err) {
      if (err instanceof BufferError) throw err
      throw new BufferError('EDGE_ERR_BUFFER_IO', `cannot open ${path}: ${(err as Error).message}`, { cause: err })
    }
    return new BufferInspector(db)
  }

  queues(): QueueSummary[] {
    const rows = this.#db
      .prepare(
        'SELECT queue, COUNT(*) AS depth, COALESCE(SUM(size), 0) AS bytes, MIN(created_at) AS oldest FROM buffer_messages GROUP BY queue ORDER BY queue',
      )
      .all() as { queue: string; depth: number; bytes: number; oldest: number | null }[]
    return rows.map((r) => ({ queue: r.queue, depth: r.depth, bytes: r.bytes, oldestCreatedAt: r.oldest }))
  }

  count(queue?: string): number {
    const sql =
      queue === undefined
        ? 'SELECT COUNT(*) FROM buffer_messages'
        : 'SELECT COUNT(*) FROM buffer_messages WHERE queue = ?'
    const st = this.#db.prepare(sql).pluck()
    return (queue === undefined ? st.get() : st.get(queue)) as number
  }

  /** The next messages to leave, in drain order (priority, then age). */
  peek(queue: string | undefined, limit: number): PeekedMessage[] {
    return [...this.rows(queue, limit)]
  }

  /** Rows in drain order; `inFlight` is unknown from outside the agent and reported false. */
  *rows(queue?: string, limit = Number.MAX_SAFE_INTEGER): Generator<PeekedMessage> {
    const sql =
      queue === undefined
        ? 'SELECT * FROM buffer_messages ORDER BY queue, priority DESC, id LIMIT ?'
        : 'SELECT * FROM buffer_messages WHERE queue = ? ORDER BY priority DESC, id LIMIT ?'
    const st = this.#db.prepare(sql)
    const it = (queue === undefined ? st.iterate(limit) : st.iterate(queue, limit)) as IterableIterator<MessageRow>
    for (const row of it) yield rowToPeeked(row, false)
  }

  /** Deletes every message of `queue` (or all); returns how many. */
  purge(queue?: string): number {
    const db = this.#db
    const st = db.prepare(
      queue === undefined ? 'DELETE FROM buffer_messages' : 'DELETE FROM buffer_messages WHERE queue = ?',
    )
    // The per-topic ledger (message-schema.ts) goes with the rows it counts.
    const hasLedger =
      db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'buffer_topics'").get() !== undefined
    const ledger = hasLedger
      ? db.prepare(queue === undefined ? 'DELETE FROM buffer_topics' : 'DELETE FROM buffer_topics WHERE queue = ?')
      : undefined
    // Counted as 'purged' drops in the same transaction (drop-ledger.ts), when the file has the tables.
    const hasDrops = this.#hasDropLedger()
    const where = queue === undefined ? '' : 'WHERE queue = ?'
    const args = queue === undefined ? [] : [queue]
    const count = hasDrops
      ? db.prepare(`INSERT INTO buffer_drop_counts (queue, rule, reason, count)
          SELECT queue, rule, 'purged', count(*) FROM buffer_messages ${where} GROUP BY queue, rule
          ON CONFLICT (queue, rule, reason) DO UPDATE SET count = count + excluded.count`)
      : undefined
    const range = hasDrops
      ? db.prepare(`INSERT INTO buffer_drop_ledger (reason, rule, queue, topic, first_at, last_at, count, first_id, last_id)
          SELECT 'purged', rule, queue, topic, min(created_at), max(created_at), count(*), min(id), max(id)
          FROM buffer_messages ${where} GROUP BY rule, queue, topic`)
      : undefined
    return db.transaction(() => {
      count?.run(...args)
      range?.run(...args)
      const n = (queue === undefined ? st.run() : st.run(queue)).changes
      if (ledger !== undefined) queue === undefined ? ledger.run() : ledger.run(queue)
      return n
    })()
  }

  /** Drop ranges, oldest first; empty for a file older than the ledger. */
  drops(query: LedgerQuery = {}): LedgerRange[] {
    return this.#hasDropLedger() ? readRanges(this.#db, query) : []
  }

  /** Drop totals since the store was created; null for a file older than the ledger. */
  dropTotals(): DurableDropTotals | null {
    return readDurableTotals(this.#db)
  }

  #hasDropLedger(): boolean {
    return (
      this.#db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'buffer_drop_ledger'").get() !==
      undefined
    )
  }

  close(): void {
    this.#db.close()
  }
}
