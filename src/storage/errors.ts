// Errors of the storage base and of the components on it (buffer, broker
// state). The class keeps the name BufferError and the EDGE_ERR_BUFFER_*
// codes it had before the shared file got a base of its own: both are a
// public contract (logs, tests, the README's error table).
//
// Callers branch on `code`, never on message text. `retryable` tells the
// broker what to do with the device's message: a retryable rejection means
// "nothing was stored, withhold the PUBACK/PUBREC and let the device resend";
// a non-retryable one means resending the same message cannot succeed (too
// large, invalid). SQLite's own result code is kept as data in `sqliteCode`
// (never formatted into the message), like MQTT.js keeps reason codes.

export type BufferErrorCode =
  /** The message was not stored: the byte cap or the disk is full and the policy says refuse. */
  | 'EDGE_ERR_BUFFER_FULL'
  /** The database file is corrupt (SQLITE_CORRUPT / SQLITE_NOTADB / failed quick_check). */
  | 'EDGE_ERR_BUFFER_CORRUPT'
  /** An I/O error from SQLite or the file system (SQLITE_IOERR, SQLITE_CANTOPEN, EACCES…). */
  | 'EDGE_ERR_BUFFER_IO'
  /** The requested durability could not be established (journal_mode or synchronous did not take). */
  | 'EDGE_ERR_BUFFER_DURABILITY'
  /** Another connection held the write lock longer than busy_timeout. */
  | 'EDGE_ERR_BUFFER_BUSY'
  /** The store is not started, or is stopping/stopped. */
  | 'EDGE_ERR_BUFFER_STOPPED'
  /** Invalid input at the boundary (empty queue name, non-integer priority, …). */
  | 'EDGE_ERR_BUFFER_INVALID'

/** Why an EDGE_ERR_BUFFER_FULL rejection happened. */
export type FullReason = 'buffer-full' | 'disk-full' | 'too-large'

export interface BufferErrorOptions extends ErrorOptions {
  /** true: nothing was stored and the same message may succeed later (withhold the ack). Default false. */
  retryable?: boolean
  /** For EDGE_ERR_BUFFER_FULL: which limit refused the message. */
  fullReason?: FullReason
  /** SQLite's extended result code, e.g. 'SQLITE_FULL', when the error came from SQLite. */
  sqliteCode?: string
}

export class BufferError extends Error {
  override readonly name = 'BufferError'
  readonly retryable: boolean
  readonly fullReason: FullReason | undefined
  readonly sqliteCode: string | undefined

  constructor(
    readonly code: BufferErrorCode,
    message: string,
    options: BufferErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.retryable = options.retryable ?? false
    this.fullReason = options.fullReason
    this.sqliteCode = options.sqliteCode
  }
}

/** Narrowing helper: `isBufferError(err, 'EDGE_ERR_BUFFER_FULL')`. */
export function isBufferError(err: unknown, code?: BufferErrorCode): err is BufferError {
  return err instanceof BufferError && (code === undefined || err.code === code)
}

/** SQLite's result code of an error thrown by better-sqlite3 (SqliteError.code), if any. */
export function sqliteCodeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined
}

export function isCorruptionCode(code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')
}

/**
 * Map anything thrown while talking to SQLite to a BufferError. `what` is a
 * constant phrase naming the operation ('append batch', 'open'); the path
 * and SQLite code travel as data.
 */
export function toBufferError(err: unknown, what: string): BufferError {
  if (err instanceof BufferError) return err
  const sqliteCode = sqliteCodeOf(err)
  const base = { cause: err, ...(sqliteCode === undefined ? {} : { sqliteCode }) }
  if (sqliteCode === 'SQLITE_FULL') {
    return new BufferError('EDGE_ERR_BUFFER_FULL', `${what}: database or disk is full`, {
      ...base,
      retryable: true,
      fullReason: 'disk-full',
    })
  }
  if (isCorruptionCode(sqliteCode)) {
    return new BufferError('EDGE_ERR_BUFFER_CORRUPT', `${what}: database file is corrupt`, base)
  }
  if (sqliteCode?.startsWith('SQLITE_BUSY') === true || sqliteCode?.startsWith('SQLITE_LOCKED') === true) {
    return new BufferError('EDGE_ERR_BUFFER_BUSY', `${what}: database is locked by another connection`, {
      ...base,
      retryable: true,
    })
  }
  // SQLITE_IOERR_*, SQLITE_CANTOPEN, SQLITE_READONLY_*, SQLITE_PERM, SQLITE_NOMEM, and
  // errors from node:fs. Retryable: a transient I/O error may clear, and the
  // device's resend costs nothing when nothing was acknowledged.
  const message = err instanceof Error ? err.message : String(err)
  return new BufferError('EDGE_ERR_BUFFER_IO', `${what}: ${message}`, { ...base, retryable: true })
}
