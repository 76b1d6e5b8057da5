// SqliteStore housekeeping, run from one unref'd interval timer: rate
// samples, the disk floor, the TTL sweep, the drop log, the probe that ends
// a disk-full episode, the recount after another connection wrote, WAL
// checkpoint starvation and incremental vacuum. Every fault is caught and
// turned into health + a rate-limited log line: nothing here can crash the
// process.
import { statSync } from 'node:fs'
import { toBufferError } from '../storage/index.js'
import type { StoreState } from './store-state.js'

const MiB = 1024 * 1024
const PROBE_BYTES = 64 * 1024

export interface MaintenanceOptions {
  /** TTL sweep interval, ms. Default 5000. */
  readonly sweepIntervalMs?: number
  /** After SQLITE_FULL, how often to probe whether the file can grow again, ms. Default 5000. */
  readonly diskFullRetryMs?: number
}

export class Maintenance {
  #lastSweepAt: number
  #lastWalCheckAt: number
  #lastVacuumAt: number

  constructor(
    private readonly st: StoreState,
    private readonly o: MaintenanceOptions,
  ) {
    const t = st.now()
    this.#lastSweepAt = t - (o.sweepIntervalMs ?? 5000) // sweep at the first tick
    this.#lastWalCheckAt = t
    this.#lastVacuumAt = t
  }

  tick(): void {
    if (this.st.phase !== 'running') return
    try {
      const now = this.st.now()
      const o = this.o
      this.st.sampleRates(now)
      const diskLow = this.st.disk?.isLow() ?? false
      this.st.setReason('disk-low', diskLow)
      if (diskLow) this.st.checkpointForSpace()
      if (now - this.#lastSweepAt >= (o.sweepIntervalMs ?? 5000)) this.#sweep(now)
      this.st.drops.tick()
      this.st.continuity?.save(this.st.totalRows)
      if (this.st.pressureCap !== null && now - this.st.pressureSince >= (o.diskFullRetryMs ?? 5000))
        this.#probeDisk(now)
      this.#checkForeignWrites()
      if (now - this.#lastWalCheckAt >= 30_000) this.#checkWal(now)
      if (now - this.#lastVacuumAt >= 60_000 && (this.st.gc?.pending ?? 0) === 0) this.#vacuum(now)
    } catch (err) {
      const e = toBufferError(err, 'buffer maintenance')
      this.st.lastError = { code: e.code, message: e.message, at: this.st.now() }
      if (e.code === 'EDGE_ERR_BUFFER_CORRUPT') this.st.setReason('corrupt', true)
      else if (e.code === 'EDGE_ERR_BUFFER_BUSY') this.st.setReason('busy', true)
      else this.st.setReason('io-error', true)
      this.st.logError(e, 'buffer maintenance failed', {})
    }
  }

  /** TTL sweep: at most 1000 rows per tick, via the expiry index; deleted by the next batch. */
  #sweep(now: number): void {
    const s = this.st.s
    if (s === null) return
    const found = s.expired.all(now, 1000) as number[]
    const ids = found.filter((id) => !this.st.inFlight.has(id) && !this.st.doomed.has(id))
    this.st.enqueueDelete(ids, 'expired')
    // More than one page expired: sweep again at the next tick.
    this.#lastSweepAt = found.length === 1000 ? now - (this.o.sweepIntervalMs ?? 5000) : now
  }

  /**
   * After SQLITE_FULL: can the file grow again? Commit a 64 KiB filler row
   * (page allocation hits max_page_count, WAL growth hits ENOSPC), then
   * delete it. Success restores the full cap and clears 'disk-full'.
   */
  #probeDisk(now: number): void {
    const s = this.st.s
    const db = this.st.lease?.db
    if (s === null || db === undefined) return
    this.st.pressureSince = now
    try {
      db.transaction(() => s.probeInsert.run(PROBE_BYTES)).immediate()
    } catch (err) {
      const e = toBufferError(err, 'disk probe')
      if (e.code !== 'EDGE_ERR_BUFFER_FULL') throw e
      return // still full: keep the reduced cap, try again later
    }
    db.transaction(() => s.probeDelete.run()).immediate()
    this.st.pressureCap = null
    this.st.log.info({ bytes: this.st.totalBytes }, 'buffer disk space available again')
    this.st.setReason('disk-full', false)
  }

  /** Another connection (the CLI) committed: our counters may be stale. */
  #checkForeignWrites(): void {
    const db = this.st.lease?.db
    if (db === undefined) return
    const v = db.pragma('data_version', { simple: true }) as number
    if (v === this.st.dataVersion) return
    this.st.dataVersion = v
    this.st.log.info({}, 'buffer changed by another connection, recounting')
    this.st.load()
  }

  /** Checkpoint starvation guard (better-sqlite3 docs/performance.md): RESTART when the WAL grew past its limit. */
  #checkWal(now: number): void {
    this.#lastWalCheckAt = now
    const lease = this.st.lease
    if (lease === null) return
    let size = 0
    try {
      size = statSync(`${lease.path}-wal`).size
    } catch {
      return
    }
    if (size <= 64 * MiB) return
    const r = (
      lease.db.pragma('wal_checkpoint(RESTART)') as Array<{ busy: number; log: number; checkpointed: number }>
    )[0]
    this.st.log.info(
      { walBytes: size, busy: r?.busy ?? null, checkpointed: r?.checkpointed ?? null },
      'buffer wal checkpoint forced',
    )
  }

  /** Give free pages back to the file system after a backlog drained (auto_vacuum=INCREMENTAL). */
  #vacuum(now: number): void {
    this.#lastVacuumAt = now
    const db = this.st.lease?.db
    if (db === undefined) return
    const free = db.pragma('freelist_count', { simple: true }) as number
    if (free < 4096) return
    db.pragma('incremental_vacuum(2048)')
    this.st.log.info({ freedPages: Math.min(free, 2048) }, 'buffer file shrunk')
  }
}
