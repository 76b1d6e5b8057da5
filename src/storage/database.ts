// Opening the agent's SQLite file: pragmas on every open, migrations from
// several owners, and quarantine of a corrupt file. Shared by the message
// store and the broker state, which live in the same file.
//
// Durability — what each mode can lose on power failure or OS crash
// (all modes use WAL; a process crash / kill -9 loses nothing committed in
// any mode, per SQLite's pragma docs and our kill -9 test):
//   'full'   WAL, and the WAL is fsync'd after every commit before anything
//            in it is acknowledged, so every resolved append survives power
//            loss — provided the storage honours fsync (consumer SD cards may
//            not; see sqlite.org/howtocorrupt.html). Loses: only unresolved
//            appends, which were never acknowledged to a device. Default.
//            The connection runs at synchronous=NORMAL and the fsync is done
//            by wal-sync.ts in libuv's thread pool, which gives FULL's
//            guarantee without stopping the event loop for every fsync (see
//            there). Writes that nobody awaits (aedes persistence) are
//            synced within 200 ms.
//   'normal' WAL + synchronous=NORMAL (1). The WAL is fsync'd only at
//            checkpoints. The file stays consistent, but transactions
//            committed since the last checkpoint (up to wal_autocheckpoint
//            = 1000 pages ≈ 4 MiB of WAL) may roll back: acknowledged
//            messages can be lost, and acked (deleted) rows can come back as
//            duplicates.
//   'off'    WAL + synchronous=OFF (0). No fsync at all. Whatever the OS had
//            not written back (typically up to ~30 s of dirty pages) is
//            lost, and the file itself may be corrupted — the next start
//            then quarantines it, so everything in it is set aside.
// What a power cut took is reported at the next start (continuity.ts):
// acknowledged ids the file does not reach, or a file that no longer holds
// the store (quarantined: mustHoldStore), as drops with reason 'power-loss'.
//
// better-sqlite3 is compiled with SQLITE_DEFAULT_WAL_SYNCHRONOUS=1: every
// connection opened on an existing WAL database starts at NORMAL, silently.
// So `synchronous` is set on EVERY open
// and read back; if it does not read back as requested, or journal_mode is
// not 'wal', the open fails with EDGE_ERR_BUFFER_DURABILITY.
//
// Sharing one file between owners
// - Connections are shared per process: openDatabase() on a path that is
//   already open returns a new lease on the same connection (same
//   durability required, else EDGE_ERR_BUFFER_DURABILITY). Each lease's
//   close() releases it; the last one checkpoints the WAL
//   (wal_checkpoint(TRUNCATE)) and closes. The buffer and the aedes
//   persistence can therefore each call openDatabase(samePath) in their own
//   start(), in any order.
// - Migration hook: each owner passes its own list,
//   `openDatabase(path, { migrations: AEDES_MIGRATIONS, … })`, or calls
//   `lease.applyMigrations(list)` later. A migration is `{ id, up(db) }` with
//   a globally unique, never-changing id namespaced by its owner
//   ('buffer/001-messages', 'aedes/001-retained'); each runs once, in list
//   order, in its own transaction, and is recorded in `schema_migrations`.
//   Owners never depend on each other's tables. Ids found in the file but
//   unknown to this build (a downgrade) are left alone.
// - Rule for every user of a shared connection: never keep a transaction
//   open across an `await` (better-sqlite3 is synchronous; a transaction
//   that spans ticks would swallow the other owner's statements).
//
// Corrupt file at open (SQLITE_CORRUPT*, SQLITE_NOTADB, or PRAGMA
// quick_check not 'ok', checked on a read-only connection so that nothing
// — not even a WAL checkpoint at close — touches a damaged file before it
// is set aside): the file and its -wal/-shm are renamed to
// `<file>.corrupt-<UTC timestamp>` (+ '-wal'/'-shm', so the pair can still
// be opened to salvage rows), never deleted; an error line says where they
// went; a fresh file is created and the event is recorded in its
// `db_quarantine_log` table (so stats can report it after restarts). A file
// is never quarantined while this process holds it open, nor when the
// caller passes `quarantineCorrupt: false` (the CLI): those fail with
// EDGE_ERR_BUFFER_CORRUPT instead.
//
// Permissions: the directory is created 0700 and the database file 0600;
// SQLite creates -wal and -shm with the database file's mode.

