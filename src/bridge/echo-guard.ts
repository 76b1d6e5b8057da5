// Echo suppression for `both` rules over MQTT 3.1.1, which has no No Local:
// an upstream delivers our own messages back to us on the matching
// subscription. Like thin-edge's MessageLoopBreaker, remember what we sent
// per topic (a payload fingerprint, for a bounded time) and drop the first
// matching message that comes back. A message published upstream by someone
// else with the very same topic and payload within the window would be
// taken for an echo: the price of 3.1.1 (MQTT 5 upstreams use No Local).
import { createHash } from 'node:crypto'

export interface EchoGuardOptions {
  /** How long a sent message may take to come back, ms. */
  readonly windowMs: number
  /** Bound on remembered messages (oldest forgotten first). */
  readonly maxEntries: number
  readonly now: () => number
}

export class EchoGuard {
  readonly #o: EchoGuardOptions
  /** topic → fingerprints in send order */
  readonly #byTopic = new Map<string, { fp: string; at: number }[]>()
  #count = 0
  #suppressed = 0

  constructor(options: EchoGuardOptions) {
    this.#o = options
  }

  get suppressed(): number {
    return this.#suppressed
  }

  get size(): number {
    return this.#count
  }

  sent(topic: string, payload: Buffer): void {
    const list = this.#byTopic.get(topic) ?? []
    if (list.length === 0) this.#byTopic.set(topic, list)
    list.push({ fp: fingerprint(payload), at: this.#o.now() })
    this.#count++
    if (this.#count > this.#o.maxEntries) this.#evictOldest()
  }

  /** True (and forgets the entry) if this inbound message is one of ours coming back. */
  isEcho(topic: string, payload: Buffer): boolean {
    const list = this.#byTopic.get(topic)
    if (list === undefined) return false
    this.#expire(topic, list)
    const fp = fingerprint(payload)
    const i = list.findIndex((e) => e.fp === fp)
    if (i < 0) return false
    list.splice(i, 1)
    this.#count--
    if (list.length === 0) this.#byTopic.delete(topic)
    this.#suppressed++
    return true
  }

  /** Drop expired entries of every topic (called from a periodic timer). */
  sweep(): void {
    for (const [topic, list] of this.#byTopic) this.#expire(topic, list)
  }

  #expire(topic: string, list: { fp: string; at: number }[]): void {
    const cutoff = this.#o.now() - this.#o.windowMs
    let n = 0
    while (n < list.length && (list[n]?.at ?? 0) < cutoff) n++
    if (n > 0) {
      list.splice(0, n)
      this.#count -= n
    }
    if (list.length === 0) this.#byTopic.delete(topic)
  }

  #evictOldest(): void {
    let oldestTopic: string | undefined
    let oldestAt = Infinity
    for (const [topic, list] of this.#byTopic) {
      const at = list[0]?.at ?? Infinity
      if (at < oldestAt) {
        oldestAt = at
        oldestTopic = topic
      }
    }
    if (oldestTopic === undefined) return
    const list = this.#byTopic.get(oldestTopic)
    list?.shift()
    this.#count--
    if (list !== undefined && list.length === 0) this.#byTopic.delete(oldestTopic)
  }
}

function fingerprint(payload: Buffer): string {
  return createHash('sha1').update(payload).digest('base64')
}
