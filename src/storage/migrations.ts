// Migrations of the shared SQLite file. Each owner (core, buffer, broker
// state) passes its own list to openDatabase() or applyMigrations(); the
// ids are namespaced by owner and recorded in `schema_migrations`, so each
// runs once, in list order, in its own transaction (see database.ts).
import type Database from 'better-sqlite3'
import type { Logger } from 'pino'
import { BufferError } from './errors.js'

export interface Migration {
  /** Globally unique and stable: '<owner>/<NNN>-<what>'. Never rename or edit a released migration. */
  readonly id: string
  /** Runs inside a transaction; throw to abort the open. */
  readonly up: (db: Database.Database) => void
}

/** Migrations owned by the storage base, applied first on every open. */
export const CORE_MIGRATIONS: readonly Migration[] = [
  {
    id: 'core/001-quarantine-log',
    up: (db) => {
      db.exec(`CREATE TABLE db_quarantine_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        original TEXT NOT NULL,
        moved_to TEXT NOT NULL,
        reason TEXT NOT NULL
      ) STRICT`)
    },
  },
]

/** Apply migrations not yet recorded in schema_migrations; returns the ids applied now. */
export function applyMigrations(db: Database.Database, migrations: readonly Migration[], log: Logger): string[] {
  const seen = new Set<string>()
  for (const m of migrations) {
    if (typeof m.id !== 'string' || m.id.length === 0 || seen.has(m.id)) {
      throw new BufferError(
        'EDGE_ERR_BUFFER_INVALID',
        `migration ids must be unique non-empty strings (got '${String(m.id)}')`,
      )
    }
    seen.add(m.id)
  }
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT, WITHOUT ROWID',
  )
  const isApplied = db.prepare('SELECT 1 FROM schema_migrations WHERE id = ?').pluck()
  const record = db.prepare('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)')
  const applied: string[] = []
  for (const m of migrations) {
    if (isApplied.get(m.id) !== undefined) continue
    // IMMEDIATE: take the write lock before reading, so two processes opening
    // the same new file cannot both run the same migration.
    db.transaction(() => {
      if (isApplied.get(m.id) !== undefined) return
      m.up(db)
      record.run(m.id, Date.now())
      applied.push(m.id)
    }).immediate()
  }
  if (applied.length > 0) log.info({ migrations: applied }, 'database migrations applied')
  return applied
}
