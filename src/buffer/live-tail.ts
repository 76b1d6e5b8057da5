// LiveTail: the newest committed rows of one (queue, priority), kept in
// memory so that a bridge that keeps up hands them out without reading them
// back from SQLite (the read was a tenth of the agent's CPU per message).
//
// The tail is only trusted while it is complete: it holds EVERY committed
// row of its (queue, priority) above the drain cursor. It becomes complete
// when a read from the file found the range exhausted (everything committed
// was read), stays complete while commits append to it, and is dropped —
// reads go back to the file — as soon as that cannot be vouched for: it grew
// past its cap (a backlog: the file is where a backlog lives), a row below
// or in it became eligible again (release), or the store recounted.
// Rows deleted while in the tail (conflation, eviction, expiry, purge) are
// removed from it; acked rows were in flight, so never in it.

import type { StoredMessage } from './message-store.js'

export interface LiveTailLimits {
  readonly maxRows: number
  readonly maxBytes: number
}

export class LiveTail {
  readonly #limits: LiveTailLimits
  /** id → message, in id order (Map keeps insertion order; ids only grow). */
  readonly #rows = new Map<number, StoredMessage>()
  #bytes = 0
  #complete = false

  constructor(limits: LiveTailLimits) {
    this.#limits = limits
  }

  get complete(): boolean {
    return this.#complete
  }

  get size(): number {
    return this.#rows.size
  }

  /** A read from the file found nothing more above the cursor: the (empty) tail is now the whole rest. */
  markComplete(): void {
    this.#rows.clear()
    this.#bytes = 0
    this.#complete = true
  }

  /** The file is the truth again (cap reached, release, recount). */
  drop(): void {
    this.#rows.clear()
    this.#bytes = 0
    this.#complete = false
  }

  /** A committed row of this (queue, priority). */
  push(m: StoredMessage): void {
    if (!this.#complete) return
    if (this.#rows.size >= this.#limits.maxRows || this.#bytes + m.size > this.#limits.maxBytes) {
      this.drop()
      return
    }
    this.#rows.set(m.id, m)
    this.#bytes += m.size
  }

  /** A row was deleted (not by ack). */
  delete(id: number): void {
    const m = this.#rows.get(id)
    if (m === undefined) return
    this.#rows.delete(id)
    this.#bytes -= m.size
  }

  /** Removes and returns the oldest row, if any. */
  shift(): StoredMessage | undefined {
    for (const [id, m] of this.#rows) {
      this.#rows.delete(id)
      this.#bytes -= m.size
      return m
    }
    return undefined
  }
}
