// WalSync: durability 'full' without blocking the event loop on fsync.
//
// With synchronous=FULL, SQLite fsyncs the WAL inside COMMIT, and
// better-sqlite3 runs COMMIT on the event loop: every group commit stopped
// the agent for one fsync (milliseconds, far more on an SD card), during which
// no device packet and no upstream PUBACK was read. Instead the connection
// runs at synchronous=NORMAL (the commit only write()s the WAL frames) and
// the owner calls sync() after COMMIT and acknowledges only when it resolves:
// fsync(2) of the -wal file, in libuv's thread pool. That is the very
// guarantee FULL gives: a commit is durable once the WAL frames up to its
// commit frame are on stable storage (SQLite's recovery replays the valid
// frames of the WAL). Checkpoints are unchanged: at NORMAL, SQLite syncs
// the WAL before a checkpoint and the database after it, so frames leave the
// WAL only once they are safe in the database file.
//
// Coalescing: one fsync at a time. Callers that arrive while one runs share
// the next, which starts when the running one ends (the running one may have
// begun before their COMMIT wrote its frames).
//
// Rate bound: an fsync starts no sooner than `minIntervalMs` after the
// previous one started. An idle store syncs at once (the previous fsync is
// long past); while messages keep arriving, the next fsync waits for the rest
// of the interval and covers everything committed meanwhile. At low rates
// without the bound every message was its own fsync (devices publishing now
// and then rarely share an event-loop turn): CPU, and wear on flash, for
// ever. Nothing is acknowledged sooner: callers still resolve only after the
// fsync that began after their call.
//
// Writes that nobody awaits (the aedes persistence on the same connection:
// retained messages, sessions) are made durable by a timer: every
// `idleSyncMs`, if the WAL changed since the last fsync began, one more.
//
// Each fsync's duration goes into a histogram (fsync-timings.ts) for
// /metrics; one of a second or more is a stalling storage device and logs a
// warning, at most once a minute.
//
// The file is opened once; fsync works on any descriptor of the inode. If
// the -wal file was replaced (a different inode at the path), it is
// reopened, so a sync never lands on a stale file.

import { close, fstat, fsync, open, stat } from 'node:fs'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { FsyncTimings, STALL_SEC, type DurationHistogram } from './fsync-timings.js'

/** At most one slow-storage warning per this period; the next says how many more there were. */
const SLOW_WARN_PERIOD_MS = 60_000

export interface FsOps {
  open(path: string, cb: (err: NodeJS.ErrnoException | null, fd: number) => void): void
  fsync(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void
  fstat(
    fd: number,
    cb: (err: NodeJS.ErrnoException | null, st: { ino: number; size: number; mtimeMs: number }) => void,
  ): void
  stat(
    path: string,
    cb: (err: NodeJS.ErrnoException | null, st: { ino: number; size: number; mtimeMs: number }) => void,
  ): void
  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void
}

const nodeFs: FsOps = {
  open: (path, cb) => open(path, 'r', cb),
  fsync: (fd, cb) => fsync(fd, cb),
  fstat: (fd, cb) => fstat(fd, cb),
  stat: (path, cb) => stat(path, cb),
  close: (fd, cb) => close(fd, cb),
}

export interface WalSyncOptions {
  /** Path of the -wal file. */
  readonly walPath: string
  readonly logger: Logger
  /** Period of the unawaited-writes check, ms. Default 200; 0 disables. */
  readonly idleSyncMs?: number
  /** Least time between the starts of two fsyncs, ms (see the header). Default 0: no bound. */
  readonly minIntervalMs?: number
  /** fs replacement (tests). */
  readonly fs?: FsOps
  /** Clock, ms (tests). Default performance.now. */
  readonly now?: () => number
  /** Timer of the rate bound (tests). Default setTimeout/clearTimeout. */
  readonly timers?: WalSyncTimers
}

export interface WalSyncTimers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

const nodeTimers: WalSyncTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

interface Waiter {
  resolve(): void
  reject(err: Error): void
}

export class WalSync {
  readonly #o: WalSyncOptions
  readonly #fs: FsOps
  #fd: number | null = null
  #running = false
  #waiters: Waiter[] = []
  #timer: ReturnType<typeof setInterval> | undefined
  #closed = false
  /** WAL size and mtime at the previous idle check. */
  #lastSeen = ''
  /** When the descriptor's inode was last compared with the path's. */
  #checkedAt = -Infinity
  readonly #minInterval: number
  readonly #now: () => number
  readonly #timers: WalSyncTimers
  /** When the previous fsync started (clock ms), -Infinity before the first. */
  #lastStart = -Infinity
  /** The rate bound's timer, while waiters wait for the interval to pass. */
  #delay: unknown = undefined
  readonly #timings = new FsyncTimings()
  /** Slow fsyncs since the last warning, and when that warning was logged. */
  #slowUnreported = 0
  #slowWarnedAt = -Infinity

  constructor(options: WalSyncOptions) {
    this.#o = options
    this.#fs = options.fs ?? nodeFs
    this.#minInterval = Math.max(0, options.minIntervalMs ?? 0)
    this.#now = options.now ?? (() => performance.now())
    this.#timers = options.timers ?? nodeTimers
    const idle = options.idleSyncMs ?? 200
    if (idle > 0) {
      this.#timer = setInterval(() => this.#idleCheck(), idle)
      this.#timer.unref()
    }
  }

