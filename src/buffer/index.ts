// Public surface of the buffer component. A plain list of re-exports: other
// folders import only from here (the bridge: `import type { MessageStore }`).
export { BufferError, isBufferError, type BufferErrorCode, type FullReason } from '../storage/index.js'
export {
  type AppendInput,
  type AppendResult,
  type BufferHealth,
  type BufferStats,
  type CommitInfo,
  type Conflation,
  type DegradedReason,
  type DropReason,
  type FullPolicy,
  type HandedOutDropReason,
  type MessageExport,
  type MessageProperties,
  type MessageStore,
  type MessageStoreEvents,
  type PeekedMessage,
  type QueueStats,
  type StoredMessage,
  DROP_REASONS,
  FULL_POLICIES,
  ROW_OVERHEAD_BYTES,
  estimateMessageBytes,
} from './message-store.js'
export { MESSAGE_STORE_MIGRATIONS } from './message-schema.js'
export { type LossReport, type LossReportTarget, LOSS_REPORT_RULE } from './loss-report.js'
export {
  type DropEvent,
  type DurableDropTotals,
  type LedgerQuery,
  type LedgerRange,
  COALESCE_MS,
  DEFAULT_MAX_LEDGER_ROWS,
  readDurableTotals,
  readRanges,
} from './drop-ledger.js'
export { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js'
export { MemoryStore, type MemoryStoreOptions } from './memory-store.js'
export { RUN_FILE_NAME, type LastRun, type PowerLoss } from './continuity.js'
export { BufferInspector, BUFFER_FILE_NAME, type QueueSummary } from './inspect.js'