import { chmodSync, closeSync, existsSync, openSync, realpathSync, statSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import Database from 'better-sqlite3'
import type { Logger } from 'pino'
import { BufferError, isCorruptionCode, sqliteCodeOf, toBufferError } from './errors.js'
import { fsyncDir, mkdirDurable } from './dir-sync.js'
import { applyMigrations, CORE_MIGRATIONS, type Migration } from './migrations.js'
import { quarantine, type QuarantineRecord } from './quarantine.js'
import { WalSync } from './wal-sync.js'
import { emptyHistogram, type DurationHistogram } from './fsync-timings.js'

export { applyMigrations, CORE_MIGRATIONS, type Migration } from './migrations.js'
export { readQuarantineLog, type QuarantineRecord } from './quarantine.js'

export type Durability = 'full' | 'normal' | 'off'

/** 'full' is NORMAL plus WalSync (see the header). */
const SYNCHRONOUS: Record<Durability, number> = { full: 1, normal: 1, off: 0 }

export interface OpenDatabaseOptions {
  readonly logger: Logger
  /** Default 'full'. See the header for what each mode can lose. */
  readonly durability?: Durability
  /** Applied in order after the core migrations; idempotent across opens. */
  readonly migrations?: readonly Migration[]
  /** Rename a corrupt file aside and start fresh (default true). false: throw EDGE_ERR_BUFFER_CORRUPT. */
  readonly quarantineCorrupt?: boolean
  /** 'quick' runs PRAGMA quick_check at open (O(file size)); 'none' skips it. Default 'quick'. */
  readonly startupCheck?: 'quick' | 'none'
  /** Hard cap on the file (PRAGMA max_page_count): SQLITE_FULL instead of filling the disk. Default: none. */
  readonly maxFileBytes?: number
  /** Milliseconds to wait for another connection's lock (blocks the event loop). Default 5000. */
  readonly busyTimeoutMs?: number
  /** WAL is truncated to this size after checkpoints, bytes. Default 64 MiB. */
  readonly journalSizeLimitBytes?: number
  /**
   * A previous run used this file (continuity.ts): an empty file or one
   * without our schema is what a power cut left of it, quarantined like a
   * corrupt one rather than silently recreated. Default false.
   */
  readonly mustHoldStore?: boolean
  /** Clock for quarantine timestamps, epoch ms. Default Date.now. */
  readonly now?: () => number
  /**
   * Durability 'full': fsyncs of the WAL per second at most (wal-sync.ts, rate bound). Default 0: no bound. Set by
   * the first opener of a file.
   */
  readonly maxSyncsPerSecond?: number
}

/** A lease on a (possibly shared) connection. */
export interface SqliteDatabase {
  readonly db: Database.Database
  /** Absolute path of the database file. */
  readonly path: string
  readonly durability: Durability
  /** The quarantine done when the shared connection was opened, if any. */
  readonly quarantined: QuarantineRecord | null
  /** This lease has been closed. */
  readonly closed: boolean
  /** Apply an owner's migrations on this connection (idempotent); returns the ids applied now. */
  applyMigrations(migrations: readonly Migration[]): string[]
  /**
   * Resolves once everything committed before the call is on stable storage
   * (durability 'full': an fsync of the WAL off the event loop); at once for
   * the other modes. Acknowledge nothing before it resolves.
   */
  syncWal(): Promise<void>
  /** Milliseconds until the fsync rate bound lets the next WAL fsync start (0: at once; always 0 unless 'full'). */
  syncDelayMs(): number
  /** WAL fsyncs completed on this file since it was opened (0 unless 'full'). */
  readonly walSyncs: number
  /** How long those fsyncs took (empty unless 'full'). */
  readonly walSyncDurations: DurationHistogram
  /** Release this lease (idempotent). The last lease checkpoints the WAL (TRUNCATE) and closes. */
  close(): void
}

interface Shared {
  readonly db: Database.Database
  readonly path: string
  readonly durability: Durability
  readonly quarantined: QuarantineRecord | null
  readonly log: Logger
  /** Durability 'full' only. */
  readonly wal: WalSync | null
  refs: number
}

// Process-wide: one connection per file, so that two owners never race a
// quarantine rename against an open handle.
const openFiles = new Map<string, Shared>()

export function openDatabase(path: string, options: OpenDatabaseOptions): SqliteDatabase {
  const durability = options.durability ?? 'full'
  if (!(durability in SYNCHRONOUS)) {
    throw new BufferError('EDGE_ERR_BUFFER_INVALID', `unknown durability '${String(durability)}'`)
  }
  const absPath = canonicalPath(path)
  let shared = openFiles.get(absPath)
  if (shared !== undefined) {
    if (shared.durability !== durability) {
      throw new BufferError(
        'EDGE_ERR_BUFFER_DURABILITY',
        `database already open with durability '${shared.durability}', requested '${durability}'`,
      )
    }
    if (options.maxFileBytes !== undefined) applyMaxFileBytes(shared.db, options.maxFileBytes)
  } else {
    shared = openShared(absPath, durability, options)
    openFiles.set(absPath, shared)
  }
  shared.refs++
  const lease = new Lease(shared)
  if (options.migrations !== undefined && options.migrations.length > 0) {
    try {
      lease.applyMigrations(options.migrations)
    } catch (err) {
      lease.close()
      throw err
    }
  }
  return lease
}

class Lease implements SqliteDatabase {
  #closed = false
  constructor(readonly shared: Shared) {}

  get db(): Database.Database {
    return this.shared.db
  }
  get path(): string {
    return this.shared.path
  }
  get durability(): Durability {
    return this.shared.durability
  }
  get quarantined(): QuarantineRecord | null {
    return this.shared.quarantined
  }
  get closed(): boolean {
    return this.#closed
  }
  get walSyncs(): number {
    return this.shared.wal?.syncs ?? 0
  }
  get walSyncDurations(): DurationHistogram {
    return this.shared.wal?.durations ?? emptyHistogram()
  }

  applyMigrations(migrations: readonly Migration[]): string[] {
    if (this.#closed) throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'database lease is closed')
    return applyMigrations(this.shared.db, migrations, this.shared.log)
  }

  syncWal(): Promise<void> {
    const wal = this.shared.wal
    if (wal === null) return Promise.resolve()
    return wal.sync().catch((err: unknown) => {
      throw new BufferError('EDGE_ERR_BUFFER_IO', (err as Error).message, { cause: err, retryable: true })
    })
  }

  syncDelayMs(): number {
    return this.shared.wal?.delayMs() ?? 0
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    const s = this.shared
    s.refs--
    if (s.refs > 0) return
    openFiles.delete(s.path)
    closeConnection(s.db, s.log, s.path)
    s.wal?.close()
  }
}

/** Checkpoint (TRUNCATE) and close; never throws — the data is safe in the WAL either way. */
function closeConnection(db: Database.Database, log: Logger, path: string): void {
  try {
    if (db.open) {
      const rows = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number; log: number; checkpointed: number }>
      const r = rows[0]
      // busy=1: a reader (the CLI) kept the WAL from being reset; harmless,
      // the next open or autocheckpoint finishes the job.
      if (r !== undefined && r.busy !== 0)
        log.warn({ path, walFrames: r.log, checkpointed: r.checkpointed }, 'wal checkpoint incomplete at close')
    }
  } catch (err) {
    log.warn({ err, path }, 'wal checkpoint failed at close')
  }
  try {
    if (db.open) db.close()
  } catch (err) {
    log.error({ err, path }, 'database close failed')
  }
}

function canonicalPath(path: string): string {
  const abs = resolve(path)
  try {
    return join(realpathSync(dirname(abs)), basename(abs))
  } catch {
    return abs // directory does not exist yet: it will be created
  }
}

function openShared(path: string, durability: Durability, options: OpenDatabaseOptions): Shared {
  const log = options.logger
  const now = options.now ?? Date.now
  prepareFiles(path, log)
  let quarantined: QuarantineRecord | null = null
  let db: Database.Database
  try {
    // Check first on a read-only connection: closing it never checkpoints or
    // deletes the -wal, so a corrupt file is quarantined exactly as found
    // (a read-write close would checkpoint the WAL into the damaged file).
    checkIntegrity(path, options.startupCheck ?? 'quick', options.mustHoldStore === true)
    db = openAndConfigure(path, durability, options)
  } catch (err) {
    const code = sqliteCodeOf(err)
    const corrupt = isCorruptionCode(code) || (err instanceof BufferError && err.code === 'EDGE_ERR_BUFFER_CORRUPT')
    if (!corrupt) throw toBufferError(err, 'open database')
    if (options.quarantineCorrupt === false) {
      throw new BufferError('EDGE_ERR_BUFFER_CORRUPT', 'database file is corrupt (quarantine disabled)', {
        cause: err,
        ...(code === undefined ? {} : { sqliteCode: code }),
      })
    }
    const reason = err instanceof Error ? err.message : String(err)
    quarantined = quarantine(path, reason, now(), log)
    prepareFiles(path, log)
    try {
      db = openAndConfigure(path, durability, options)
    } catch (err2) {
      throw toBufferError(err2, 'open fresh database after quarantine')
    }
  }
  try {
    applyMigrations(db, CORE_MIGRATIONS, log)
    if (quarantined !== null) {
      db.prepare('INSERT INTO db_quarantine_log (at, original, moved_to, reason) VALUES (?, ?, ?, ?)').run(
        quarantined.at,
        quarantined.original,
        quarantined.movedTo,
        quarantined.reason,
      )
    }
  } catch (err) {
    db.close()
    throw toBufferError(err, 'migrate database')
  }
  for (const suffix of ['-wal', '-shm']) tightenMode(path + suffix, log)
  log.info({ path, durability, quarantined: quarantined?.movedTo ?? null }, 'database opened')
  const perSecond = options.maxSyncsPerSecond ?? 0
  const wal =
    durability === 'full'
      ? new WalSync({ walPath: `${path}-wal`, logger: log, minIntervalMs: perSecond > 0 ? 1000 / perSecond : 0 })
      : null
  return { db, path, durability, quarantined, log, wal, refs: 0 }
}

/**
 * Read the header (SQLITE_NOTADB) and run PRAGMA quick_check on a read-only
 * connection. Throws on corruption; any other failure of the read-only open
 * (e.g. no permission to create the -shm) is left to the read-write open.
 */
function checkIntegrity(path: string, mode: 'quick' | 'none', mustHoldStore: boolean): void {
  if (statSync(path).size === 0) {
    if (mustHoldStore) throw new BufferError('EDGE_ERR_BUFFER_CORRUPT', NO_STORE)
    return
  }
  let ro: Database.Database
  try {
    ro = new Database(path, { readonly: true, fileMustExist: true })
  } catch (err) {
    if (isCorruptionCode(sqliteCodeOf(err))) throw err
    return
  }
  try {
    ro.pragma('page_count', { simple: true })
    const schema = ro.prepare("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'")
    if (mustHoldStore && schema.get() === undefined) {
      throw new BufferError('EDGE_ERR_BUFFER_CORRUPT', NO_STORE)
    }
    if (mode === 'quick') {
      const rows = ro.pragma('quick_check') as Array<{ quick_check: string }>
      if (rows.length !== 1 || rows[0]?.quick_check !== 'ok') {
        const detail = rows
          .slice(0, 3)
          .map((r) => r.quick_check)
          .join('; ')
        throw new BufferError('EDGE_ERR_BUFFER_CORRUPT', `quick_check failed: ${detail}`)
      }
    }
  } catch (err) {
    if (err instanceof BufferError || isCorruptionCode(sqliteCodeOf(err))) throw err
    // not corruption (busy, I/O): let the read-write open report it
  } finally {
    ro.close()
  }
}

const NO_STORE = 'the file no longer holds the store (empty or without its schema), although a previous run used it'

/** Directory 0700 (when we create it), file 0600 (created empty so SQLite keeps its mode). */
function prepareFiles(path: string, log: Logger): void {
  const dir = dirname(path)
  try {
    mkdirDurable(dir, 0o700)
    if (!existsSync(path)) {
      closeSync(openSync(path, 'a', 0o600))
      fsyncDir(dir)
    } else tightenMode(path, log)
  } catch (err) {
    throw new BufferError('EDGE_ERR_BUFFER_IO', `cannot prepare database file: ${(err as Error).message}`, {
      cause: err,
    })
  }
}

function tightenMode(path: string, log: Logger): void {
  try {
    const mode = statSync(path).mode & 0o777
    if ((mode & 0o077) !== 0) {
      chmodSync(path, 0o600)
      log.info({ path, was: mode.toString(8) }, 'database file mode tightened to 0600')
    }
  } catch {
    // absent -wal/-shm: nothing to do
  }
}

function openAndConfigure(path: string, durability: Durability, options: OpenDatabaseOptions): Database.Database {
  const db = new Database(path, { timeout: options.busyTimeoutMs ?? 5000 })
  try {
    // auto_vacuum only takes effect before the first table exists; INCREMENTAL
    // lets the file shrink after a large backlog drains (incremental_vacuum).
    if (db.pragma('page_count', { simple: true }) === 0) db.pragma('auto_vacuum = INCREMENTAL')
    const mode = db.pragma('journal_mode = WAL', { simple: true })
    if (mode !== 'wal') {
      throw new BufferError('EDGE_ERR_BUFFER_DURABILITY', `journal_mode WAL did not take (got '${String(mode)}')`)
    }
    applyDurability(db, durability)
    db.pragma('foreign_keys = ON')
    db.pragma(`journal_size_limit = ${Math.trunc(options.journalSizeLimitBytes ?? 64 * 1024 * 1024)}`)
    db.pragma('wal_autocheckpoint = 1000')
    // Page cache 1 MiB (negative = KiB). better-sqlite3 is built with
    // SQLITE_DEFAULT_CACHE_SIZE=-16000, and appends only ever touch the right
    // edge of each B-tree, so a backlog filled the default cache with pages
    // never read again: RSS grew in every outage (docs/benchmarks.md, Ingest).
    // 1 MiB holds the hot pages of every table and index many times over; fill
    // and drain rates did not change measurably.
    db.pragma('cache_size = -1024')
    if (options.maxFileBytes !== undefined) applyMaxFileBytes(db, options.maxFileBytes)
    return db
  } catch (err) {
    try {
      db.close()
    } catch {
      // already failing; the original error matters
    }
    throw err
  }
}

/** Minimal surface of a connection needed to set and verify durability (a stub in tests). */
export interface PragmaRunner {
  pragma(source: string, options?: { simple?: boolean }): unknown
}

/** Set synchronous for `durability` and read it back; throws EDGE_ERR_BUFFER_DURABILITY if it did not take. */
export function applyDurability(db: PragmaRunner, durability: Durability): void {
  const want = SYNCHRONOUS[durability]
  db.pragma(`synchronous = ${want}`)
  const got = db.pragma('synchronous', { simple: true })
  if (got !== want) {
    throw new BufferError(
      'EDGE_ERR_BUFFER_DURABILITY',
      `PRAGMA synchronous reads back ${String(got)}, expected ${want} for durability '${durability}'`,
    )
  }
}

function applyMaxFileBytes(db: Database.Database, maxFileBytes: number): void {
  const pageSize = db.pragma('page_size', { simple: true }) as number
  const pages = Math.max(1, Math.floor(maxFileBytes / pageSize))
  db.pragma(`max_page_count = ${pages}`)
}
