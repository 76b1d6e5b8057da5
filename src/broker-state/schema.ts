// The broker state's tables (prefixed `setupBroker`) in the agent's shared
// SQLite file. The migration id keeps its original 'aedes/' namespace: ids
// are recorded in existing files and must never change.
import type BetterSqlite3 from 'better-sqlite3'
import type { Migration } from '../storage/index.js'
import { SESSION_EXPIRY_SQL } from './session-expiry.js'

type Database = BetterSqlite3.Database

/**
 * Create the setupBroker* tables and indexes if missing. Idempotent, one
 * transaction (a savepoint when called inside one). This is the `up` of
 * BROKER_STATE_MIGRATIONS; call it directly only on a database that is
 * not managed by openDatabase().
 */
export function migrateBrokerState(db: Database): void {
  db.transaction(() => {
    db.exec(SCHEMA_SQL)
    db.exec(SESSION_EXPIRY_SQL)
  })()
}

/**
 * The persistence's schema for openDatabase()'s migration hook:
 * `openDatabase(path, { migrations: [...MESSAGE_STORE_MIGRATIONS, ...BROKER_STATE_MIGRATIONS] })`.
 * setup() applies them as well (a no-op once recorded in schema_migrations).
 */
export const BROKER_STATE_MIGRATIONS: readonly Migration[] = [
  { id: 'aedes/001-broker-state', up: migrateBrokerState },
  // MQTT 5 Session Expiry Interval deadlines (session-expiry.ts)
  { id: 'aedes/002-session-expiry', up: (db) => db.transaction(() => db.exec(SESSION_EXPIRY_SQL))() },
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

/** Names of the tables migrateBrokerState() creates (for purge/inspection tooling and tests). */
export const BROKER_STATE_TABLES = [
  'broker_retained',
  'broker_subscriptions',
  'broker_outgoing',
  'broker_incoming',
  'broker_wills',
  'broker_session_expiry',
] as const
