// Schema of the message store and the SQL of its hot paths.
//
// Table buffer_messages — one row per queued message; `id` is the drain
// sequence, assigned by the store from buffer_meta.next_id (never reused,
// unlike a bare INTEGER PRIMARY KEY, whose max+1 comes back after the newest
// rows are deleted). Payload and properties come last in the record so that
// reading the small columns never touches overflow pages.
//
// Indexes (every SQLite index ends with the rowid, so "(a, b)" is "(a, b, id)").
// Each index costs every append and every ack a B-tree write, so only the
// drain index covers all rows; the others are partial:
//   buffer_messages_drain    (queue, priority DESC)             takeBatch (a range per priority), oldest, purge
//   buffer_messages_conflate (queue, topic) WHERE conflate = 1  latest-only conflation and release
//   buffer_messages_evict    (priority) WHERE when_full <> 2     eviction candidates (oldest per priority)
//   buffer_messages_expiry   (expires_at) WHERE NOT NULL         TTL sweep
// A full (queue, topic, priority) index, what per-topic order would naively
// need, doubled the cost of append + ack (docs/benchmarks.md); per-topic
// order is kept by buffer_topics instead.
//
// Table buffer_topics — one row per (queue, topic) with queued rows: how
// many (n) and the lowest priority among them. An append of that topic with
// a higher priority is stored at that lower priority (it inherits the
// topic's queued priority), so a priority can never overtake within a
// topic (message-store.ts, invariant 4). The row goes when n reaches 0.
// It changes with every append and delete in the same transaction, batched
// per topic (topic-ledger.ts): a few hundred topics cost a few writes per
// commit, not one per message.
//
// Table buffer_meta holds next_id; buffer_probe is written only by the
// disk-full probe (a row that exists only between two commits).
// Every hot-path statement below is checked by a unit test to plan as an
// index SEARCH without a temp B-tree (test/unit/buffer/query-plans.test.ts).
//
// In-flight state is deliberately NOT a column: it lives in the store's
// memory. Marking rows in flight would cost a write (and an fsync) per
// takeBatch for nothing, since after a restart every row must be eligible
// again anyway (at-least-once).

import type Database from 'better-sqlite3'
import type { Migration } from '../storage/index.js'
import { DROP_LEDGER_MIGRATIONS } from './drop-ledger.js'
import {
  type Conflation,
  decodeProperties,
  type FullPolicy,
  type PeekedMessage,
  type StoredMessage,
} from './message-store.js'

export const WHEN_FULL_CODE: Record<FullPolicy, number> = { 'drop-oldest': 0, 'drop-lowest-priority': 1, refuse: 2 }
const WHEN_FULL_BY_CODE: readonly FullPolicy[] = ['drop-oldest', 'drop-lowest-priority', 'refuse']

export const MESSAGE_STORE_MIGRATIONS: readonly Migration[] = [
  {
    id: 'buffer/001-messages',
    up: (db) => {
      db.exec(`
        CREATE TABLE buffer_messages (
          id          INTEGER PRIMARY KEY,
          queue       TEXT    NOT NULL,
          topic       TEXT    NOT NULL,
          qos         INTEGER NOT NULL,
          retain      INTEGER NOT NULL,
          priority    INTEGER NOT NULL,
          rule        TEXT    NOT NULL,
          conflate    INTEGER NOT NULL,
          when_full   INTEGER NOT NULL,
          created_at  INTEGER NOT NULL,
          expires_at  INTEGER,
          size        INTEGER NOT NULL,
          payload     BLOB    NOT NULL,
          properties  TEXT
        ) STRICT;
        CREATE INDEX buffer_messages_drain  ON buffer_messages (queue, priority DESC);
        CREATE INDEX buffer_messages_topic  ON buffer_messages (queue, topic, priority);
        CREATE INDEX buffer_messages_evict  ON buffer_messages (priority) WHERE when_full <> 2;
        CREATE INDEX buffer_messages_expiry ON buffer_messages (expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE buffer_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;
        CREATE TABLE buffer_probe (filler BLOB NOT NULL) STRICT;
      `)
    },
  },
  {
    // The full topic index made every append and ack twice as expensive; see the header.
    id: 'buffer/002-topic-ledger',
    up: (db) => {
      db.exec(`
        DROP INDEX IF EXISTS buffer_messages_topic;
        CREATE INDEX buffer_messages_conflate ON buffer_messages (queue, topic) WHERE conflate = 1;
        CREATE TABLE buffer_topics (
          queue    TEXT    NOT NULL,
          topic    TEXT    NOT NULL,
          priority INTEGER NOT NULL,
          n        INTEGER NOT NULL,
          PRIMARY KEY (queue, topic)
        ) STRICT, WITHOUT ROWID;
        INSERT INTO buffer_topics (queue, topic, priority, n)
          SELECT queue, topic, min(priority), count(*) FROM buffer_messages GROUP BY queue, topic;
      `)
    },
  },
  ...DROP_LEDGER_MIGRATIONS,
]

