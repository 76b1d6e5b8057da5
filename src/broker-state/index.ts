// Public surface of the broker state: the local broker's retained messages,
// persistent sessions, offline queues and wills, in the storage base's
// shared SQLite file (aedes' persistence interface).
export { BrokerState, type DatabaseOwner } from './broker-state.js'
export { BrokerStatePersistence, createBrokerStatePersistence } from './persistence.js'
export { BROKER_STATE_MIGRATIONS, BROKER_STATE_TABLES, migrateBrokerState } from './schema.js'
export { decodePacket, encodePacket } from './packet-codec.js'
export { topicMatches } from './topic-match.js'
export {
  type BrokerStateOptions,
  type BrokerStateStats,
  type PersistedPacket,
  type PersistedSubscription,
  type PersistenceBroker,
  type PersistenceClient,
  type TopicSubscriber,
  DEFAULT_DROP_LOG_INTERVAL_MS,
  DEFAULT_MAX_OFFLINE_BYTES_PER_CLIENT,
  DEFAULT_MAX_OFFLINE_MESSAGES_PER_CLIENT,
} from './types.js'
