// Inward (upstream → local) for one upstream: the subscriptions of the `in`
// rules, and the delivery of what arrives on them into the local broker. The
// upstream's PUBACK waits for publishLocal; a message this agent sent itself
// (the via property, or the echo guard on MQTT 3.1.1) is dropped, not
// delivered, so that nothing loops back down.
import type { Logger } from 'pino'
import type { BridgeDropReason } from './bridge-status.js'
import { USER_PROP_VIA } from './drain.js'
import type { EchoGuard } from './echo-guard.js'
import type { InboundMessage, MqttSession, ProtocolVersion } from './mqtt-session.js'
import type { BridgeRule } from './rule.js'
import { endToEndProperties, type EndToEndProperties } from './end-to-end.js'

/** MQTT 5 properties of a message from the upstream, for local MQTT 5 subscribers. */
export type LocalProperties = EndToEndProperties

/** A message the bridge asks the local broker to deliver (inbound). */
export interface LocalMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  /** The upstream's properties, end-to-end ones only (no topic alias, no subscription identifier). */
  readonly properties?: LocalProperties | undefined
}

export interface InboundOptions {
  /** The upstream's rules; only those that forward in are used. */
  readonly rules: readonly BridgeRule[]
  readonly agentId: string
  readonly version: ProtocolVersion
  readonly echo: EchoGuard
  /** Delivers to the local broker; resolves once it has taken the message. */
  readonly publishLocal: (msg: LocalMessage) => Promise<void>
  readonly drop: (reason: BridgeDropReason) => void
  readonly logger: Logger
}

export class Inbound {
  /** Messages delivered to the local broker. */
  received = 0
  readonly #o: InboundOptions
  readonly #rules: readonly BridgeRule[]
  #subscribedOnce = false

  constructor(options: InboundOptions) {
    this.#o = options
    this.#rules = options.rules.filter((r) => r.forwardsIn)
  }

  /**
   * Subscribes the `in` rules' filters on a new connection. A resumed session
   * still has them; subscribe again only once per process (the rules may have
   * changed) or when it was lost: a repeated SUBSCRIBE makes the upstream
   * resend retained messages.
   */
  connected(session: MqttSession, sessionPresent: boolean): void {
    if (sessionPresent && this.#subscribedOnce) return
    const subs = this.#rules.map((r) => ({
      topic: r.remoteFilter,
      qos: r.qos,
      nl: true,
      rap: true,
      rh: r.retainHandling,
    }))
    if (subs.length === 0) {
      this.#subscribedOnce = true
      return
    }
    session.subscribe(subs).then(
      (granted) => {
        this.#subscribedOnce = true
        granted.forEach((g, i) => {
          if (g >= 0x80)
            this.#o.logger.warn({ filter: subs[i]?.topic, reasonCode: g }, 'upstream refused a subscription')
        })
      },
      (err: unknown) => this.#o.logger.debug({ err }, 'subscribe interrupted by disconnect'),
    )
  }

  /** Delivers a message of the `in` rules to the local broker; resolves once it has taken it. */
  async deliver(msg: InboundMessage): Promise<void> {
    const self = this.#o.agentId
    const via = msg.userProperties?.[USER_PROP_VIA]
    if (via !== undefined && (via === self || (Array.isArray(via) && via.includes(self)))) {
      this.#o.drop('loop')
      return
    }
    for (const rule of this.#rules) {
      const local = rule.mapInbound(msg.topic)
      if (local === undefined) continue
      if (rule.forwardsOut && this.#o.version === 4 && this.#o.echo.isEcho(msg.topic, msg.payload)) {
        this.#o.drop('echo')
        return
      }
      await this.#o.publishLocal({
        topic: local,
        payload: msg.payload,
        qos: rule.effectiveQos(msg.qos),
        retain: rule.retainAsPublished ? msg.retain : false,
        properties: msg.properties === undefined ? undefined : endToEndProperties(msg.properties, true),
      })
      this.received++
      this.#o.logger.debug({ topic: msg.topic, local, qos: msg.qos }, 'delivered from upstream')
      return
    }
    this.#o.drop('no-rule')
  }
}