/** Every column, in the order rawRowToMessage reads them. */
const MESSAGE_COLUMNS =
  'id, queue, topic, qos, retain, priority, rule, conflate, when_full, created_at, expires_at, size, payload, properties'

/** Hot-path SQL, exported so the query-plan test checks exactly what runs. */
export const SQL = {
  insert: `INSERT INTO buffer_messages
    (id, queue, topic, qos, retain, priority, rule, conflate, when_full, created_at, expires_at, size, payload, properties)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  deleteById: 'DELETE FROM buffer_messages WHERE id = ? RETURNING id, queue, topic, priority, size, rule, created_at',
  /** Acks of in-flight rows: the store already holds what RETURNING would give (and RETURNING costs time per row). */
  deleteAcked: 'DELETE FROM buffer_messages WHERE id = ?',
  /** Range acks (commit-batch.ts): how many rows a run of acked ids spans in its (queue, priority), then the delete. */
  countAckRange: 'SELECT count(*) FROM buffer_messages WHERE queue = ? AND priority = ? AND id BETWEEN ? AND ?',
  deleteAckRange: 'DELETE FROM buffer_messages WHERE queue = ? AND priority = ? AND id BETWEEN ? AND ?',
  selectById: 'SELECT * FROM buffer_messages WHERE id = ?',
  /** Drain: the next rows of one (queue, priority) after a cursor, in id order. */
  takeRange: `SELECT ${MESSAGE_COLUMNS} FROM buffer_messages WHERE queue = ? AND priority = ? AND id > ? ORDER BY id LIMIT ?`,
  /** Drain order candidates (ids only: covering index); peek. */
  takeIds: 'SELECT id FROM buffer_messages WHERE queue = ? ORDER BY priority DESC, id LIMIT ?',
  /** Oldest row of one (queue, priority): per-queue oldest age = min over the queue's priorities. */
  oldestOfPriority: 'SELECT id, created_at FROM buffer_messages WHERE queue = ? AND priority = ? ORDER BY id LIMIT 1',
  /** Rows of a latest-only (queue, topic): conflation (a handful: the newest plus in-flight ones). */
  topicIds: 'SELECT id FROM buffer_messages WHERE queue = ? AND topic = ? AND conflate = 1',
  topicHasNewer: 'SELECT 1 FROM buffer_messages WHERE queue = ? AND topic = ? AND conflate = 1 AND id > ? LIMIT 1',
  /** buffer_topics (topic-ledger.ts). */
  topicGet: 'SELECT priority, n FROM buffer_topics WHERE queue = ? AND topic = ?',
  topicPut:
    'INSERT INTO buffer_topics (queue, topic, priority, n) VALUES (?, ?, ?, ?) ON CONFLICT (queue, topic) DO UPDATE SET priority = excluded.priority, n = excluded.n',
  topicDelete: 'DELETE FROM buffer_topics WHERE queue = ? AND topic = ?',
  topicDeleteAll: 'DELETE FROM buffer_topics',
  topicRowCount: 'SELECT coalesce(sum(n), 0) FROM buffer_topics',
  topicRebuild:
    'INSERT INTO buffer_topics (queue, topic, priority, n) SELECT queue, topic, min(priority), count(*) FROM buffer_messages GROUP BY queue, topic',
  /** Evictable rows of one priority, oldest first, after a cursor. */
  evictCandidates:
    'SELECT id, size FROM buffer_messages WHERE when_full <> 2 AND priority = ? AND id > ? ORDER BY id LIMIT ?',
  expired: 'SELECT id FROM buffer_messages WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
  purgeChunk: 'SELECT id FROM buffer_messages WHERE queue = ? LIMIT ?',
  purgeChunkAll: 'SELECT id FROM buffer_messages LIMIT ?',
  /** Keyset pages for peek/export; `+queue` keeps the planner on the rowid order (no temp B-tree). */
  pageByQueue: 'SELECT * FROM buffer_messages WHERE +queue = ? AND id > ? ORDER BY id LIMIT ?',
  pageAll: 'SELECT * FROM buffer_messages WHERE id > ? ORDER BY id LIMIT ?',
  countByQueue: 'SELECT count(*) FROM buffer_messages WHERE queue = ?',
  countAll: 'SELECT count(*) FROM buffer_messages',
  /** Startup / recount only: one scan. */
  aggregate: 'SELECT queue, priority, count(*) AS n, sum(size) AS bytes FROM buffer_messages GROUP BY queue, priority',
  maxId: 'SELECT max(id) FROM buffer_messages',
  getMeta: 'SELECT value FROM buffer_meta WHERE key = ?',
  setMeta: 'INSERT INTO buffer_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  /** Disk-full probe: allocate real pages, commit, give them back. */
  probeInsert: 'INSERT INTO buffer_probe (filler) VALUES (zeroblob(?))',
  probeDelete: 'DELETE FROM buffer_probe',
} as const

export interface MessageRow {
  id: number
  queue: string
  topic: string
  qos: number
  retain: number
  priority: number
  rule: string
  conflate: number
  when_full: number
  created_at: number
  expires_at: number | null
  size: number
  payload: Buffer
  properties: string | null
}

/** Columns returned by SQL.deleteById. */
export interface DeletedRow {
  id: number
  /** Returned by deleteById (drops need the message time); absent for an acked in-flight row. */
  created_at?: number
  queue: string
  topic: string
  priority: number
  size: number
  rule: string
}

export function rowToMessage(r: MessageRow): StoredMessage {
  return {
    id: r.id,
    queue: r.queue,
    topic: r.topic,
    payload: r.payload,
    qos: r.qos === 2 ? 2 : r.qos === 1 ? 1 : 0,
    retain: r.retain !== 0,
    priority: r.priority,
    rule: r.rule,
    conflation: (r.conflate !== 0 ? 'latest-only' : 'none') satisfies Conflation,
    whenFull: WHEN_FULL_BY_CODE[r.when_full] ?? 'drop-oldest',
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    properties: decodeProperties(r.properties),
    size: r.size,
  }
}

/** A row read by a RAW statement. */
export type RawMessageRow = [
  id: number,
  queue: string,
  topic: string,
  qos: number,
  retain: number,
  priority: number,
  rule: string,
  conflate: number,
  whenFull: number,
  createdAt: number,
  expiresAt: number | null,
  size: number,
  payload: Buffer,
  properties: string | null,
]

export function rawRowToMessage(r: RawMessageRow): StoredMessage {
  return {
    id: r[0],
    queue: r[1],
    topic: r[2],
    payload: r[12],
    qos: r[3] === 2 ? 2 : r[3] === 1 ? 1 : 0,
    retain: r[4] !== 0,
    priority: r[5],
    rule: r[6],
    conflation: r[7] !== 0 ? 'latest-only' : 'none',
    whenFull: WHEN_FULL_BY_CODE[r[8]] ?? 'drop-oldest',
    createdAt: r[9],
    expiresAt: r[10],
    properties: decodeProperties(r[13]),
    size: r[11],
  }
}

export function rowToPeeked(r: MessageRow, inFlight: boolean): PeekedMessage {
  return { ...rowToMessage(r), inFlight }
}

/** Prepared statements of the store, created once per start(). Single-column reads are plucked (see PLUCKED). */
export type Statements = { readonly [K in keyof typeof SQL]: Database.Statement }

/**
 * Statements that return arrays (MESSAGE_COLUMNS order) instead of objects:
 * the drain reads every row once, and an object per row cost more
 * (docs/benchmarks.md).
 */
const RAW: ReadonlySet<keyof typeof SQL> = new Set<keyof typeof SQL>(['takeRange'])

/** Statements that return a single column, prepared in pluck mode. */
const PLUCKED: ReadonlySet<keyof typeof SQL> = new Set<keyof typeof SQL>([
  'takeIds',
  'topicIds',
  'expired',
  'purgeChunk',
  'purgeChunkAll',
  'countByQueue',
  'countAll',
  'maxId',
  'getMeta',
  'topicRowCount',
  'countAckRange',
])

export function prepareStatements(db: Database.Database): Statements {
  const out: Partial<Record<keyof typeof SQL, Database.Statement>> = {}
  for (const key of Object.keys(SQL) as Array<keyof typeof SQL>) {
    const st = db.prepare(SQL[key])
    out[key] = PLUCKED.has(key) ? st.pluck() : RAW.has(key) ? st.raw() : st
  }
  return out as Statements
}
