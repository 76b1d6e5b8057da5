// The MessageStore contract: what the bridge (and the broker's capture hook)
// may rely on, whatever the implementation (SqliteStore, MemoryStore).
//
// Message life cycle
//   append ──commit──▶ queued ──takeBatch──▶ in flight ──ack──▶ deleted
//                        ▲                       │
//                        └────release / restart──┘
//   queued rows can also leave as drops: evicted-full, disk-full, expired,
//   conflated, purged (every drop is counted by reason and by rule).
//
// Invariants
// 1. Acknowledged means committed. `append()` resolves only after the
//    transaction holding the message has committed (SqliteStore: with the
//    configured durability); the broker sends PUBACK/PUBREC on resolve. A
//    rejected append stored nothing.
// 2. At-least-once. A row is deleted only by `ack` (or a counted drop). In-flight
//    state is held in memory only, so after a restart every row is eligible
//    again: never at-most-once, duplicates possible after a crash.
// 3. Drain order. `takeBatch(queue)` hands out rows of one queue by priority
//    (higher first), FIFO (by `id`) within a priority. `id` is a sequence
//    that only grows; it is never reused, even after the newest rows are
//    deleted, so the bridge may use it as a stable message id upstream.
// 4. Per-topic order. Within one (queue, topic), rows are handed out in `id`
//    order, whatever their priorities: a message that arrives with a higher
//    priority than older queued rows of the same topic is stored at the
//    lowest of their priorities (it inherits the topic's queued priority),
//    so a priority can never overtake within a topic. The new priority
//    applies once the topic's older rows are gone. (The bridge gives every
//    topic one priority, by rule; this only matters when a rule's priority
//    changed across a restart with rows still queued.) Raising the older rows
//    instead would need an index on topic, which doubled the cost of every
//    append and ack. Conflation only removes
//    older not-in-flight rows, so it cannot reorder either. Redelivery: rows
//    given back with `release` become eligible again at their original
//    position, ahead of any newer row of their topic not yet handed out.
//    Newer rows of the same topic that are still in flight are not recalled;
//    a bridge that needs strict order after a failure calls
//    `releaseAll(queue)` (e.g. on reconnect) before taking again, which is
//    also what MQTT's in-order resend rule [MQTT-4.6.0-1] asks of a session.
// 5. Conflation `latest-only`: when such a message is committed, every older
//    row of the same (queue, topic) that is not in flight is dropped
//    ('conflated'); a released in-flight row that has a newer row of its
//    topic is dropped too instead of being redelivered.
// 6. Limits. The byte cap covers `estimateMessageBytes()` of every stored row
//    (in flight included). When an append does not fit, its own `whenFull`
//    policy decides: 'drop-oldest' evicts the oldest evictable rows (any
//    queue), 'drop-lowest-priority' evicts evictable rows of the lowest
//    priority not above its own (oldest first), 'refuse' rejects it. Rows
//    whose own policy is 'refuse' are never evicted to make room ("must
//    deliver" class), nor are in-flight rows. If not enough can be evicted,
//    the append is rejected (EDGE_ERR_BUFFER_FULL, retryable).

import { Buffer } from 'node:buffer'
import type { LastRun } from './continuity.js'
import type { DurableDropTotals } from './drop-ledger.js'
import { BufferError, type DurationHistogram } from '../storage/index.js'
import { decodeProperties, encodeProperties, type MessageProperties } from './message-properties.js'

export { decodeProperties, encodeProperties, type MessageProperties }

/** What happens to a new message that does not fit. Default 'drop-oldest'. */
export type FullPolicy = 'drop-oldest' | 'drop-lowest-priority' | 'refuse'
export const FULL_POLICIES: readonly FullPolicy[] = ['drop-oldest', 'drop-lowest-priority', 'refuse']

/** 'latest-only': keep only the newest not-in-flight message per (queue, topic). Default 'none'. */
export type Conflation = 'none' | 'latest-only'

/** Why a message left the store without being acknowledged upstream. */
/** 'upstream-rejected': handed out, then refused by the upstream for good (e.g. Maximum Packet Size); see drop(). */
/** 'power-loss': acknowledged messages a power cut took from the store, found at the next start (continuity.ts). */
export type DropReason =
  'evicted-full' | 'expired' | 'conflated' | 'refused' | 'disk-full' | 'purged' | 'upstream-rejected' | 'power-loss'
/** Why a row already handed out by takeBatch leaves without an upstream ack (MessageStore.drop). */
export type HandedOutDropReason = 'upstream-rejected' | 'expired'
export const DROP_REASONS: readonly DropReason[] = [
  'evicted-full',
  'expired',
  'conflated',
  'refused',
  'disk-full',
  'purged',
  'upstream-rejected',
  'power-loss',
]

