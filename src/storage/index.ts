// Public surface of the storage base: the agent's one SQLite file (open,
// pragmas and durability, WAL fsync, migrations of several owners,
// quarantine, free disk space) and the errors of everything stored in it.
// The buffer and the broker state both build on it; it imports neither.
export {
  BufferError,
  isBufferError,
  isCorruptionCode,
  sqliteCodeOf,
  toBufferError,
  type BufferErrorCode,
  type BufferErrorOptions,
  type FullReason,
} from './errors.js'
export {
  type Durability,
  type OpenDatabaseOptions,
  type PragmaRunner,
  type SqliteDatabase,
  applyDurability,
  openDatabase,
} from './database.js'
export { type Migration, CORE_MIGRATIONS, applyMigrations } from './migrations.js'
export { type QuarantineRecord, readQuarantineLog } from './quarantine.js'
export { DiskSpace, defaultStatFs, type StatFs } from './disk-space.js'
export { WalSync, type FsOps } from './wal-sync.js'
export { FSYNC_BUCKETS_SEC, FsyncTimings, STALL_SEC, emptyHistogram, type DurationHistogram } from './fsync-timings.js'
export { fsyncDir, mkdirDurable } from './dir-sync.js'
