// The outbound custody hand-off of one upstream (bridge.ts, states 1 → 2): a
// device's PUBLISH that matches an `out` rule becomes a row in the buffer, and
// the device's PUBACK waits for that commit. What is not stored (QoS 0 while
// offline, over a rule's per-topic rate) is a counted drop, never a silent one.
import type { IPublishPacket } from 'mqtt-packet'
import type { MessageProperties, MessageStore } from '../buffer/index.js'
import type { BridgeDropReason } from './bridge-status.js'
import { TopicRateLimiter } from './rate.js'
import type { BridgeRule } from './rule.js'
import { endToEndProperties } from './end-to-end.js'

/** A device's PUBLISH as the local broker's capture hook sees it. */
export interface CapturedPublish {
  readonly topic: string
  readonly payload: Buffer | string
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  /** An MQTT 5 device's PUBLISH properties (mqtt-packet's names), as the broker parsed them. */
  readonly properties?: Readonly<IPublishPacket['properties']>
}

export interface CaptureOptions {
  /** The store queue of this upstream (its name). */
  readonly queue: string
  readonly store: MessageStore
  /** The upstream's rules; only those that forward out are used. */
  readonly rules: readonly BridgeRule[]
  readonly connected: () => boolean
  readonly drop: (reason: BridgeDropReason, rule: string) => void
  readonly now: () => number
}

export class Capture {
  /** Messages handed to the store (one per matching rule). */
  captured = 0
  readonly #o: CaptureOptions
  readonly #rules: readonly BridgeRule[]
  readonly #limiters = new Map<string, TopicRateLimiter>()

  constructor(options: CaptureOptions) {
    this.#o = options
    this.#rules = options.rules.filter((r) => r.forwardsOut)
    for (const r of this.#rules) {
      if (r.maxRatePerTopic > 0) this.#limiters.set(r.id, new TopicRateLimiter(r.maxRatePerTopic, options.now))
    }
  }

  /** The ids of the rules that capture (the store's drops of other rules are not this upstream's). */
  get ruleIds(): ReadonlySet<string> {
    return new Set(this.#rules.map((r) => r.id))
  }

  /**
   * Stores the message for every matching `out` rule of this upstream.
   * Returns undefined when no rule matches (the broker acknowledges at once),
   * else a promise the device's PUBACK waits for (its value means nothing);
   * it rejects when the buffer refused the message (the broker then withholds
   * the ack).
   */
  capture(packet: CapturedPublish): Promise<unknown> | undefined {
    let pending: Promise<unknown> | undefined
    let carry: MessageProperties | undefined | null = null
    for (const rule of this.#rules) {
      const remote = rule.mapOutbound(packet.topic)
      if (remote === undefined) continue
      const qos = rule.effectiveQos(packet.qos)
      if (qos === 0 && !rule.bufferQos0 && !this.#o.connected()) {
        this.#o.drop('offline-qos0', rule.id)
        continue
      }
      const limiter = this.#limiters.get(rule.id)
      if (limiter !== undefined && !limiter.allow(packet.topic)) {
        this.#o.drop('rate-limited', rule.id)
        continue
      }
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
      const now = this.#o.now()
      const ttl = rule.ttlSec > 0 ? now + rule.ttlSec * 1000 : null
      const v5 = packet.properties
      if (v5 !== undefined && carry === null) carry = carried(v5)
      this.captured++
      const p = this.#o.store.append({
        queue: this.#o.queue,
        topic: remote,
        payload,
        qos,
        retain: rule.retainAsPublished ? packet.retain : false,
        priority: rule.priority,
        rule: rule.id,
        conflation: rule.conflate,
        whenFull: rule.whenFull === 'auto' ? (qos === 0 ? 'drop-oldest' : 'refuse') : rule.whenFull,
        expiresAt: v5 === undefined ? ttl : earliest(ttl, deviceExpiry(v5, now)),
        properties: carry ?? undefined,
      })
      pending = pending === undefined ? p : Promise.all([pending, p])
    }
    return pending
  }

  /** Forgets per-topic rate state of topics gone quiet. */
  sweep(): void {
    for (const l of this.#limiters.values()) l.sweep()
  }
}

type PublishProperties = NonNullable<IPublishPacket['properties']>

/**
 * The device's Message Expiry Interval as an absolute time. 0 (or absent)
 * means no expiry, as Mosquitto reads it.
 */
function deviceExpiry(p: Readonly<PublishProperties>, now: number): number | null {
  const sec = p.messageExpiryInterval
  return typeof sec === 'number' && sec > 0 ? now + sec * 1000 : null
}

function earliest(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.min(a, b)
}

/**
 * What of a device's properties is stored and carried upstream unchanged.
 * Topic Alias and Subscription Identifier are hop-by-hop: never carried.
 * Message Expiry Interval goes into the row's expiry (see deviceExpiry).
 */
function carried(p: Readonly<PublishProperties>): MessageProperties | undefined {
  return endToEndProperties(p, false)
}
