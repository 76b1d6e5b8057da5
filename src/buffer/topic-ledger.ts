// TopicLedger: the buffer_topics table seen from one transaction.
//
// Per (queue, topic) with queued rows it keeps how many there are and the
// lowest priority among them (message-schema.ts explains why this replaces
// a topic index). A transaction touches the same few topics many times (a
// batch of 256 appends from 10 devices names maybe 70 topics), so entries
// are read once, changed in memory, and written back once in flush(), still
// inside the transaction. On rollback the caller calls discard(): nothing
// reached the file, and nothing is kept.

import type Database from 'better-sqlite3'
import { getOrSet, newMap } from './map-of.js'

interface Entry {
  readonly queue: string
  readonly topic: string
  /** Lowest priority among the topic's queued rows (meaningless while n = 0). */
  priority: number
  n: number
  /** A row exists in buffer_topics for this key (before this transaction). */
  readonly stored: boolean
  dirty: boolean
}

export interface TopicLedgerStatements {
  readonly topicGet: Database.Statement
  readonly topicPut: Database.Statement
  readonly topicDelete: Database.Statement
}

export class TopicLedger {
  readonly #s: TopicLedgerStatements
  /** queue → topic → entry: no key string to build per row. */
  readonly #tx = new Map<string, Map<string, Entry>>()

  constructor(statements: TopicLedgerStatements) {
    this.#s = statements
  }

  /**
   * Records a new row of (queue, topic) and returns the priority to store it
   * at: its own, or the lowest priority already queued for the topic if that
   * is lower (invariant 4: never overtake an older row of the same topic).
   */
  add(queue: string, topic: string, priority: number): number {
    const e = this.#entry(queue, topic)
    e.priority = e.n <= 0 ? priority : Math.min(e.priority, priority)
    e.n++
    e.dirty = true
    return e.priority
  }

  /** Records that one row of (queue, topic) was deleted. */
  remove(queue: string, topic: string): void {
    const e = this.#entry(queue, topic)
    e.n = Math.max(0, e.n - 1)
    e.dirty = true
  }

  /** Writes the changed entries (inside the caller's transaction) and forgets them. */
  flush(): void {
    const s = this.#s
    for (const topics of this.#tx.values()) {
      for (const e of topics.values()) {
        if (!e.dirty) continue
        if (e.n > 0) s.topicPut.run(e.queue, e.topic, e.priority, e.n)
        else if (e.stored) s.topicDelete.run(e.queue, e.topic)
      }
    }
    this.#tx.clear()
  }

  /** The transaction rolled back: drop what was read and changed. */
  discard(): void {
    this.#tx.clear()
  }

  #entry(queue: string, topic: string): Entry {
    const topics = getOrSet(this.#tx, queue, newMap<string, Entry>)
    let e = topics.get(topic)
    if (e === undefined) {
      const row = this.#s.topicGet.get(queue, topic) as { priority: number; n: number } | undefined
      e = { queue, topic, priority: row?.priority ?? 0, n: row?.n ?? 0, stored: row !== undefined, dirty: false }
      topics.set(topic, e)
    }
    return e
  }
}
