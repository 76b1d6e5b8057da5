// Public types of the broker state: what aedes hands the persistence and
// gets back, the options and the stats.
import type BetterSqlite3 from 'better-sqlite3'
import type { Logger } from 'pino'

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

export interface BrokerStateOptions {
  /** The agent's open database (see openDatabase). Shared, never closed here. */
  db: Database
  /** Parent logger; a child `{ component: 'broker-state' }` is used. */
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

export interface BrokerStateStats {
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
