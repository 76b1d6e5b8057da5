// Quarantine of a corrupt database file: moved aside (never deleted) with
// its -wal/-shm, and the history kept in the fresh file (db_quarantine_log,
// created by core/001-quarantine-log). The policy is in database.ts.
import { existsSync, renameSync } from 'node:fs'
import { dirname } from 'node:path'
import type Database from 'better-sqlite3'
import type { Logger } from 'pino'
import { fsyncDir } from './dir-sync.js'
import { BufferError } from './errors.js'

export interface QuarantineRecord {
  /** The path of the corrupt file. */
  readonly original: string
  /** Where the main file went; '-wal' / '-shm' siblings were moved to the same name plus that suffix. */
  readonly movedTo: string
  readonly files: readonly string[]
  readonly reason: string
  readonly at: number
}

export function quarantine(path: string, reason: string, at: number, log: Logger): QuarantineRecord {
  const stamp = new Date(at).toISOString().replace(/[-:]/g, '').replace('.', '')
  let movedTo = `${path}.corrupt-${stamp}`
  for (let n = 1; existsSync(movedTo) && n < 1000; n++) movedTo = `${path}.corrupt-${stamp}-${n}`
  const files: string[] = []
  try {
    // Main file first: if this fails nothing moved and we stop. -wal / -shm
    // keep the same base name so SQLite can open the quarantined pair.
    for (const suffix of ['', '-wal', '-shm']) {
      if (!existsSync(path + suffix)) continue
      renameSync(path + suffix, movedTo + suffix)
      files.push(movedTo + suffix)
    }
    // The renames survive a power cut only once the directory is synced.
    fsyncDir(dirname(path))
  } catch (err) {
    throw new BufferError(
      'EDGE_ERR_BUFFER_CORRUPT',
      `database is corrupt and could not be moved aside: ${(err as Error).message}`,
      {
        cause: err,
      },
    )
  }
  log.error({ path, movedTo, files, reason }, 'corrupt database quarantined, starting with a fresh file')
  return { original: path, movedTo, files, reason, at }
}

/** The quarantine history recorded in this file. */
export function readQuarantineLog(db: Database.Database): {
  count: number
  last: { movedTo: string; at: number; reason: string } | null
} {
  const count = db.prepare('SELECT count(*) FROM db_quarantine_log').pluck().get() as number
  const last = db
    .prepare('SELECT moved_to AS movedTo, at, reason FROM db_quarantine_log ORDER BY id DESC LIMIT 1')
    .get() as { movedTo: string; at: number; reason: string } | undefined
  return { count, last: last ?? null }
}