/** A message bound upstream, as the capture hook hands it to `append()`. */
export interface AppendInput {
  /** Upstream (queue) name; non-empty, at most 255 bytes. */
  readonly queue: string
  readonly topic: string
  readonly payload: Uint8Array
  readonly qos: 0 | 1 | 2
  /** Default false. */
  readonly retain?: boolean
  /** Integer; higher drains first. Default 0. */
  readonly priority?: number
  /** Id of the bridge rule that matched; drops are counted per rule. Default ''. */
  readonly rule?: string
  /** Default 'none'. */
  readonly conflation?: Conflation
  /** Default 'drop-oldest'. */
  readonly whenFull?: FullPolicy
  /** Absolute expiry, epoch milliseconds; null/undefined = never. */
  readonly expiresAt?: number | null
  /** MQTT 5 properties to carry upstream (message-properties.ts). */
  readonly properties?: MessageProperties | undefined
}

export interface AppendResult {
  /** The row's sequence id, or null when the message was not stored because it had already expired. */
  readonly id: number | null
  /** 'expired' when the message arrived already expired (counted as a drop, nothing stored); else null. */
  readonly dropped: 'expired' | null
}

export interface StoredMessage {
  /** Sequence id; strictly increasing in append order, never reused. */
  readonly id: number
  readonly queue: string
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  /** Drain priority as stored: the append's, or lower when older rows of the topic rank lower (invariant 4). */
  readonly priority: number
  readonly rule: string
  readonly conflation: Conflation
  readonly whenFull: FullPolicy
  /** Epoch ms when the store accepted the message. */
  readonly createdAt: number
  readonly expiresAt: number | null
  readonly properties: MessageProperties | undefined
  /** Bytes charged against `maxBytes` (see estimateMessageBytes). */
  readonly size: number
}

/** A peeked/exported row, with its current in-flight state. */
export interface PeekedMessage extends StoredMessage {
  readonly inFlight: boolean
}

export interface MessageExport {
  /** Rows matching at the moment exportRows() was called (rows appended later may or may not appear). */
  readonly total: number
  /** Rows in id order, read in small pages so that no read transaction stays open between pages. */
  readonly rows: AsyncIterable<PeekedMessage>
}

export interface QueueStats {
  readonly queue: string
  /** Rows stored, in flight included. */
  readonly depth: number
  readonly bytes: number
  readonly inFlight: number
  /** Age of the oldest row, ms; null when empty. */
  readonly oldestAgeMs: number | null
}

export type DegradedReason =
  /** SQLITE_FULL / ENOSPC: the store runs with a reduced cap until a probe commit succeeds. */
  | 'disk-full'
  /** Free space on the data directory's file system is below minFreeBytes. */
  | 'disk-low'
  /** The last commit failed with an I/O error. */
  | 'io-error'
  /** SQLite reported corruption while running; a restart quarantines the file. Sticky. */
  | 'corrupt'
  /** Another connection held the write lock too long. */
  | 'busy'

export interface BufferHealth {
  readonly state: 'ok' | 'degraded'
  readonly reasons: readonly DegradedReason[]
  /** Epoch ms of the last transition to degraded; null when ok. */
  readonly since: number | null
  readonly lastError: { readonly code: string; readonly message: string; readonly at: number } | null
}

export interface BufferStats {
  readonly durability: 'full' | 'normal' | 'off' | 'memory'
  readonly health: BufferHealth
  readonly queues: readonly QueueStats[]
  readonly totals: {
    readonly messages: number
    readonly bytes: number
    readonly inFlight: number
    /** Counters since start. */
    readonly appended: number
    readonly taken: number
    readonly acked: number
    readonly released: number
    readonly commits: number
    readonly failedCommits: number
    /** fsyncs of the WAL that acknowledgements waited for (durability 'full'); 0 otherwise. */
    readonly walFsyncs: number
    /** How long those fsyncs took (empty unless durability 'full'). */
    readonly walFsyncDurations: DurationHistogram
  }
  /** Drops since the process started (total, byReason, byRule) and, for a durable store, since it was created. */
  readonly drops: {
    readonly total: number
    readonly byReason: Readonly<Record<DropReason, number>>
    /** rule id ('' = no rule) → reason → count. */
    readonly byRule: Readonly<Record<string, Readonly<Partial<Record<DropReason, number>>>>>
    /** Counted in SQLite with the drops themselves (drop-ledger.ts): survives restarts, kill -9 and power loss. */
    readonly sinceCreated?: DurableDropTotals | null
  }
  /** How the previous run ended and what it lost (SqliteStore; continuity.ts). */
  readonly lastRun?: LastRun | null
  /** Per-second rates over the last ~10 s. */
  readonly rates: { readonly appendPerSec: number; readonly takePerSec: number; readonly ackPerSec: number }
  readonly limits: {
    readonly maxBytes: number
    /** The cap in force now (lower than maxBytes after SQLITE_FULL or below the free-disk floor). */
    readonly effectiveMaxBytes: number
    readonly minFreeBytes: number
    /** Free bytes on the data file system at the last check; null if unknown / not applicable. */
    readonly freeBytes: number | null
  }
  /** Corrupt database files moved aside (persisted in the database itself, so it survives restarts). */
  readonly quarantine: {
    readonly count: number
    readonly last: { readonly movedTo: string; readonly at: number; readonly reason: string } | null
  }
}

