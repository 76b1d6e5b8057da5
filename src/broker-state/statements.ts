// Rows, prepared statements and multi-statement transactions of the broker
// state, created by setup() once the tables exist, and the paged readers
// (never a whole table at once: invariant 3 of persistence.ts).
import { Readable } from 'node:stream'
import type BetterSqlite3 from 'better-sqlite3'
import { decodePacket, type EncodedPacket, type EncodedRow } from './packet-codec.js'
import { scanPrefixes, topicMatches } from './topic-match.js'
import type { PersistedPacket, PersistedSubscription, TopicSubscriber } from './types.js'

type Database = BetterSqlite3.Database

export interface SubscriptionRow {
  client_id: string
  topic: string
  qos: number
  rh: number | null
  rap: number | null
  nl: number | null
  subscription_identifier: number | null
}

export interface RetainedRow extends EncodedRow {
  topic: string
}

export interface OutgoingRow extends EncodedRow {
  seq: number
  message_id: number | null
  bytes: number
}

export interface WillRow extends EncodedRow {
  client_id: string
  broker_id: string | null
}

export interface QueueCounters {
  count: number
  bytes: number
}

export const PAGE_SIZE = 128

function boolColumn(v: boolean | undefined): number | null {
  return v === undefined || v === null ? null : v ? 1 : 0
}

export function numberOrNull(v: unknown): number | null {
  return typeof v === 'number' ? v : null
}

export function stringOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null
}

export function subscriberFromRow(r: SubscriptionRow): TopicSubscriber {
  return {
    clientId: r.client_id,
    topic: r.topic,
    qos: r.qos,
    rh: r.rh ?? undefined,
    rap: r.rap === null ? undefined : r.rap === 1,
    nl: r.nl === null ? undefined : r.nl === 1,
  }
}

export function decodeOutgoing(row: OutgoingRow): PersistedPacket {
  const packet = decodePacket(row)
  // message_id is authoritative (outgoingUpdate changes only the column);
  // the header records whether the key exists at all.
  if (row.message_id !== null) packet.messageId = row.message_id
  else if ('messageId' in packet) packet.messageId = undefined
  return packet
}

export function decodeWill(row: WillRow): PersistedPacket {
  const packet = decodePacket(row)
  if (row.broker_id !== null) packet.brokerId = row.broker_id
  return packet
}

export function streamError(err: Error): Readable {
  return new Readable({
    objectMode: true,
    read() {
      this.destroy(err)
    },
  })
}

export function prepareStatements(db: Database) {
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
    clientsByTopic: db
      .prepare<[string], string>('SELECT client_id FROM broker_subscriptions WHERE topic = ? ORDER BY id')
      .pluck(),
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
    outMaxCounter: db
      .prepare<[string], number | null>('SELECT MAX(broker_counter) FROM broker_outgoing WHERE broker_id = ?')
      .pluck(),

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

export type Statements = ReturnType<typeof prepareStatements>

/** Multi-statement writes, each one transaction; created once per setup() like the statements. */
export function prepareTransactions(db: Database, s: Statements) {
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

export type Transactions = ReturnType<typeof prepareTransactions>

// Each prefix is a range scan of the primary key (topic >= prefix, stopping
// at the first topic without it); the filters then decide. Ranges of
// scanPrefixes() are disjoint, so no message is yielded twice.
export function* retainedMatches(s: Statements, patterns: readonly string[]): Generator<PersistedPacket> {
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

export function* outgoingRows(s: Statements, clientId: string, lastSeq: number): Generator<PersistedPacket> {
  let after = 0
  for (;;) {
    const rows = s.outPage.all(clientId, after, lastSeq, PAGE_SIZE)
    for (const row of rows) yield decodeOutgoing(row)
    const last = rows[rows.length - 1]
    if (last === undefined || rows.length < PAGE_SIZE) return
    after = last.seq
  }
}

export function* willsOfDeadBrokers(
  s: Statements,
  brokers: Readonly<Record<string, unknown>>,
): Generator<PersistedPacket> {
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
