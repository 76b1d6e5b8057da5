// How long the storage took to make the WAL durable, as a fixed-bucket
// histogram. Every acknowledgement waits for one of these fsyncs, so a
// stalling flash card (worn out, or shared with something heavy) shows here
// first, in delays of hundreds of milliseconds, long before writes fail.

/** Upper bounds of the buckets, seconds (Prometheus `le`); a last bucket takes the rest. */
export const FSYNC_BUCKETS_SEC: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

/** An fsync at least this long is the storage stalling: every acknowledgement of its interval waited as long. */
export const STALL_SEC = 1

/** A histogram of durations: `counts[i]` fsyncs took at most `bounds[i]` s and more than the bound before. */
export interface DurationHistogram {
  /** Upper bounds, seconds, ascending. */
  readonly bounds: readonly number[]
  /** One count per bound, then one for everything above the last (bounds.length + 1 entries). */
  readonly counts: readonly number[]
  /** Sum of all durations, seconds. */
  readonly sumSec: number
  readonly count: number
  /** The longest, seconds (0 before the first). */
  readonly maxSec: number
}

export class FsyncTimings {
  readonly #counts = new Array<number>(FSYNC_BUCKETS_SEC.length + 1).fill(0)
  #sumSec = 0
  #count = 0
  #maxSec = 0

  /** Durations recorded. */
  get count(): number {
    return this.#count
  }

  record(ms: number): void {
    const sec = Math.max(0, ms) / 1000
    let i = 0
    while (i < FSYNC_BUCKETS_SEC.length && sec > FSYNC_BUCKETS_SEC[i]!) i++
    this.#counts[i]!++
    this.#sumSec += sec
    this.#count++
    if (sec > this.#maxSec) this.#maxSec = sec
  }

  snapshot(): DurationHistogram {
    return {
      bounds: FSYNC_BUCKETS_SEC,
      counts: [...this.#counts],
      sumSec: this.#sumSec,
      count: this.#count,
      maxSec: this.#maxSec,
    }
  }
}

/** The histogram of a store that never fsyncs (durability other than 'full', or the memory store). */
export function emptyHistogram(): DurationHistogram {
  return new FsyncTimings().snapshot()
}