export interface CommitInfo {
  readonly appends: number
  readonly acks: number
  readonly deletes: number
  readonly durationMs: number
}

/** Events of both implementations (typed map for EventEmitter<MessageStoreEvents>). */
export interface MessageStoreEvents {
  /** After a commit that stored at least one message: the queues that got new rows. Wake the drain. */
  appended: [queues: readonly string[]]
  /** Health changed (ok ↔ degraded, or the set of reasons changed). */
  health: [health: BufferHealth]
  /** After every successful commit (for tests and metrics). */
  commit: [info: CommitInfo]
}

/**
 * The store the bridge drains. The bridge imports this type only
 * (`import type { MessageStore } from '../buffer/index.js'`).
 */
export interface MessageStore {
  /** Durably store a message; resolves after commit (see invariant 1). Rejects with BufferError. */
  append(msg: AppendInput): Promise<AppendResult>
  /**
   * Up to `max` eligible rows of `queue` in drain order (invariants 3, 4), marked in flight.
   * Expired rows met on the way are dropped ('expired'), never returned.
   */
  takeBatch(queue: string, max: number): Promise<StoredMessage[]>
  /** Delete rows delivered upstream. Unknown ids are ignored. Resolves after commit. */
  ack(ids: readonly number[]): Promise<void>
  /**
   * Delete rows handed out that will never be sent, counted as drops of
   * their rule (durably, in the same transaction, for SqliteStore): refused
   * by the upstream for good ('upstream-rejected'), or expired while read
   * ahead or in flight ('expired', the reason of every expiry). Unknown ids
   * are ignored. Resolves after commit.
   */
  drop(ids: readonly number[], reason: HandedOutDropReason): Promise<void>
  /** Give in-flight rows back (nack): eligible again at their original position. Unknown ids ignored. */
  release(ids: readonly number[]): Promise<void>
  /** Release every in-flight row (of one queue, or all). Resolves with how many were released. */
  releaseAll(queue?: string): Promise<number>
  /** Rows in drain order (one queue) or id order (all queues), without marking them in flight. */
  peek(queue?: string, limit?: number): Promise<PeekedMessage[]>
  /**
   * Delete every row (of one queue, or all), in flight included; counted as drops 'purged'. Resolves with the count.
   */
  purge(queue?: string): Promise<number>
  /** Stream rows for export (JSON lines), with a total for progress. */
  exportRows(queue?: string): Promise<MessageExport>
  /** Cheap: counters kept in memory plus a few indexed lookups. */
  stats(): BufferStats
  on<K extends keyof MessageStoreEvents & string>(event: K, listener: (...args: MessageStoreEvents[K]) => void): this
  off<K extends keyof MessageStoreEvents & string>(event: K, listener: (...args: MessageStoreEvents[K]) => void): this
}

// ---------------------------------------------------------------------------
// Byte accounting, shared by every implementation so that maxBytes means the same thing.

/**
 * Fixed per-row cost charged on top of the variable-length fields: the table
 * record's header and integer columns (~26 B), the rowid and cell pointer
 * (~6 B), and the index entries' fixed parts (priority, rowid, expiry,
 * headers; ~12 B each). Page slack and free pages are NOT included.
 * Checked with bench/buffer-append.ts (file size after a TRUNCATE
 * checkpoint ÷ rows; figures in docs/benchmarks.md): close for small
 * payloads, below the file for payloads near 1 KiB (a few such cells fill a
 * 4 KiB page, so slack grows with payload size). Size maxBytes with that
 * margin, or cap the file itself with maxFileBytes.
 */
export const ROW_OVERHEAD_BYTES = 80

/**
 * Bytes charged for one message: payload + topic ×2 (table + topic index)
 * + queue ×3 (table + drain index + topic index) + rule + encoded
 * properties + ROW_OVERHEAD_BYTES. Deterministic, so that tests and
 * operators can compute it.
 */
