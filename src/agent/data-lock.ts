// One agent per data directory. Node has no flock(2); SQLite's file locks
// (fcntl) are the portable way it does have: the holder keeps an EXCLUSIVE
// transaction open on <dataDir>/agent.lock for as long as it runs, and the
// kernel drops the lock when the process dies, however it dies, so a crash
// leaves no stale lock. The holder's PID is written next to it (agent.pid)
// for the message only: between taking the lock and writing the PID, or
// after a crash, that file may be missing or name a dead process; the lock
// itself never lies. Caveat: fcntl locks are unreliable on some network file
// systems; the data dir belongs on a local disk anyway (WAL needs it).
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'

export const LOCK_FILE = 'agent.lock'
export const PID_FILE = 'agent.pid'

export class DataDirLockedError extends Error {
  readonly code = 'EDGE_ERR_DATA_DIR_LOCKED'
  readonly dataDir: string
  /** The holder's PID as it recorded it, if readable. */
  readonly pid: number | undefined

  constructor(dataDir: string, pid: number | undefined) {
    super(
      `data directory ${dataDir} is in use by another edge-agent${pid === undefined ? '' : ` (PID ${pid})`}; ` +
        'one agent per data directory: stop it first (systemctl stop edge-agent) or use another dataDir',
    )
    this.name = 'DataDirLockedError'
    this.dataDir = dataDir
    this.pid = pid
  }
}

export class DataDirLock {
  readonly dataDir: string
  readonly #db: Database.Database
  readonly #pid: number
  #released = false

  private constructor(dataDir: string, db: Database.Database, pid: number) {
    this.dataDir = dataDir
    this.#db = db
    this.#pid = pid
  }

  /** Takes the lock at once or throws DataDirLockedError; the directory must exist. */
  static acquire(dataDir: string, pid: number): DataDirLock {
    const db = new Database(join(dataDir, LOCK_FILE), { timeout: 0 })
    try {
      db.exec('BEGIN EXCLUSIVE')
    } catch (err) {
      db.close()
      if ((err as { code?: string }).code === 'SQLITE_BUSY')
        throw new DataDirLockedError(dataDir, DataDirLock.holder(dataDir))
      throw err
    }
    writeFileSync(join(dataDir, PID_FILE), `${pid}\n`, { mode: 0o644 })
    return new DataDirLock(dataDir, db, pid)
  }

  /** Whether some process holds the lock now (the check takes and drops it). */
  static isHeld(dataDir: string): { held: false } | { held: true; pid: number | undefined } {
    let db: Database.Database
    try {
      db = new Database(join(dataDir, LOCK_FILE), { timeout: 0, fileMustExist: true })
    } catch {
      return { held: false }
    }
    try {
      db.exec('BEGIN EXCLUSIVE')
      db.exec('ROLLBACK')
      return { held: false }
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_BUSY') return { held: true, pid: DataDirLock.holder(dataDir) }
      throw err
    } finally {
      db.close()
    }
  }

  /** The PID recorded by the holder (advisory, see the file comment). */
  static holder(dataDir: string): number | undefined {
    try {
      const n = Number(readFileSync(join(dataDir, PID_FILE), 'utf8').trim())
      return Number.isInteger(n) && n > 0 ? n : undefined
    } catch {
      return undefined
    }
  }

  /** Idempotent. */
  release(): void {
    if (this.#released) return
    this.#released = true
    if (DataDirLock.holder(this.dataDir) === this.#pid) rmSync(join(this.dataDir, PID_FILE), { force: true })
    this.#db.close()
  }
}
