// aedes persistence on better-sqlite3: the local broker's session state —
// retained messages, subscriptions of persistent sessions, their outgoing
// QoS 1/2 queues, inbound QoS 2 state and wills — lives in the agent's one
// SQLite database (tables prefixed `broker_`), so it survives a restart.
//
// Implements the async persistence interface that aedes 1.2 calls directly
// (`await persistence.setup(broker)`, then promise-returning methods and
// Readable streams), the same shape as aedes-persistence 11's
// asyncPersistence.js, and passes that package's abstract suite.
//
// Invariants
// 1. Committed on resolve. Every write is one synchronous better-sqlite3
//    transaction; when a method's promise resolves its rows are committed.
//    On power loss: with durability 'full' the WAL is fsync'd within 200 ms
//    of any write (database.ts, wal-sync.ts). aedes sends a QoS 1 PUBACK
//    before it stores the message; the local broker holds that PUBACK until
//    the retained message or offline-queue copy is stored and synced
//    (LocalBroker's stateSync, hasQueuingSubscribers below), so only state
//    nobody was acknowledged for (subscriptions, deliveries) may lose its
//    last 200 ms. Several rows handed over at once (outgoingEnqueueCombi to N
//    subscribers, addSubscriptions, cleanSubscriptions) are one transaction.
// 2. Write-through. SQLite is written first and memory second: if a statement
//    throws, the in-memory index is left as it was.
// 3. Memory holds indexes, not data. In memory: the topic → subscriber trie of
//    QoS > 0 subscriptions (QlobberSub, exactly what aedes-persistence's
//    reference uses; aedes asks it on every QoS > 0 PUBLISH), per-client
//    offline-queue counters (rows, bytes) and the retained count. Retained
//    payloads, queued packets, inbound QoS 2 packets and wills are read from
//    SQLite when asked for, in pages, never a whole table at once.
// 4. Bounded queues. A client's outgoing queue holds at most
//    `maxOfflineMessagesPerClient` rows and `maxOfflineBytesPerClient` bytes;
//    an enqueue that exceeds either drops that client's oldest PUBLISH rows
//    (PUBREL rows, i.e. QoS 2 handshakes already half done, are never
//    dropped). Drops are counted and logged at a bounded rate.
// 5. Exact round trip. A packet comes back with the same own keys and values
//    it was stored with (undefined-valued keys included, which the abstract
//    suite checks): payload as a BLOB (string payloads stay strings), every
//    other field as JSON, with Buffers (e.g. MQTT 5 correlationData) and
//    `undefined` tagged.
// 6. The database is borrowed: destroy() forgets the statements and the index
//    but never closes the connection, which the agent shares with SqliteStore.
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import type BetterSqlite3 from 'better-sqlite3'
import type { Logger } from 'pino'
import { applyMigrations, type Migration } from './database.js'
import { BufferError, toBufferError } from './errors.js'

type Database = BetterSqlite3.Database

// ---------------------------------------------------------------------------
// Public types

/** A client as aedes passes it to the persistence; only the id is used. */
export interface PersistenceClient {
  readonly id: string
}

/** What the persistence needs of the broker given to setup() (aedes: the Aedes instance). */
export interface PersistenceBroker {
  readonly id: string
  /** aedes' brokerCounter source; setup() raises it past counters still queued under the same broker id. */
  counter: number
}

/**
 * A packet as aedes hands it over: mqtt-packet fields plus aedes' brokerId and
 * brokerCounter. Open-ended on purpose: it is stored and returned verbatim.
 */
export interface PersistedPacket {
  cmd?: string
  topic?: string
  payload?: Buffer | Uint8Array | string
  qos?: number
  retain?: boolean
  dup?: boolean
  messageId?: number | undefined
  brokerId?: string | undefined
  brokerCounter?: number | undefined
  clientId?: string
  properties?: Record<string, unknown>
  [key: string]: unknown
}

/** One entry of a SUBSCRIBE packet, as stored for a persistent session. */
export interface PersistedSubscription {
  topic: string
  qos: number
  rh?: number | undefined
  rap?: boolean | undefined
  nl?: boolean | undefined
  /** MQTT 5 Subscription Identifier; restored by subscriptionsByClient, not carried by subscriptionsByTopic. */
  subscriptionIdentifier?: number | undefined
}

/** A QoS > 0 subscription matching a topic, as subscriptionsByTopic returns it. */
export interface TopicSubscriber {
  clientId: string
  topic: string
  qos: number
  rh?: number | undefined
  rap?: boolean | undefined
  nl?: boolean | undefined
}

export interface SqlitePersistenceOptions {
  /** The agent's open database (see openDatabase). Shared, never closed here. */
  db: Database
  /** Parent logger; a child `{ component: 'broker-persistence' }` is used. */
  logger: Logger
  /** Most rows in one client's outgoing queue; older PUBLISH rows are dropped beyond it. Default 1000. */
  maxOfflineMessagesPerClient?: number
  /** Most bytes (payload + stored header) in one client's outgoing queue. Default 10 MiB. */
  maxOfflineBytesPerClient?: number
  /** Minimum interval between two "dropped" warnings, milliseconds. Default 10 000. */
  dropLogIntervalMs?: number
  /** Clock, epoch milliseconds. Default Date.now. */
  now?: () => number
}

export interface SqlitePersistenceStats {
  /** Retained messages stored. */
  retainedMessages: number
  /** Clients with at least one stored subscription (persistent sessions known to the broker). */
  persistentSessions: number
  /** Stored subscriptions, all QoS. */
  subscriptions: number
  /** Rows in outgoing queues: not yet delivered, or delivered and awaiting PUBACK/PUBCOMP. */
  queuedMessages: number
  /** Bytes charged against the queues' byte bound. */
  queuedBytes: number
  /** Clients with a non-empty outgoing queue. */
  clientsWithQueuedMessages: number
  /** Outgoing messages dropped by the per-client bounds since the persistence was created (all reasons). */
  droppedMessages: number
  /** Of which: larger than maxOfflineBytesPerClient on their own, never queued. */
  droppedTooLarge: number
}

export const DEFAULT_MAX_OFFLINE_MESSAGES_PER_CLIENT = 1000
export const DEFAULT_MAX_OFFLINE_BYTES_PER_CLIENT = 10 * 1024 * 1024
export const DEFAULT_DROP_LOG_INTERVAL_MS = 10_000

// ---------------------------------------------------------------------------
// Schema

/**
 * Create the broker_* tables and indexes if missing. Idempotent, one
 * transaction (a savepoint when called inside one). This is the `up` of
 * AEDES_PERSISTENCE_MIGRATIONS; call it directly only on a database that is
 * not managed by openDatabase().
 */
export function migrateAedesPersistence(db: Database): void {
  db.transaction(() => {
    db.exec(SCHEMA_SQL)
  })()
}

