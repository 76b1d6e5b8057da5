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
  readonly verdict: 'exact' | 'approximate' | 'open'
}

/**
 * @param dropped QoS 1 messages the agent counted as dropped by policy.
 * @param tolerance |difference| allowed because drop counts are not durable across a kill (0 once they are).
 */
export function closeAccounts(
  sent: readonly SentStream[],
  delivered: DeliveryTracker,
  dropped: number,
  tolerance: number,
): Accounts {
  let acknowledged = 0
  let deliveredUnique = 0
  let deliveredUnacked = 0
  let duplicates = 0
  let outOfOrder = 0
  let phantom = delivered.malformedCount
  let missing = 0
  const known = new Set<string>()
  for (const s of sent) {
    known.add(s.id)
    const unacked = new Set(s.unacked)
    acknowledged += s.sent - unacked.size
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
  const verdict =
    clean && difference === 0 ? 'exact' : clean && Math.abs(difference) <= tolerance ? 'approximate' : 'open'
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
    verdict,
  }
}
