// What the upstream received, per device stream, and whether the books close:
// every QoS 1 message a device had acknowledged is either delivered upstream
// or counted as dropped by policy (TTL, eviction). Pure, so it is unit-tested
// (test/unit/soak/accounting.test.ts).

/** A device stream: one device's messages on one topic, numbered 1, 2, 3 … */
export interface StreamKey {
  readonly device: string
  readonly kind: string
}

export const streamId = (k: StreamKey): string => `${k.device}/${k.kind}`

interface StreamSeen {
  readonly seqs: Set<number>
  max: number
  duplicates: number
  outOfOrder: number
}

/** Upstream side: unique messages, duplicates and order per stream. */
export class DeliveryTracker {
  readonly #streams = new Map<string, StreamSeen>()
  #received = 0
  #malformed = 0

  /** One message as received upstream. A lower number than one already seen, and new, is out of order. */
  observe(stream: string, seq: number): void {
    this.#received++
    if (!Number.isSafeInteger(seq) || seq < 1) {
      this.#malformed++
      return
    }
    let s = this.#streams.get(stream)
    if (s === undefined) {
      s = { seqs: new Set(), max: 0, duplicates: 0, outOfOrder: 0 }
      this.#streams.set(stream, s)
    }
    if (s.seqs.has(seq)) {
      s.duplicates++
      return
    }
    s.seqs.add(seq)
    if (seq < s.max) s.outOfOrder++
    else s.max = seq
  }

  malformed(): void {
    this.#received++
    this.#malformed++
  }

  get received(): number {
    return this.#received
  }

  get malformedCount(): number {
    return this.#malformed
  }

  stream(
    id: string,
  ): { readonly seqs: ReadonlySet<number>; readonly duplicates: number; readonly outOfOrder: number } | undefined {
    return this.#streams.get(id)
  }

  streams(): IterableIterator<string> {
    return this.#streams.keys()
  }
}

/** Device side of one stream at the end: numbers 1..sent were published; `unacked` never got a PUBACK. */
export interface SentStream {
  readonly id: string
  readonly sent: number
  readonly unacked: readonly number[]
  /**
   * Numbers that were in flight when a connection was lost, so resent: the
   * agent may hold two copies, and a copy it drops is a drop with nothing
   * missing. Absent: none.
   */
  readonly resent?: readonly number[]
}

export interface Accounts {
  readonly acknowledged: number
  readonly deliveredUnique: number
  /** Delivered messages whose PUBACK the device never saw (sent while the agent was killed, say). */
  readonly deliveredUnacked: number
  readonly duplicates: number
  readonly outOfOrder: number
  /** Delivered numbers the device never sent, or malformed payloads. */
  readonly phantom: number
  /** Acknowledged and not delivered. */
  readonly missing: number
  readonly dropped: number
  /** missing − dropped: 0 when the books close. */
  readonly difference: number
  /** Messages the agent may have stored twice (resent after a lost connection): how far below 0 it may go. */
  readonly possibleCopies: number
  readonly verdict: 'exact' | 'approximate' | 'open'
}

/**
 * @param dropped QoS 1 messages the agent counted as dropped by policy.
 * @param tolerance |difference| allowed besides the possible copies: drops a kill hid from counts that are not
 *   durable, and messages never acknowledged to their device (the agent may have stored and dropped them).
 * @param durable the drop counts are durable totals: then missing > dropped is a loss nobody counted, whatever
 *   the tolerance, and only a difference below 0 (copies and unacknowledged messages dropped) is approximate.
 */
export function closeAccounts(
  sent: readonly SentStream[],
  delivered: DeliveryTracker,
  dropped: number,
  tolerance: number,
  durable = false,
): Accounts {
  let acknowledged = 0
  let deliveredUnique = 0
  let deliveredUnacked = 0
  let duplicates = 0
  let outOfOrder = 0
  let phantom = delivered.malformedCount
  let missing = 0
  let possibleCopies = 0
  const known = new Set<string>()
  for (const s of sent) {
    known.add(s.id)
    const unacked = new Set(s.unacked)
    acknowledged += s.sent - unacked.size
    possibleCopies += new Set(s.resent ?? []).size
    const seen = delivered.stream(s.id)
    const seqs = seen?.seqs ?? new Set<number>()
    duplicates += seen?.duplicates ?? 0
    outOfOrder += seen?.outOfOrder ?? 0
    for (const n of seqs) {
      if (n > s.sent) phantom++
      else {
        deliveredUnique++
        if (unacked.has(n)) deliveredUnacked++
      }
    }
    for (let n = 1; n <= s.sent; n++) if (!unacked.has(n) && !seqs.has(n)) missing++
  }
  for (const id of delivered.streams()) {
    if (!known.has(id)) phantom += delivered.stream(id)?.seqs.size ?? 0
  }
  const difference = missing - dropped
  const clean = phantom === 0 && outOfOrder === 0
  const slack = tolerance + possibleCopies
  const within = durable ? difference < 0 && -difference <= slack : Math.abs(difference) <= slack
  const verdict = clean && difference === 0 ? 'exact' : clean && within ? 'approximate' : 'open'
  return {
    acknowledged,
    deliveredUnique,
    deliveredUnacked,
    duplicates,
    outOfOrder,
    phantom,
    missing,
    dropped,
    difference,
    possibleCopies,
    verdict,
  }
}
