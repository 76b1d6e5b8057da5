// Run continuity: on start, did the last run end cleanly, and did the store
// lose what it had acknowledged? (issue #20: loss is never silent.)
//
// A small side file next to the store, `edge-agent.run.json`, holds
//   state        'running' from start until a clean stop writes 'clean'
//   ackedHighId  the highest message id acknowledged to a device
//   rows         rows in the store when the file was last saved
// It is written atomically and durably (temp file, fsync, rename, fsync of
// the directory): at start, once a second while acknowledged ids advance,
// and at a clean stop. That is one small fsync a second under load — cheap
// next to the store's own in 'full' mode, and the only fsync in 'off' mode.
//
// The check at the next start, against the store as found:
// - ids only grow and every id is below the store's next id (buffer_meta
//   next_id, written with the rows), so an acknowledged id at or above the
//   store's next id was acknowledged and then lost: ids [nextId, ackedHighId]
//   are gone. In 'full' the side file is saved after the WAL fsync that let
//   the ack out, so this never fires unless the disk lied; in 'normal' it
//   finds the commits since the last checkpoint; in 'off', whatever the OS
//   had not written back.
// - a store file that no longer holds the store (empty, no schema) although
//   a previous run used it is quarantined by database.ts (mustHoldStore);
//   the rows the side file last counted are then reported lost.
// What was acknowledged in the last second before the cut is not in the
// side file: the count is a lower bound, and an unclean end is always said.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { open, rename } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Logger } from 'pino'
import { fsyncDir } from '../storage/index.js'

export const RUN_FILE_NAME = 'edge-agent.run.json'

type Durability = 'full' | 'normal' | 'off'

interface RunRecord {
  readonly v: 1
  readonly state: 'running' | 'clean'
  readonly durability: Durability
  readonly startedAt: number
  readonly savedAt: number
  readonly ackedHighId: number
  readonly rows: number
}

/** What the store lost in the previous run's end (a power cut, or storage that dropped synced data). */
export interface PowerLoss {
  /** The previous run's durability mode. */
  readonly durability: Durability
  /** Messages lost (a lower bound: the last second before the cut is not counted). */
  readonly count: number
  /** The lost ids, when the file survived; null when the whole file was lost. */
  readonly ids: { readonly from: number; readonly to: number } | null
  /** When the side file was last saved: the loss happened after this (epoch ms). */
  readonly after: number
  readonly cause: 'rolled-back' | 'store-lost'
}

export interface LastRun {
  /** 'first': no record (new install or an older version); 'unclean': no clean stop (crash, kill, power cut). */
  readonly ended: 'first' | 'clean' | 'unclean'
  readonly durability: Durability | null
  readonly startedAt: number | null
  readonly loss: PowerLoss | null
}

export interface StoreAtStart {
  /** The store's next id after it opened (every id it ever committed is below it). */
  readonly nextId: number
  /** The file was quarantined at this open (corrupt, or no longer holding the store). */
  readonly quarantined: boolean
}

export interface RunContinuityOptions {
  readonly dataDir: string
  readonly durability: Durability
  readonly logger: Logger
  readonly now: () => number
}

export class RunContinuity {
  readonly #o: RunContinuityOptions
  readonly #path: string
  #previous: RunRecord | null | undefined
  #startedAt = 0
  #ackedHighId = 0
  #rows = 0
  #savedHighId = -1
  /** The save in progress, if any: a clean stop waits for it (no temp file left behind, no rename after 'clean'). */
  #saving: Promise<void> | null = null
  #ended = false

  constructor(options: RunContinuityOptions) {
    this.#o = options
    this.#path = join(options.dataDir, RUN_FILE_NAME)
  }