/**
 * The persistence's schema for openDatabase()'s migration hook:
 * `openDatabase(path, { migrations: [...MESSAGE_STORE_MIGRATIONS, ...AEDES_PERSISTENCE_MIGRATIONS] })`.
 * setup() applies them as well (a no-op once recorded in schema_migrations).
 */
export const AEDES_PERSISTENCE_MIGRATIONS: readonly Migration[] = [
  { id: 'aedes/001-broker-state', up: migrateAedesPersistence },
]

// Packets are stored as header (JSON of every own field but the payload) +
// payload (BLOB) + payload_kind, see encodePacket(). Columns next to them
// (client_id, message_id, broker_id, ...) are copies used for lookups.
const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS broker_retained (
  topic        TEXT PRIMARY KEY NOT NULL,
  header       TEXT NOT NULL,
  payload      BLOB,
  payload_kind INTEGER NOT NULL,
  bytes        INTEGER NOT NULL,
  stored_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS broker_subscriptions (
  id           INTEGER PRIMARY KEY,
  client_id    TEXT NOT NULL,
  topic        TEXT NOT NULL,
  qos          INTEGER NOT NULL,
  rh           INTEGER,
  rap          INTEGER,
  nl           INTEGER,
  subscription_identifier INTEGER,
  UNIQUE (client_id, topic)
) STRICT;
CREATE INDEX IF NOT EXISTS broker_subscriptions_topic ON broker_subscriptions (topic);
CREATE TABLE IF NOT EXISTS broker_outgoing (
  seq          INTEGER PRIMARY KEY,
  client_id    TEXT NOT NULL,
  cmd          TEXT NOT NULL,
  broker_id    TEXT,
  broker_counter INTEGER,
  message_id   INTEGER,
  header       TEXT NOT NULL,
  payload      BLOB,
  payload_kind INTEGER NOT NULL,
  bytes        INTEGER NOT NULL,
  enqueued_at  INTEGER NOT NULL
) STRICT;
-- One index only: (client_id, seq) order. Every lookup in a client's queue
-- (by messageId, by brokerId + brokerCounter) is a scan from its oldest row
-- that stops at the first match, which is near the head because aedes sends
-- and acknowledges in queue order. Two more indexes made a fan-out to 100
-- subscribers 2.5x slower (each index dirties one page per subscriber).
CREATE INDEX IF NOT EXISTS broker_outgoing_client ON broker_outgoing (client_id, seq);
CREATE TABLE IF NOT EXISTS broker_incoming (
  client_id    TEXT NOT NULL,
  message_id   INTEGER NOT NULL,
  header       TEXT NOT NULL,
  payload      BLOB,
  payload_kind INTEGER NOT NULL,
  stored_at    INTEGER NOT NULL,
  PRIMARY KEY (client_id, message_id)
) STRICT;
CREATE TABLE IF NOT EXISTS broker_wills (
  client_id    TEXT PRIMARY KEY NOT NULL,
  broker_id    TEXT,
  header       TEXT NOT NULL,
  payload      BLOB,
  payload_kind INTEGER NOT NULL,
  stored_at    INTEGER NOT NULL
) STRICT;
`

/** Names of the tables migrateAedesPersistence() creates (for purge/inspection tooling and tests). */
export const AEDES_PERSISTENCE_TABLES = [
  'broker_retained',
  'broker_subscriptions',
  'broker_outgoing',
  'broker_incoming',
  'broker_wills',
] as const

// ---------------------------------------------------------------------------
// CommonJS helpers from aedes' own dependency tree, with local types.

interface QlobberSubInstance {
  add(topic: string, value: TopicSubscriber): unknown
  remove(topic: string, value: { clientId: string; topic: string }): unknown
  match(topic: string): TopicSubscriber[]
  clear(): unknown
  readonly subscriptionsCount: number
}
type QlobberSubConstructor = new (options: {
  separator: string
  wildcard_one: string
  wildcard_some: string
  match_empty_levels: boolean
}) => QlobberSubInstance
type AedesPacketConstructor = new (original: PersistedPacket, broker?: PersistenceBroker) => PersistedPacket

const requireCjs = createRequire(import.meta.url)

/** Shared settled promises for the per-publish calls that find nothing to do. */
const NO_SUBSCRIBERS: Promise<TopicSubscriber[]> = Promise.resolve(Object.freeze([]) as unknown as TopicSubscriber[])
const DONE: Promise<void> = Promise.resolve()
// qlobber and aedes-packet come with aedes (aedes → aedes-persistence → qlobber,
// aedes → aedes-packet); both should be listed in package.json in their own right.
const QlobberSub = requireCjs('qlobber/aedes/qlobber-sub.js') as QlobberSubConstructor
const AedesPacket = requireCjs('aedes-packet') as AedesPacketConstructor

// mqemitter in aedes runs with matchEmptyLevels ([MQTT-4.7.1-3]: '+' matches an
// empty level); the offline index must agree with live delivery.
const TRIE_OPTIONS = { separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true }

// ---------------------------------------------------------------------------
// Packet encoding

const PAYLOAD_NONE = 0
const PAYLOAD_BUFFER = 1
const PAYLOAD_STRING = 2
// MQTT strings cannot contain U+0000 [MQTT-1.5.4-2], so no key from the wire
// can collide with these tags.
const TAG_UNDEFINED = '\u0000u'
const TAG_BINARY = '\u0000b'

interface EncodedPacket {
  header: string
  payload: Buffer | null
  payloadKind: number
  /** payload + header bytes: what the queue byte bound charges. */
  bytes: number
}

interface EncodedRow {
  header: string
  payload: Buffer | null
  payload_kind: number
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

function jsonReplacer(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key]
  if (raw === undefined) return { [TAG_UNDEFINED]: 1 }
  if (raw instanceof Uint8Array) return { [TAG_BINARY]: asBuffer(raw).toString('base64') }
  return value
}

export function encodePacket(packet: object): EncodedPacket {
  let payload: Buffer | null = null
  let payloadKind = PAYLOAD_NONE
  const rest: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  for (const [k, v] of Object.entries(packet)) {
    if (k === 'payload') {
      if (typeof v === 'string') {
        payload = Buffer.from(v, 'utf8')
        payloadKind = PAYLOAD_STRING
        continue
      }
      if (v instanceof Uint8Array) {
        payload = asBuffer(v)
        payloadKind = PAYLOAD_BUFFER
        continue
      }
    }
    rest[k] = v
  }
  const header = JSON.stringify(rest, jsonReplacer)
  return { header, payload, payloadKind, bytes: (payload?.length ?? 0) + Buffer.byteLength(header) }
}

function revive(v: unknown): unknown {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i])
    return v
  }
  if (v === null || typeof v !== 'object') return v
  const o = v as Record<string, unknown>
  const keys = Object.keys(o)
  if (keys.length === 1) {
    if (keys[0] === TAG_UNDEFINED) return undefined
    if (keys[0] === TAG_BINARY) return Buffer.from(String(o[TAG_BINARY]), 'base64')
  }
  for (const k of keys) {
    const before = o[k]
    const after = revive(before)
    // defineProperty, not assignment: a key named "__proto__" must stay data
    if (after !== before) Object.defineProperty(o, k, { value: after, writable: true, enumerable: true, configurable: true })
  }
  return o
}

export function decodePacket(row: EncodedRow): PersistedPacket {
  const packet = revive(JSON.parse(row.header)) as PersistedPacket
  if (row.payload_kind === PAYLOAD_BUFFER) packet.payload = row.payload ?? Buffer.alloc(0)
  else if (row.payload_kind === PAYLOAD_STRING) packet.payload = row.payload?.toString('utf8') ?? ''
  return packet
}

// ---------------------------------------------------------------------------
// Topic matching for retained lookups

/**
 * Does `topic` match the subscription `filter`? '+' is one level (possibly
 * empty, [MQTT-4.7.1-3]), '#' this level and every one below it, including
 * the parent ([MQTT-4.7.1-2]); a leading wildcard does not match a topic that
 * starts with '$' ([MQTT-4.7.2-1]), as aedes applies on live delivery.
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.charCodeAt(0) === 36 /* $ */ && (filter.charCodeAt(0) === 43 /* + */ || filter.charCodeAt(0) === 35) /* # */) {
    return false
  }
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    const level = f[i]
    if (level === '#') return true
    if (i >= t.length) return false
    if (level !== '+' && level !== t[i]) return false
  }
  return f.length === t.length
}

/**
 * Literal text every topic matching `filter` starts with: up to the first
 * wildcard, minus a trailing '/' (so 'a/#' also finds its parent 'a').
 */
function literalPrefix(filter: string): string {
  let end = filter.length
  const plus = filter.indexOf('+')
  const hash = filter.indexOf('#')
  if (plus !== -1) end = plus
  if (hash !== -1 && hash < end) end = hash
  let prefix = filter.slice(0, end)
  if (end < filter.length && prefix.endsWith('/')) prefix = prefix.slice(0, -1)
  return prefix
}

/** Prefixes to scan for a set of filters: sorted, none a prefix of another, so ranges are disjoint. */
function scanPrefixes(filters: readonly string[]): string[] {
  const sorted = [...new Set(filters.map(literalPrefix))].sort()
  const out: string[] = []
  for (const p of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && p.startsWith(last)) continue
    out.push(p)
  }
  return out
}

// ---------------------------------------------------------------------------
// Rows

interface SubscriptionRow {
  client_id: string
  topic: string
  qos: number
  rh: number | null
  rap: number | null
  nl: number | null
  subscription_identifier: number | null
}

interface RetainedRow extends EncodedRow {
  topic: string
}

interface OutgoingRow extends EncodedRow {
  seq: number
  message_id: number | null
  bytes: number
}

interface WillRow extends EncodedRow {
  client_id: string
  broker_id: string | null
}

interface QueueCounters {
  count: number
  bytes: number
}

const PAGE_SIZE = 128

function boolColumn(v: boolean | undefined): number | null {
  return v === undefined || v === null ? null : v ? 1 : 0
}

function numberOrNull(v: unknown): number | null {
  return typeof v === 'number' ? v : null
}

function stringOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null
}

function subscriberFromRow(r: SubscriptionRow): TopicSubscriber {
  return {
    clientId: r.client_id,
    topic: r.topic,
    qos: r.qos,
    rh: r.rh ?? undefined,
    rap: r.rap === null ? undefined : r.rap === 1,
    nl: r.nl === null ? undefined : r.nl === 1,
  }
}

function decodeOutgoing(row: OutgoingRow): PersistedPacket {
  const packet = decodePacket(row)
  // message_id is authoritative (outgoingUpdate changes only the column);
  // the header records whether the key exists at all.
  if (row.message_id !== null) packet.messageId = row.message_id
  else if ('messageId' in packet) packet.messageId = undefined
  return packet
}

function decodeWill(row: WillRow): PersistedPacket {
  const packet = decodePacket(row)
  if (row.broker_id !== null) packet.brokerId = row.broker_id
  return packet
}

function streamError(err: Error): Readable {
  return new Readable({
    objectMode: true,
    read() {
      this.destroy(err)
    },
  })
}

// ---------------------------------------------------------------------------
// Prepared statements, created by setup() once the tables exist

function prepareStatements(db: Database) {
  return {
    retainedDelete: db.prepare<[string]>('DELETE FROM broker_retained WHERE topic = ?'),
    retainedInsert: db.prepare<[string, string, Buffer | null, number, number, number]>(
      'INSERT INTO broker_retained (topic, header, payload, payload_kind, bytes, stored_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    retainedPageFrom: db.prepare<[string, number], RetainedRow>(
      'SELECT topic, header, payload, payload_kind FROM broker_retained WHERE topic >= ? ORDER BY topic LIMIT ?',
    ),
    retainedPageAfter: db.prepare<[string, number], RetainedRow>(
      'SELECT topic, header, payload, payload_kind FROM broker_retained WHERE topic > ? ORDER BY topic LIMIT ?',
    ),
    retainedCount: db.prepare<[], number>('SELECT COUNT(*) FROM broker_retained').pluck(),

    subUpsert: db.prepare<[string, string, number, number | null, number | null, number | null, number | null]>(
      `INSERT INTO broker_subscriptions (client_id, topic, qos, rh, rap, nl, subscription_identifier)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (client_id, topic) DO UPDATE SET
         qos = excluded.qos, rh = excluded.rh, rap = excluded.rap, nl = excluded.nl,
         subscription_identifier = excluded.subscription_identifier`,
    ),
    subDelete: db.prepare<[string, string], { qos: number }>(
      'DELETE FROM broker_subscriptions WHERE client_id = ? AND topic = ? RETURNING qos',
    ),
    subDeleteClient: db.prepare<[string], { topic: string; qos: number }>(
      'DELETE FROM broker_subscriptions WHERE client_id = ? RETURNING topic, qos',
    ),
    subsByClient: db.prepare<[string], SubscriptionRow>(
      'SELECT client_id, topic, qos, rh, rap, nl, subscription_identifier FROM broker_subscriptions WHERE client_id = ? ORDER BY id',
    ),
    subsQosPositive: db.prepare<[], SubscriptionRow>(
      'SELECT client_id, topic, qos, rh, rap, nl, subscription_identifier FROM broker_subscriptions WHERE qos > 0 ORDER BY id',
    ),
    clientsByTopic: db.prepare<[string], string>('SELECT client_id FROM broker_subscriptions WHERE topic = ? ORDER BY id').pluck(),
    subCounts: db.prepare<[], { subs: number; qosSubs: number; clients: number }>(
      `SELECT COUNT(*) AS subs, COUNT(*) FILTER (WHERE qos > 0) AS qosSubs, COUNT(DISTINCT client_id) AS clients
       FROM broker_subscriptions`,
    ),

    outInsert: db.prepare<
      [string, string, string | null, number | null, number | null, string, Buffer | null, number, number, number]
    >(
      `INSERT INTO broker_outgoing
         (client_id, cmd, broker_id, broker_counter, message_id, header, payload, payload_kind, bytes, enqueued_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    outDropOldest: db.prepare<[string], { bytes: number }>(
      `DELETE FROM broker_outgoing WHERE seq =
         (SELECT seq FROM broker_outgoing WHERE client_id = ? AND cmd = 'publish' ORDER BY seq LIMIT 1)
       RETURNING bytes`,
    ),
    // The reference's rule in one ordered scan: the first row that is the same
    // packet (broker id + counter) or holds the messageId under another broker.
    outFindForUpdate: db.prepare<
      [{ clientId: string; brokerId: string; brokerCounter: number | null; messageId: number | null }],
      { seq: number; bytes: number; same: number }
    >(
      `SELECT seq, bytes, (broker_id = @brokerId AND broker_counter IS @brokerCounter) AS same
       FROM broker_outgoing
       WHERE client_id = @clientId
         AND ((broker_id = @brokerId AND broker_counter IS @brokerCounter)
              OR (message_id = @messageId AND (broker_id IS NULL OR broker_id <> @brokerId)))
       ORDER BY seq LIMIT 1`,
    ),
    outFindByMessage: db.prepare<[string, number], { seq: number; bytes: number }>(
      'SELECT seq, bytes FROM broker_outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1',
    ),
    outSetMessageId: db.prepare<[number, number]>('UPDATE broker_outgoing SET message_id = ? WHERE seq = ?'),
    outReplace: db.prepare<
      [string, string | null, number | null, number | null, string, Buffer | null, number, number, number]
    >(
      `UPDATE broker_outgoing SET cmd = ?, broker_id = ?, broker_counter = ?, message_id = ?,
         header = ?, payload = ?, payload_kind = ?, bytes = ? WHERE seq = ?`,
    ),
    outClearByMessage: db.prepare<[string, number], OutgoingRow>(
      `DELETE FROM broker_outgoing WHERE seq =
         (SELECT seq FROM broker_outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1)
       RETURNING seq, message_id, header, payload, payload_kind, bytes`,
    ),
    outClearUnassigned: db.prepare<[string, string, number], OutgoingRow>(
      `DELETE FROM broker_outgoing WHERE seq =
         (SELECT seq FROM broker_outgoing
          WHERE client_id = ? AND broker_id = ? AND broker_counter = ? AND message_id IS NULL ORDER BY seq LIMIT 1)
       RETURNING seq, message_id, header, payload, payload_kind, bytes`,
    ),
    outPage: db.prepare<[string, number, number, number], OutgoingRow>(
      `SELECT seq, message_id, header, payload, payload_kind, bytes FROM broker_outgoing
       WHERE client_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
    ),
    outMaxSeq: db.prepare<[string], number | null>('SELECT MAX(seq) FROM broker_outgoing WHERE client_id = ?').pluck(),
    outDeleteClient: db.prepare<[string]>('DELETE FROM broker_outgoing WHERE client_id = ?'),
    outCounters: db.prepare<[], { client_id: string; count: number; bytes: number }>(
      'SELECT client_id, COUNT(*) AS count, SUM(bytes) AS bytes FROM broker_outgoing GROUP BY client_id',
    ),
    outMaxCounter: db.prepare<[string], number | null>(
      'SELECT MAX(broker_counter) FROM broker_outgoing WHERE broker_id = ?',
    ).pluck(),

    inUpsert: db.prepare<[string, number, string, Buffer | null, number, number]>(
      `INSERT INTO broker_incoming (client_id, message_id, header, payload, payload_kind, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (client_id, message_id) DO UPDATE SET
         header = excluded.header, payload = excluded.payload, payload_kind = excluded.payload_kind,
         stored_at = excluded.stored_at`,
    ),
    inGet: db.prepare<[string, number], EncodedRow>(
      'SELECT header, payload, payload_kind FROM broker_incoming WHERE client_id = ? AND message_id = ?',
    ),
    inDelete: db.prepare<[string, number]>('DELETE FROM broker_incoming WHERE client_id = ? AND message_id = ?'),
    inDeleteClient: db.prepare<[string]>('DELETE FROM broker_incoming WHERE client_id = ?'),

    willUpsert: db.prepare<[string, string | null, string, Buffer | null, number, number]>(
      `INSERT INTO broker_wills (client_id, broker_id, header, payload, payload_kind, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET
         broker_id = excluded.broker_id, header = excluded.header, payload = excluded.payload,
         payload_kind = excluded.payload_kind, stored_at = excluded.stored_at`,
    ),
    willGet: db.prepare<[string], WillRow>(
      'SELECT client_id, broker_id, header, payload, payload_kind FROM broker_wills WHERE client_id = ?',
    ),
    willDelete: db.prepare<[string], WillRow>(
      'DELETE FROM broker_wills WHERE client_id = ? RETURNING client_id, broker_id, header, payload, payload_kind',
    ),
    willPageFrom: db.prepare<[string, number], WillRow>(
      `SELECT client_id, broker_id, header, payload, payload_kind FROM broker_wills
       WHERE client_id >= ? ORDER BY client_id LIMIT ?`,
    ),
    willPageAfter: db.prepare<[string, number], WillRow>(
      `SELECT client_id, broker_id, header, payload, payload_kind FROM broker_wills
       WHERE client_id > ? ORDER BY client_id LIMIT ?`,
    ),
    willRestamp: db.prepare<[string, string]>('UPDATE broker_wills SET broker_id = ? WHERE broker_id = ?'),
  }
}

type Statements = ReturnType<typeof prepareStatements>

/** Multi-statement writes, each one transaction; created once per setup() like the statements. */
function prepareTransactions(db: Database, s: Statements) {
  return {
    storeRetained: db.transaction((topic: string, enc: EncodedPacket, now: number): number => {
      const existed = s.retainedDelete.run(topic).changes
      s.retainedInsert.run(topic, enc.header, enc.payload, enc.payloadKind, enc.bytes, now)
      return existed
    }),
    addSubscriptions: db.transaction((clientId: string, subs: readonly PersistedSubscription[]): void => {
      for (const sub of subs) {
        s.subUpsert.run(
          clientId,
          sub.topic,
          sub.qos,
          numberOrNull(sub.rh),
          boolColumn(sub.rap),
          boolColumn(sub.nl),
          numberOrNull(sub.subscriptionIdentifier),
        )
      }
    }),
    /** Returns the topics that had QoS > 0 (those are in the trie). */
    removeSubscriptions: db.transaction((clientId: string, topics: readonly string[]): string[] => {
      const removed: string[] = []
      for (const topic of topics) {
        const row = s.subDelete.get(clientId, topic)
        if (row !== undefined && row.qos > 0) removed.push(topic)
      }
      return removed
    }),
    cleanSession: db.transaction((clientId: string): { topic: string; qos: number }[] => {
      const rows = s.subDeleteClient.all(clientId)
      s.outDeleteClient.run(clientId)
      return rows
    }),
  }
}

type Transactions = ReturnType<typeof prepareTransactions>

// ---------------------------------------------------------------------------

export class SqlitePersistence {
  readonly #db: Database
  readonly #log: Logger
  readonly #maxCount: number
  readonly #maxBytes: number
  readonly #dropLogIntervalMs: number
  readonly #now: () => number

  #broker: PersistenceBroker | undefined
  #stmts: Statements | undefined
  #tx: Transactions | undefined
  #destroyed = false
  #trie: QlobberSubInstance = new QlobberSub(TRIE_OPTIONS)
  #queues = new Map<string, QueueCounters>()
  #queuedTotal = 0
  #queuedBytesTotal = 0
  #retainedCount = 0
  #dropped = 0
  #droppedByReason: Record<DropReason, number> = { 'queue-full': 0, 'too-large': 0 }
  #dropsSinceLog = new Map<string, number>()
  #reasonsSinceLog: Record<DropReason, number> = { 'queue-full': 0, 'too-large': 0 }
  #lastDropLogAt = Number.NEGATIVE_INFINITY

  #txEnqueue: ((rows: readonly EnqueueRow[]) => EnqueueOutcome) | undefined

  /** No I/O: statements are prepared and state is loaded by setup(). */
  constructor(options: SqlitePersistenceOptions) {
    const maxCount = options.maxOfflineMessagesPerClient ?? DEFAULT_MAX_OFFLINE_MESSAGES_PER_CLIENT
    const maxBytes = options.maxOfflineBytesPerClient ?? DEFAULT_MAX_OFFLINE_BYTES_PER_CLIENT
    const interval = options.dropLogIntervalMs ?? DEFAULT_DROP_LOG_INTERVAL_MS
    if (!Number.isInteger(maxCount) || maxCount < 1) {
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', `maxOfflineMessagesPerClient must be an integer >= 1, got ${maxCount}`)
    }
    if (!Number.isInteger(maxBytes) || maxBytes < 1) {
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', `maxOfflineBytesPerClient must be an integer >= 1, got ${maxBytes}`)
    }
    if (!(interval >= 0)) {
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', `dropLogIntervalMs must be >= 0, got ${interval}`)
    }
    this.#db = options.db
    this.#log = options.logger.child({ component: 'broker-persistence' })
    this.#maxCount = maxCount
    this.#maxBytes = maxBytes
    this.#dropLogIntervalMs = interval
    this.#now = options.now ?? Date.now
  }

  /** The broker given to setup() (aedes-persistence's abstract suite reads broker.id through it). */
  get broker(): PersistenceBroker | undefined {
    return this.#broker
  }

  /**
   * Called by aedes' listen(). Creates the tables if needed, prepares the
   * statements and loads the in-memory index. Also:
   * - raises `broker.counter` past every brokerCounter still queued under
   *   `broker.id`, so a broker restarted with a fixed `id` does not hand out a
   *   (brokerId, brokerCounter) pair that outgoingUpdate() would confuse with
   *   an old queued row;
   * - re-stamps wills left under `broker.id` by a previous run (no client is
   *   connected yet, so they belong to sessions that died with it) with a
   *   broker id that is not alive, so aedes' will sweep publishes them, as it
   *   does for wills of any dead broker.
   */
  async setup(broker: PersistenceBroker): Promise<void> {
    if (this.#destroyed) throw stopped()
    const started = this.#now()
    this.#broker = broker
    try {
      applyMigrations(this.#db, AEDES_PERSISTENCE_MIGRATIONS, this.#log)
      const s = prepareStatements(this.#db)
      this.#stmts = s
      this.#tx = prepareTransactions(this.#db, s)
      this.#txEnqueue = this.#db.transaction((rows: readonly EnqueueRow[]) => this.#enqueueRows(s, rows))

      const trie = new QlobberSub(TRIE_OPTIONS)
      for (const row of s.subsQosPositive.iterate()) trie.add(row.topic, subscriberFromRow(row))
      this.#trie = trie

      this.#queues = new Map()
      this.#queuedTotal = 0
      this.#queuedBytesTotal = 0
      for (const row of s.outCounters.all()) {
        this.#queues.set(row.client_id, { count: row.count, bytes: row.bytes })
        this.#queuedTotal += row.count
        this.#queuedBytesTotal += row.bytes
      }
      this.#retainedCount = s.retainedCount.get() ?? 0

      const maxCounter = s.outMaxCounter.get(broker.id) ?? 0
      if (typeof broker.counter === 'number' && broker.counter < maxCounter) broker.counter = maxCounter
      const restamped = s.willRestamp.run(`${broker.id}:before-restart`, broker.id).changes

      this.#log.info(
        {
          retained: this.#retainedCount,
          subscriptions: trie.subscriptionsCount,
          queuedMessages: this.#queuedTotal,
          clientsWithQueuedMessages: this.#queues.size,
          staleWills: restamped,
          ms: this.#now() - started,
        },
        'broker persistence loaded',
      )
    } catch (err) {
      this.#stmts = undefined
      this.#tx = undefined
      throw toBufferError(err, 'broker persistence setup')
    }
  }

  // -- retained -------------------------------------------------------------

  async storeRetained(packet: PersistedPacket): Promise<void> {
    const s = this.#ready()
    const topic = packet.topic ?? ''
    const payload = packet.payload
    const empty = payload === undefined || payload.length === 0
    try {
      if (empty) {
        const removed = s.retainedDelete.run(topic).changes
        this.#retainedCount -= removed
        return
      }
      const existed = this.#transactions().storeRetained(topic, encodePacket(packet), this.#now())
      this.#retainedCount += 1 - existed
    } catch (err) {
      throw toBufferError(err, 'broker persistence store retained')
    }
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern])
  }

  /** Retained messages matching any of `patterns`, each once, in topic order. */
  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    let s: Statements
    try {
      s = this.#ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(retainedMatches(s, patterns))
  }

  // -- subscriptions --------------------------------------------------------

  async addSubscriptions(client: PersistenceClient, subs: readonly PersistedSubscription[]): Promise<void> {
    const tx = this.#transactions()
    const clientId = client.id
    try {
      tx.addSubscriptions(clientId, subs)
    } catch (err) {
      throw toBufferError(err, 'broker persistence add subscriptions')
    }
    // committed: now the index (same order as the rows, so the last write of a topic wins)
    for (const sub of subs) {
      if (sub.qos > 0) {
        this.#trie.add(sub.topic, { clientId, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl })
      } else {
        this.#trie.remove(sub.topic, { clientId, topic: sub.topic })
      }
    }
  }

  async removeSubscriptions(client: PersistenceClient, topics: readonly string[]): Promise<void> {
    const tx = this.#transactions()
    const clientId = client.id
    let removed: string[]
    try {
      removed = tx.removeSubscriptions(clientId, topics)
    } catch (err) {
      throw toBufferError(err, 'broker persistence remove subscriptions')
    }
    for (const topic of removed) this.#trie.remove(topic, { clientId, topic })
  }

  async subscriptionsByClient(client: PersistenceClient): Promise<PersistedSubscription[]> {
    const s = this.#ready()
    const rows = s.subsByClient.all(client.id)
    return rows.map((r) => {
      const sub: PersistedSubscription = {
        topic: r.topic,
        qos: r.qos,
        rh: r.rh ?? undefined,
        rap: r.rap === null ? undefined : r.rap === 1,
        nl: r.nl === null ? undefined : r.nl === 1,
      }
      if (r.subscription_identifier !== null) sub.subscriptionIdentifier = r.subscription_identifier
      return sub
    })
  }

  /** QoS > 0 subscriptions matching a published topic: answered from memory. */
  /** A persistent session has a QoS > 0 subscription matching `topic` (a publish to it will be queued). Synchronous. */
  hasQueuingSubscribers(topic: string): boolean {
    return this.#trie.match(topic).length > 0
  }

  subscriptionsByTopic(topic: string): Promise<TopicSubscriber[]> {
    try {
      this.#ready()
    } catch (err) {
      return Promise.reject(err)
    }
    // aedes asks for every QoS > 0 publish; with no persistent subscription
    // (the usual gateway) there is nothing to walk and nothing to allocate.
    if (this.#trie.subscriptionsCount === 0) return NO_SUBSCRIBERS
    return Promise.resolve(this.#trie.match(topic))
  }

  /** QoS > 0 subscriptions (subsCount) and clients with any stored subscription (clientsCount). */
  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    const s = this.#ready()
    const c = s.subCounts.get()
    return { subsCount: c?.qosSubs ?? 0, clientsCount: c?.clients ?? 0 }
  }

  /**
   * The session is discarded (aedes: CONNECT with clean=true): its
   * subscriptions and its outgoing queue go, in one transaction. aedes would
   * otherwise drain the queue row by row right after ([MQTT-3.1.2-6]).
   */
  async cleanSubscriptions(client: PersistenceClient): Promise<void> {
    const tx = this.#transactions()
    const clientId = client.id
    let rows: { topic: string; qos: number }[]
    try {
      rows = tx.cleanSession(clientId)
    } catch (err) {
      throw toBufferError(err, 'broker persistence clean subscriptions')
    }
    for (const r of rows) if (r.qos > 0) this.#trie.remove(r.topic, { clientId, topic: r.topic })
    this.#setQueue(clientId, { count: 0, bytes: 0 })
  }

  /** Readable of client ids holding a subscription with exactly this filter. */
  getClientList(topic: string): Readable {
    let s: Statements
    try {
      s = this.#ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(s.clientsByTopic.all(topic))
  }

  // -- outgoing -------------------------------------------------------------

  async outgoingEnqueue(sub: { clientId: string; qos?: number | undefined }, packet: PersistedPacket): Promise<void> {
    this.#enqueue([sub], packet)
  }

  /**
   * One transaction for every subscriber: aedes calls this once per QoS > 0
   * PUBLISH with the subscriptionsByTopic() result. Each copy is stored at
   * min(packet QoS, subscription QoS).
   */
  outgoingEnqueueCombi(subs: readonly { clientId: string; qos?: number | undefined }[], packet: PersistedPacket): Promise<void> {
    try {
      this.#ready()
      if (subs.length === 0) return DONE
      this.#enqueue(subs, packet)
      return DONE
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * aedes calls this before writing a queued packet (to record the messageId
   * it assigned) and on PUBREC (to replace the PUBLISH by its PUBREL). The
   * row is the first, in queue order, that either comes from the same broker
   * with the same brokerCounter (the messageId is set), or carries the same
   * messageId under another broker id (the row is replaced by `packet`), the
   * same rule as the reference implementation. Differences, both to keep a
   * bounded queue from disconnecting clients: an unknown PUBLISH (its row was
   * dropped by the bound) is a no-op, and an unknown PUBREL is appended, since
   * the QoS 2 handshake it continues still has to survive a restart.
   */
  async outgoingUpdate(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.#ready()
    const clientId = client.id
    const messageId = numberOrNull(packet.messageId)
    const brokerId = stringOrNull(packet.brokerId)
    try {
      if (brokerId !== null) {
        const row = s.outFindForUpdate.get({ clientId, brokerId, brokerCounter: numberOrNull(packet.brokerCounter), messageId })
        if (row !== undefined) {
          if (row.same === 1) {
            if (messageId !== null) s.outSetMessageId.run(messageId, row.seq)
          } else {
            this.#replaceRow(s, clientId, row, packet)
          }
          return
        }
      } else if (messageId !== null) {
        const byMessage = s.outFindByMessage.get(clientId, messageId)
        if (byMessage !== undefined) {
          this.#replaceRow(s, clientId, byMessage, packet)
          return
        }
      }
      if (packet.cmd === 'pubrel' && messageId !== null) {
        this.#log.debug({ clientId, messageId }, 'pubrel for an unqueued message appended')
        this.#enqueue([{ clientId }], packet, 'pubrel')
        return
      }
      this.#log.debug({ clientId, messageId, brokerCounter: packet.brokerCounter }, 'outgoing update for an unqueued packet ignored')
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing update')
    }
  }

  /**
   * Removes the first queued row with `packet.messageId` (PUBACK, PUBCOMP)
   * and resolves with it, or with undefined if there is none. A packet whose
   * messageId is not assigned yet (aedes does this when it dedupes a message
   * matched by two of the client's subscriptions) removes the unassigned copy
   * with the same brokerId/brokerCounter.
   */
  async outgoingClearMessageId(client: PersistenceClient, packet: PersistedPacket | number): Promise<PersistedPacket | undefined> {
    const s = this.#ready()
    if (typeof packet !== 'object' || packet === null) return undefined
    const clientId = client.id
    const messageId = numberOrNull(packet.messageId)
    try {
      let row: OutgoingRow | undefined
      if (messageId !== null) {
        row = s.outClearByMessage.get(clientId, messageId)
      } else {
        const brokerId = stringOrNull(packet.brokerId)
        const counter = numberOrNull(packet.brokerCounter)
        if (brokerId !== null && counter !== null) row = s.outClearUnassigned.get(clientId, brokerId, counter)
      }
      if (row === undefined) return undefined
      this.#adjustQueue(clientId, -1, -row.bytes)
      return decodeOutgoing(row)
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing clear')
    }
  }

  /**
   * The client's queue as it is now (rows enqueued after this call are not
   * included), oldest first, read in pages of 128 rows.
   */
  outgoingStream(client: PersistenceClient): Readable {
    let s: Statements
    try {
      s = this.#ready()
    } catch (err) {
      return streamError(err as Error)
    }
    const clientId = client.id
    const last = s.outMaxSeq.get(clientId) ?? 0
    return Readable.from(outgoingRows(s, clientId, last))
  }

  // -- incoming (QoS 2 received, awaiting PUBREL) ---------------------------

  async incomingStorePacket(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.#ready()
    const stored = new AedesPacket(packet)
    stored.messageId = packet.messageId
    const enc = encodePacket(stored)
    try {
      s.inUpsert.run(client.id, numberOrNull(packet.messageId) ?? 0, enc.header, enc.payload, enc.payloadKind, this.#now())
    } catch (err) {
      throw toBufferError(err, 'broker persistence incoming store')
    }
  }

  async incomingGetPacket(client: PersistenceClient, packet: { messageId?: number | undefined }): Promise<PersistedPacket> {
    const s = this.#ready()
    const row = s.inGet.get(client.id, numberOrNull(packet.messageId) ?? -1)
    if (row === undefined) throw noSuchPacket()
    return decodePacket(row)
  }

  async incomingDelPacket(client: PersistenceClient, packet: { messageId?: number | undefined }): Promise<void> {
    const s = this.#ready()
    let changes: number
    try {
      changes = s.inDelete.run(client.id, numberOrNull(packet.messageId) ?? -1).changes
    } catch (err) {
      throw toBufferError(err, 'broker persistence incoming delete')
    }
    if (changes === 0) throw noSuchPacket()
  }

  /** Every inbound QoS 2 packet of the client (aedes: clean session start and end, [MQTT-3.1.2-6]). */
  async cleanIncoming(client: PersistenceClient): Promise<void> {
    const s = this.#ready()
    try {
      s.inDeleteClient.run(client.id)
    } catch (err) {
      throw toBufferError(err, 'broker persistence clean incoming')
    }
  }

  // -- wills ------------------------------------------------------------------

  /** Stores the will stamped with this broker's id and the client id (set on `packet`, as the reference does). */
  async putWill(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.#ready()
    packet.brokerId = this.#broker?.id
    packet.clientId = client.id
    const enc = encodePacket(packet)
    try {
      s.willUpsert.run(client.id, stringOrNull(packet.brokerId), enc.header, enc.payload, enc.payloadKind, this.#now())
    } catch (err) {
      throw toBufferError(err, 'broker persistence put will')
    }
  }

  async getWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    const s = this.#ready()
    const row = s.willGet.get(client.id)
    return row === undefined ? undefined : decodeWill(row)
  }

  async delWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    const s = this.#ready()
    let row: WillRow | undefined
    try {
      row = s.willDelete.get(client.id)
    } catch (err) {
      throw toBufferError(err, 'broker persistence delete will')
    }
    return row === undefined ? undefined : decodeWill(row)
  }

  /** Wills whose broker is not in `brokers` (aedes: the brokers it heard a heartbeat from). */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    let s: Statements
    try {
      s = this.#ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(willsOfDeadBrokers(s, brokers))
  }

  // -- lifecycle and observability ---------------------------------------------

  /**
   * Forgets statements and the in-memory index. Idempotent. Does not close the
   * database, which belongs to the agent.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#flushDropLog()
    this.#destroyed = true
    this.#stmts = undefined
    this.#tx = undefined
    this.#txEnqueue = undefined
    this.#trie.clear()
    this.#queues.clear()
  }

  /** Counters for metrics; the two subscription figures cost one indexed COUNT query. */
  stats(): SqlitePersistenceStats {
    const s = this.#stmts
    const c = s?.subCounts.get()
    return {
      retainedMessages: this.#retainedCount,
      persistentSessions: c?.clients ?? 0,
      subscriptions: c?.subs ?? 0,
      queuedMessages: this.#queuedTotal,
      queuedBytes: this.#queuedBytesTotal,
      clientsWithQueuedMessages: this.#queues.size,
      droppedMessages: this.#dropped,
      droppedTooLarge: this.#droppedByReason['too-large'],
    }
  }

  // -- internals ----------------------------------------------------------------

  #ready(): Statements {
    if (this.#destroyed) throw stopped()
    const s = this.#stmts
    if (s === undefined) {
      throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'broker persistence used before setup()')
    }
    return s
  }

  #transactions(): Transactions {
    this.#ready()
    const tx = this.#tx
    if (tx === undefined) throw stopped()
    return tx
  }

  /**
   * Queue `packet` for each target, bounds applied, in one transaction.
   * A PUBLISH is stored at min(packet QoS, subscription QoS) when the target
   * carries its subscription's QoS ([MQTT-3.8.4-6]: aedes does not downgrade
   * messages it replays from the queue, only live ones). `pubrel`: a PUBREL
   * appended by outgoingUpdate, stored as given and exempt from eviction (it
   * continues a message the queue already paid for).
   */
  #enqueue(
    targets: readonly { clientId: string; qos?: number | undefined }[],
    packet: PersistedPacket,
    kind: 'publish' | 'pubrel' = 'publish',
  ): void {
    this.#ready()
    const tx = this.#txEnqueue
    if (tx === undefined) throw stopped()
    // The reference stores a fresh aedes Packet: the fields aedes keeps, with
    // messageId reset (assigned later by outgoingUpdate).
    const base = kind === 'publish' ? new AedesPacket(packet) : packet
    const baseQos = typeof base.qos === 'number' ? base.qos : 0
    const byQos = new Map<number, QueuedEncoding>()
    const rows: EnqueueRow[] = []
    for (const target of targets) {
      const qos =
        kind === 'publish' && typeof target.qos === 'number' && target.qos >= 1 && target.qos < baseQos ? target.qos : baseQos
      let e = byQos.get(qos)
      if (e === undefined) {
        e = queuedEncoding(qos === baseQos ? base : { ...base, qos }, kind === 'publish')
        byQos.set(qos, e)
      }
      if (e.enc.bytes > this.#maxBytes) {
        // can never fit: refusing it is the only way to keep the bound
        this.#recordDrop(target.clientId, 1, 'too-large')
        continue
      }
      rows.push({ clientId: target.clientId, e })
    }
    if (rows.length === 0) return
    let outcome: EnqueueOutcome
    try {
      outcome = tx(rows)
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing enqueue')
    }
    for (const [id, q] of outcome.queues) this.#setQueue(id, q)
    for (const [id, n] of outcome.drops) this.#recordDrop(id, n, 'queue-full')
  }

  /** Runs inside the enqueue transaction; touches no instance state (a rollback must leave memory as it was). */
  #enqueueRows(s: Statements, rows: readonly EnqueueRow[]): EnqueueOutcome {
    const queues = new Map<string, QueueCounters>()
    const drops = new Map<string, number>()
    const now = this.#now()
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
      while (meta.evict && (q.count > this.#maxCount || q.bytes > this.#maxBytes)) {
        const dropped = s.outDropOldest.get(clientId)
        if (dropped === undefined) break // only PUBREL rows left: they are never dropped
        q.count -= 1
        q.bytes -= dropped.bytes
        drops.set(clientId, (drops.get(clientId) ?? 0) + 1)
      }
    }
    return { queues, drops }
  }

  #replaceRow(s: Statements, clientId: string, row: { seq: number; bytes: number }, packet: PersistedPacket): void {
    const enc = encodePacket(packet)
    s.outReplace.run(
      typeof packet.cmd === 'string' ? packet.cmd : 'publish',
      stringOrNull(packet.brokerId),
      numberOrNull(packet.brokerCounter),
      numberOrNull(packet.messageId),
      enc.header,
      enc.payload,
      enc.payloadKind,
      enc.bytes,
      row.seq,
    )
    this.#adjustQueue(clientId, 0, enc.bytes - row.bytes)
  }

  #setQueue(clientId: string, q: QueueCounters): void {
    const before = this.#queues.get(clientId)
    this.#queuedTotal += q.count - (before?.count ?? 0)
    this.#queuedBytesTotal += q.bytes - (before?.bytes ?? 0)
    if (q.count <= 0) this.#queues.delete(clientId)
    else this.#queues.set(clientId, q)
  }

  #adjustQueue(clientId: string, count: number, bytes: number): void {
    const q = this.#queues.get(clientId) ?? { count: 0, bytes: 0 }
    this.#setQueue(clientId, { count: q.count + count, bytes: q.bytes + bytes })
  }

  #recordDrop(clientId: string, n: number, reason: DropReason): void {
    this.#dropped += n
    this.#droppedByReason[reason] += n
    this.#dropsSinceLog.set(clientId, (this.#dropsSinceLog.get(clientId) ?? 0) + n)
    this.#reasonsSinceLog[reason] += n
    // the first drop after a quiet interval is logged at once, later ones are summed
    if (this.#now() - this.#lastDropLogAt >= this.#dropLogIntervalMs) this.#flushDropLog()
  }

  /** One warning per interval: how many were dropped since the last one, why, and for how many clients. */
  #flushDropLog(): void {
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
    this.#log.warn(
      {
        dropped,
        queueFull: this.#reasonsSinceLog['queue-full'],
        tooLarge: this.#reasonsSinceLog['too-large'],
        clients: this.#dropsSinceLog.size,
        clientId: topClient,
        droppedTotal: this.#dropped,
        maxOfflineMessagesPerClient: this.#maxCount,
        maxOfflineBytesPerClient: this.#maxBytes,
      },
      'offline messages dropped',
    )
    this.#dropsSinceLog.clear()
    this.#reasonsSinceLog = { 'queue-full': 0, 'too-large': 0 }
    this.#lastDropLogAt = this.#now()
  }
}

/** queue-full: evicted as the oldest of a full queue; too-large: bigger than the whole byte bound, never queued. */
type DropReason = 'queue-full' | 'too-large'

interface RowMeta {
  cmd: string
  brokerId: string | null
  brokerCounter: number | null
  messageId: number | null
  /** Drop the client's oldest PUBLISH rows while over a bound. */
  evict: boolean
}

interface QueuedEncoding {
  enc: EncodedPacket
  meta: RowMeta
}

interface EnqueueRow {
  clientId: string
  e: QueuedEncoding
}

function queuedEncoding(packet: PersistedPacket, evict: boolean): QueuedEncoding {
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

interface EnqueueOutcome {
  queues: Map<string, QueueCounters>
  drops: Map<string, number>
}

/** Factory form of `new SqlitePersistence(options)`; pass the result to `Aedes.createBroker({ persistence })`. */
export function createSqlitePersistence(options: SqlitePersistenceOptions): SqlitePersistence {
  return new SqlitePersistence(options)
}

function stopped(): BufferError {
  return new BufferError('EDGE_ERR_BUFFER_STOPPED', 'broker persistence destroyed')
}

function noSuchPacket(): BufferError {
  // An expected answer, not a fault: aedes asks for an inbound QoS 2 packet to
  // learn whether it is a duplicate.
  return new BufferError('EDGE_ERR_BUFFER_INVALID', 'no such packet')
}

// Each prefix is a range scan of the primary key (topic >= prefix, stopping
// at the first topic without it); the filters then decide. Ranges of
// scanPrefixes() are disjoint, so no message is yielded twice.
function* retainedMatches(s: Statements, patterns: readonly string[]): Generator<PersistedPacket> {
  nextPrefix: for (const prefix of scanPrefixes(patterns)) {
    let rows = s.retainedPageFrom.all(prefix, PAGE_SIZE)
    while (rows.length > 0) {
      for (const row of rows) {
        if (!row.topic.startsWith(prefix)) continue nextPrefix
        if (patterns.some((p) => topicMatches(p, row.topic))) yield decodePacket(row)
      }
      const last = rows[rows.length - 1]
      if (last === undefined || rows.length < PAGE_SIZE) continue nextPrefix
      rows = s.retainedPageAfter.all(last.topic, PAGE_SIZE)
    }
  }
}

function* outgoingRows(s: Statements, clientId: string, lastSeq: number): Generator<PersistedPacket> {
  let after = 0
  for (;;) {
    const rows = s.outPage.all(clientId, after, lastSeq, PAGE_SIZE)
    for (const row of rows) yield decodeOutgoing(row)
    const last = rows[rows.length - 1]
    if (last === undefined || rows.length < PAGE_SIZE) return
    after = last.seq
  }
}

function* willsOfDeadBrokers(s: Statements, brokers: Readonly<Record<string, unknown>>): Generator<PersistedPacket> {
  let rows = s.willPageFrom.all('', PAGE_SIZE)
  for (;;) {
    for (const row of rows) {
      const id = row.broker_id ?? ''
      const alive = Object.prototype.hasOwnProperty.call(brokers, id) && Boolean(brokers[id])
      if (!alive) yield decodeWill(row)
    }
    const last = rows[rows.length - 1]
    if (last === undefined || rows.length < PAGE_SIZE) return
    rows = s.willPageAfter.all(last.client_id, PAGE_SIZE)
  }
}