  /** fsyncs completed. */
  get syncs(): number {
    return this.#timings.count
  }

  /** How long the completed fsyncs took. */
  get durations(): DurationHistogram {
    return this.#timings.snapshot()
  }

  /**
   * Milliseconds until the rate bound lets the next fsync start (0: at once). A writer may hold its commit that long
   * at no cost in latency: what it commits sooner is acknowledged no sooner.
   */
  delayMs(): number {
    if (this.#minInterval === 0 || this.#closed) return 0
    return Math.max(0, this.#lastStart + this.#minInterval - this.#now())
  }

  /** Resolves once everything written to the WAL before this call is on stable storage. */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('wal sync is closed'))
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ resolve, reject })
      this.#schedule()
    })
  }

  /**
   * Stops the timer and closes the descriptor once the running fsync (if any) ended. Pending callers are still
   * served.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    if (this.#delay !== undefined) {
      // Shutting down: serve the waiters now rather than after the interval.
      this.#timers.clearTimeout(this.#delay)
      this.#delay = undefined
      this.#run()
    }
    if (!this.#running) this.#closeFd()
  }

  /** Start the next fsync now, or when the interval since the previous start has passed. */
  #schedule(): void {
    if (this.#running || this.#delay !== undefined || this.#waiters.length === 0) return
    const wait = this.#closed ? 0 : this.#lastStart + this.#minInterval - this.#now()
    if (wait <= 0) return this.#run()
    this.#delay = this.#timers.setTimeout(() => {
      this.#delay = undefined
      this.#run()
    }, wait)
  }

  #run(): void {
    const batch = this.#waiters
    this.#waiters = []
    this.#running = true
    const started = (this.#lastStart = this.#now())
    this.#withFd((err, fd) => {
      if (err !== null) return this.#done(batch, err)
      this.#fs.fsync(fd, (e2) => {
        if (e2 === null) this.#took(this.#now() - started)
        this.#done(batch, e2)
      })
    })
  }

  #took(ms: number): void {
    this.#timings.record(ms)
    if (ms < STALL_SEC * 1000) return
    this.#slowUnreported++
    const now = this.#now()
    if (now - this.#slowWarnedAt < SLOW_WARN_PERIOD_MS) return
    this.#o.logger.warn(
      { walPath: this.#o.walPath, fsyncMs: Math.round(ms), slowFsyncs: this.#slowUnreported },
      'storage is stalling: a WAL fsync took over a second, and devices waited as long for their PUBACKs; ' +
        'check the storage device (edge_agent_buffer_wal_fsync_duration_seconds, docs/buffer.md)',
    )
    this.#slowUnreported = 0
    this.#slowWarnedAt = now
  }

  #done(batch: Waiter[], err: NodeJS.ErrnoException | null): void {
    this.#running = false
    if (err !== null) {
      const e = new Error(`fsync of ${this.#o.walPath} failed: ${err.message}`, { cause: err })
      // A failed fsync may have dropped dirty pages: never trust this descriptor again.
      this.#closeFd()
      for (const w of batch) w.reject(e)
    } else {
      for (const w of batch) w.resolve()
    }
    if (this.#waiters.length > 0) this.#schedule()
    else if (this.#closed) this.#closeFd()
  }

  /** The open descriptor of the file now at walPath (reopened if the inode changed). */
  #withFd(cb: (err: NodeJS.ErrnoException | null, fd: number) => void): void {
    const fs = this.#fs
    const openFresh = (): void => {
      fs.open(this.#o.walPath, (err, fd) => {
        if (err !== null) return cb(err, -1)
        this.#fd = fd
        cb(null, fd)
      })
    }
    const fd = this.#fd
    if (fd === null) return openFresh()
    // SQLite never replaces the -wal of a database it holds open; the check
    // is a guard against the unexpected, so at most once a second.
    const now = this.#now()
    if (now - this.#checkedAt < 1000) return cb(null, fd)
    this.#checkedAt = now
    fs.stat(this.#o.walPath, (e1, atPath) => {
      if (e1 !== null) return cb(e1, -1)
      fs.fstat(fd, (e2, held) => {
        if (e2 === null && held.ino === atPath.ino) return cb(null, fd)
        this.#closeFd()
        openFresh()
      })
    })
  }

  #closeFd(): void {
    const fd = this.#fd
    this.#fd = null
    if (fd !== null) this.#fs.close(fd, () => undefined)
  }

  /**
   * The WAL changed since the previous check: one fsync (a spare one under load costs little; a missed one costs
   * data).
   */
  #idleCheck(): void {
    if (this.#closed) return
    this.#fs.stat(this.#o.walPath, (err, st) => {
      if (err !== null || this.#closed) return
      const seen = `${st.size}:${st.mtimeMs}`
      if (seen === this.#lastSeen) return
      this.#lastSeen = seen
      this.sync().catch((e: unknown) => this.#o.logger.error({ err: e }, 'background wal sync failed'))
    })
  }
}
