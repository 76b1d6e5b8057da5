// SqliteStore's drain path (see sqlite-store.ts, read path): takeBatch reads
// each priority of a queue, highest first, as one range of the drain index
// after a per-(queue, priority) cursor, or from the live tail once caught
// up; release hands rows back and moves the cursor back to them.
import { BufferError } from '../storage/index.js'
import { getOrSet, newMap } from './map-of.js'
import { rawRowToMessage, type RawMessageRow, type Statements } from './message-schema.js'
import type { StoredMessage } from './message-store.js'
import type { StoreState } from './store-state.js'

export function takeBatch(st: StoreState, s: Statements, queue: string, max: number): StoredMessage[] {
  if (typeof queue !== 'string' || queue.length === 0)
    throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'queue must be a non-empty string')
  if (!Number.isSafeInteger(max) || max < 1)
    throw new BufferError('EDGE_ERR_BUFFER_INVALID', 'max must be an integer ≥ 1')
  const now = st.now()
  const out: StoredMessage[] = []
  const expired: number[] = []
  const q = st.queues.get(queue)
  if (q === undefined) return out
  const priorities = [...q.byPriority]
    .filter(([, n]) => n > 0)
    .map(([p]) => p)
    .sort((a, b) => b - a)
  const cursors = getOrSet(st.cursors, queue, newMap<number, number>)
  try {
    // Every row considered moves the cursor past it, so the loops end.
    const consider = (priority: number, m: StoredMessage): void => {
      cursors.set(priority, m.id)
      if (st.inFlight.has(m.id) || st.doomed.has(m.id)) return
      if (m.expiresAt !== null && m.expiresAt <= now) {
        expired.push(m.id)
        st.doomed.add(m.id)
        return
      }
      st.markInFlight(m)
      out.push(m)
    }
    for (const priority of priorities) {
      const tail = st.tail(queue, priority)
      if (tail.complete) {
        // Caught up: the rest of this priority is in memory.
        for (let m = tail.shift(); m !== undefined; m = out.length < max ? tail.shift() : undefined)
          consider(priority, m)
        if (out.length >= max) break
        continue
      }
      while (out.length < max) {
        const limit = max - out.length
        const rows = s.takeRange.all(queue, priority, cursors.get(priority) ?? 0, limit) as RawMessageRow[]
        for (const row of rows) consider(priority, rawRowToMessage(row))
        if (rows.length < limit) {
          tail.markComplete()
          break
        }
      }
      if (out.length >= max) break
    }
  } catch (err) {
    // Hand back what we marked: nobody will ever ack it.
    for (const m of out) st.dropInFlight(m.id)
    for (const id of expired) st.doomed.delete(id)
    st.resetDrain()
    throw st.readFailure(err, 'take batch')
  }
  if (expired.length > 0) {
    for (const id of expired) st.doomed.delete(id) // #enqueueDelete re-adds them
    st.enqueueDelete(expired, 'expired')
  }
  st.counters.taken += out.length
  return out
}

export function release(st: StoreState, s: Statements, ids: readonly number[]): void {
  const valid = checkIds(ids)
  if (valid instanceof BufferError) throw valid
  const superseded: number[] = []
  try {
    for (const id of valid) {
      const f = st.inFlight.get(id)
      if (f === undefined || st.acking.has(id)) continue
      st.dropInFlight(id)
      st.rewind(f.queue, f.priority, id)
      st.counters.released++
      // Invariant 5: a released latest-only row with a newer row of its
      // topic is conflated instead of redelivered.
      if (f.conflation === 'latest-only' && s.topicHasNewer.get(f.queue, f.topic, id) !== undefined) superseded.push(id)
    }
  } catch (err) {
    throw st.readFailure(err, 'release')
  }
  st.enqueueDelete(superseded, 'conflated')
}

export function checkIds(ids: readonly number[]): number[] | BufferError {
  if (!Array.isArray(ids)) return new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be an array')
  for (const id of ids)
    if (!Number.isSafeInteger(id) || id < 1)
      return new BufferError('EDGE_ERR_BUFFER_INVALID', 'ids must be positive integers')
  return [...new Set(ids)]
}