export function estimateMessageBytes(m: {
  readonly queue: string
  readonly topic: string
  readonly payload: Uint8Array
  readonly rule: string
  readonly propertiesJson: string | null
}): number {
  return (
    m.payload.byteLength +
    2 * Buffer.byteLength(m.topic) +
    3 * Buffer.byteLength(m.queue) +
    Buffer.byteLength(m.rule) +
    (m.propertiesJson === null ? 0 : Buffer.byteLength(m.propertiesJson)) +
    ROW_OVERHEAD_BYTES
  )
}

/** An append after validation and defaulting: what implementations store. */
export interface NormalizedMessage {
  readonly queue: string
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  readonly priority: number
  readonly rule: string
  readonly conflation: Conflation
  readonly whenFull: FullPolicy
  readonly expiresAt: number | null
  readonly properties: MessageProperties | undefined
  readonly propertiesJson: string | null
  readonly size: number
}

const MAX_NAME_BYTES = 255
const MAX_TOPIC_BYTES = 65535 // MQTT topic length field is 16 bits [MQTT-1.5.3]
export const MAX_PRIORITY = 1_000_000

/** The stored form of an accepted append (what a read of its row gives back). */
export function toStoredMessage(m: NormalizedMessage, id: number, priority: number, createdAt: number): StoredMessage {
  return {
    id,
    queue: m.queue,
    topic: m.topic,
    payload: m.payload,
    qos: m.qos,
    retain: m.retain,
    priority,
    rule: m.rule,
    conflation: m.conflation,
    whenFull: m.whenFull,
    createdAt,
    expiresAt: m.expiresAt,
    properties: m.properties,
    size: m.size,
  }
}

/** Validate and default an append at the boundary; throws BufferError('EDGE_ERR_BUFFER_INVALID'). */
function bad(what: string): never {
  throw new BufferError('EDGE_ERR_BUFFER_INVALID', `invalid message: ${what}`)
}

export function normalizeAppend(input: AppendInput): NormalizedMessage {
  if (typeof input !== 'object' || input === null) bad('not an object')
  const { queue, topic, payload, qos } = input
  if (typeof queue !== 'string' || queue.length === 0 || Buffer.byteLength(queue) > MAX_NAME_BYTES)
    bad('queue must be a non-empty string of at most 255 bytes')
  if (typeof topic !== 'string' || topic.length === 0 || Buffer.byteLength(topic) > MAX_TOPIC_BYTES)
    bad('topic must be a non-empty string of at most 65535 bytes')
  if (!(payload instanceof Uint8Array)) bad('payload must be a Uint8Array')
  if (qos !== 0 && qos !== 1 && qos !== 2) bad('qos must be 0, 1 or 2')
  const priority = input.priority ?? 0
  if (!Number.isSafeInteger(priority) || Math.abs(priority) > MAX_PRIORITY)
    bad('priority must be an integer within ±1000000')
  const rule = input.rule ?? ''
  if (typeof rule !== 'string' || Buffer.byteLength(rule) > MAX_NAME_BYTES)
    bad('rule must be a string of at most 255 bytes')
  const conflation = input.conflation ?? 'none'
  if (conflation !== 'none' && conflation !== 'latest-only') bad("conflation must be 'none' or 'latest-only'")
  const whenFull = input.whenFull ?? 'drop-oldest'
  if (!FULL_POLICIES.includes(whenFull)) bad("whenFull must be 'drop-oldest', 'drop-lowest-priority' or 'refuse'")
  const expiresAt = input.expiresAt ?? null
  if (expiresAt !== null && !Number.isFinite(expiresAt)) bad('expiresAt must be a finite epoch-ms number or null')
  const properties = input.properties
  const propertiesJson = properties === undefined ? null : encodeProperties(properties)
  // Copy: the caller (aedes) may reuse the packet's buffer after we return.
  const copy = Buffer.from(payload)
  const size = estimateMessageBytes({ queue, topic, payload: copy, rule, propertiesJson })
  return {
    queue,
    topic,
    payload: copy,
    qos,
    retain: input.retain === true,
    priority,
    rule,
    conflation,
    whenFull,
    expiresAt: expiresAt === null ? null : Math.trunc(expiresAt),
    properties: propertiesJson === null ? undefined : decodeProperties(propertiesJson),
    propertiesJson,
    size,
  }
}

/** Zeroed drop counters. */
export function emptyDropCounts(): Record<DropReason, number> {
  return {
    'evicted-full': 0,
    expired: 0,
    conflated: 0,
    refused: 0,
    'disk-full': 0,
    purged: 0,
    'upstream-rejected': 0,
    'power-loss': 0,
  }
}