  /** The previous run's record (read once). A previous run that used the store makes an empty file a loss. */
  previous(): RunRecord | null {
    if (this.#previous !== undefined) return this.#previous
    this.#previous = null
    if (!existsSync(this.#path)) return null
    try {
      const r = JSON.parse(readFileSync(this.#path, 'utf8')) as RunRecord
      if (r.v === 1 && (r.state === 'running' || r.state === 'clean') && Number.isSafeInteger(r.ackedHighId))
        this.#previous = r
    } catch (err) {
      // Written atomically: unreadable means tampered with, not torn.
      this.#o.logger.warn({ err, path: this.#path }, 'run record unreadable, ignored')
    }
    return this.#previous
  }

  /** The previous run used a store here (so an empty file at this path is a loss, not a new install). */
  get storeExisted(): boolean {
    const p = this.previous()
    return p !== null && (p.ackedHighId > 0 || p.rows > 0)
  }

  /** Assess the previous run against the store as opened, say what it finds, and mark this run 'running'. */
  begin(store: StoreAtStart, rows: number): LastRun {
    const prev = this.previous()
    const log = this.#o.logger
    let last: LastRun = { ended: 'first', durability: null, startedAt: null, loss: null }
    if (prev !== null) {
      const loss = assess(prev, store)
      last = {
        ended: prev.state === 'clean' ? 'clean' : 'unclean',
        durability: prev.durability,
        startedAt: prev.startedAt,
        loss,
      }
      if (loss !== null) {
        log.error(
          {
            reason: 'power-loss',
            durability: loss.durability,
            count: loss.count,
            ids: loss.ids,
            after: new Date(loss.after).toISOString(),
            cause: loss.cause,
            previousRunEnded: last.ended,
          },
          'acknowledged messages lost since the last run: power cut or storage that dropped synced writes',
        )
      } else if (last.ended === 'unclean') {
        log.warn(
          {
            durability: prev.durability,
            startedAt: new Date(prev.startedAt).toISOString(),
            lastSavedAt: new Date(prev.savedAt).toISOString(),
          },
          prev.durability === 'full'
            ? 'the last run did not stop cleanly (crash, kill or power cut); nothing acknowledged was lost'
            : 'the last run did not stop cleanly (crash, kill or power cut); no loss detected, but the last second before it is not tracked',
        )
      }
    }
    this.#startedAt = this.#o.now()
    // Ids below the store's next id are known: never report them again.
    this.#ackedHighId = Math.max(0, store.nextId - 1)
    this.#rows = rows
    this.#writeSync('running')
    return last
  }

  /** An id acknowledged to a device (after it is as durable as the mode makes it). */
  noteAcked(id: number): void {
    if (id > this.#ackedHighId) this.#ackedHighId = id
  }

  /** Save the high-water mark if it moved (from the owner's timer; never throws, one save at a time). */
  save(rows: number): void {
    this.#rows = rows
    if (this.#saving !== null || this.#ended || this.#ackedHighId === this.#savedHighId) return
    const high = this.#ackedHighId
    // Not awaited here (the maintenance tick is synchronous); settled() is, at stop.
    this.#saving = this.#writeAsync(this.#record('running'))
      .then(() => {
        this.#savedHighId = high
      })
      .catch((err: unknown) => this.#o.logger.warn({ err, path: this.#path }, 'run record save failed'))
      .finally(() => {
        this.#saving = null
      })
  }

  /** Resolves once no save is in progress (call before end()). */
  async settled(): Promise<void> {
    await this.#saving
  }

  /** A clean stop, after the store is closed (checkpointed): nothing acknowledged can be lost any more. */
  end(rows: number): void {
    if (this.#ended) return
    this.#ended = true
    this.#rows = rows
    try {
      this.#writeSync('clean')
    } catch (err) {
      this.#o.logger.warn({ err, path: this.#path }, 'run record save failed')
    }
  }

  #record(state: 'running' | 'clean'): RunRecord {
    return {
      v: 1,
      state,
      durability: this.#o.durability,
      startedAt: this.#startedAt,
      savedAt: this.#o.now(),
      ackedHighId: this.#ackedHighId,
      rows: this.#rows,
    }
  }

  #writeSync(state: 'running' | 'clean'): void {
    const tmp = `${this.#path}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, JSON.stringify(this.#record(state)))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.#path)
    fsyncDir(dirname(this.#path))
    this.#savedHighId = this.#ackedHighId
  }

  async #writeAsync(r: RunRecord): Promise<void> {
    const tmp = `${this.#path}.tmp`
    const fh = await open(tmp, 'w', 0o600)
    try {
      await fh.writeFile(JSON.stringify(r))
      await fh.sync()
    } finally {
      await fh.close()
    }
    if (this.#ended) return // a clean stop wrote its record meanwhile
    await rename(tmp, this.#path)
    const dir = await open(dirname(this.#path), 'r')
    try {
      await dir.sync()
    } finally {
      await dir.close()
    }
  }
}

/** The loss the previous run's record proves against the store as found, or null. */
export function assess(prev: RunRecord, store: StoreAtStart): PowerLoss | null {
  const lostFile = store.quarantined || (store.nextId <= 1 && (prev.ackedHighId > 0 || prev.rows > 0))
  if (lostFile) {
    if (prev.rows === 0) return null // nothing was waiting in it at the last save
    return {
      durability: prev.durability,
      count: Math.max(prev.rows, 0),
      ids: null,
      after: prev.savedAt,
      cause: 'store-lost',
    }
  }
  if (prev.ackedHighId < store.nextId) return null
  return {
    durability: prev.durability,
    count: prev.ackedHighId - store.nextId + 1,
    ids: { from: store.nextId, to: prev.ackedHighId },
    after: prev.savedAt,
    cause: 'rolled-back',
  }
}
