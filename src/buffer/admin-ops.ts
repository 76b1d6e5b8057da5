// SqliteStore's operator paths (the CLI and the admin side): peek, purge
// and export. Purge deletes in chunks, one transaction each, counting the
// rows as 'purged' drops in the same transaction (drop-ledger.ts); export
// reads keyset pages so no statement stays open between pages.
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { BufferError, type SqliteDatabase } from '../storage/index.js'
import { type DeletedRow, type MessageRow, rowToPeeked, type Statements } from './message-schema.js'
import type { MessageExport, PeekedMessage } from './message-store.js'
import type { Effect, StoreState } from './store-state.js'
import type { TopicLedger } from './topic-ledger.js'

const PAGE_ROWS = 500

export function peekRows(st: StoreState, s: Statements, queue: string | undefined, limit: number): PeekedMessage[] {
  if (!Number.isSafeInteger(limit) || limit < 1)
    throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'limit must be an integer ≥ 1')
  try {
    if (queue === undefined) {
      return (s.pageAll.all(0, limit) as MessageRow[]).map((r) => rowToPeeked(r, st.inFlight.has(r.id)))
    }
    const ids = s.takeIds.all(queue, limit) as number[]
    const out: PeekedMessage[] = []
    for (const id of ids) {
      const row = s.selectById.get(id) as MessageRow | undefined
      if (row !== undefined) out.push(rowToPeeked(row, st.inFlight.has(id)))
    }
    return out
  } catch (err) {
    throw st.readFailure(err, 'peek')
  }
}

export async function purgeRows(st: StoreState, running: () => Statements, queue: string | undefined): Promise<number> {
  let purged = 0
  // Chunks of PAGE_ROWS rows, one transaction each, yielding in between:
  // the write lock is never held long and appends keep flowing.
  for (let round = 0; round < Number.MAX_SAFE_INTEGER; round++) {
    const s = running()
    const ledger = st.ledger as TopicLedger
    const dropLedger = st.dropLedger
    const db = (st.lease as SqliteDatabase).db
    const effects: Effect[] = []
    let n = 0
    try {
      db.transaction(() => {
        const ids = (
          queue === undefined ? s.purgeChunkAll.all(PAGE_ROWS) : s.purgeChunk.all(queue, PAGE_ROWS)
        ) as number[]
        for (const id of ids) {
          const row = s.deleteById.get(id) as DeletedRow | undefined
          if (row !== undefined) {
            ledger.remove(row.queue, row.topic)
            effects.push({ t: 'delete', row, reason: 'purged' })
            const at = row.created_at ?? st.now()
            dropLedger?.add({ reason: 'purged', rule: row.rule, queue: row.queue, topic: row.topic, at, id: row.id })
            n++
          }
        }
        dropLedger?.flush()
        ledger.flush()
      }).immediate()
    } catch (err) {
      ledger.discard()
      dropLedger?.discard()
      throw st.readFailure(err, 'purge')
    }
    const ignored = new Set<string>()
    for (const e of effects) {
      st.applyEffect(e, ignored)
      if (e.t === 'delete') {
        st.acking.delete(e.row.id)
        st.doomed.delete(e.row.id)
      }
    }
    purged += n
    if (n < PAGE_ROWS) break
    await yieldToLoop()
  }
  if (purged > 0) st.log.info({ queue: queue ?? null, purged }, 'buffer purged')
  return purged
}

export function exportRows(st: StoreState, running: () => Statements, queue: string | undefined): MessageExport {
  const s = running()
  let total: number
  try {
    total = (queue === undefined ? s.countAll.get() : s.countByQueue.get(queue)) as number
  } catch (err) {
    throw st.readFailure(err, 'export')
  }
  async function* rows(): AsyncGenerator<PeekedMessage> {
    let after = 0
    // Keyset pages: no statement stays open between pages, so writers (and
    // WAL checkpoints) are never held up by a slow consumer.
    for (;;) {
      const ss = running()
      const page = (
        queue === undefined ? ss.pageAll.all(after, PAGE_ROWS) : ss.pageByQueue.all(queue, after, PAGE_ROWS)
      ) as MessageRow[]
      for (const r of page) yield rowToPeeked(r, st.inFlight.has(r.id))
      const last = page[page.length - 1]
      if (last === undefined || page.length < PAGE_ROWS) return
      after = last.id
      await yieldToLoop()
    }
  }
  return { total, rows: rows() }
}
