// The inbound side of MqttSession (upstream → us): owns invariant 3 of
// mqtt-session.ts. Messages are handed to `onMessage` one at a time, in
// arrival order; PUBACK / PUBREC go out only after it resolved
// [MQTT-4.6.0-2]; a failed local delivery closes the connection, so the
// upstream redelivers. QoS 2 inbound is delivered once per packet id until
// PUBREL (method B of [MQTT-4.3.3]); those ids survive a resumed session.
import type { Duplex } from 'node:stream'
import type { IPublishPacket, Packet, UserProperties } from 'mqtt-packet'
import type { Logger } from 'pino'
import { BridgeError } from './errors.js'

export interface InboundMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  readonly userProperties?: UserProperties | undefined
  /** MQTT 5: the PUBLISH's properties as parsed (user properties included). */
  readonly properties?: IPublishPacket['properties'] | undefined
}

export interface InboundSessionHooks {
  readonly onMessage: (msg: InboundMessage) => Promise<void>
  readonly write: (stream: Duplex, packet: Packet) => void
  /** Ends the connection (the session's teardown). */
  readonly fail: (stream: Duplex, err: Error) => void
  readonly logger: Logger
}

export class MqttInbound {
  readonly #h: InboundSessionHooks
  /** Inbound QoS 2 packet ids delivered locally, awaiting PUBREL. */
  readonly #qos2 = new Set<number>()
  #chain: Promise<void> = Promise.resolve()

  constructor(hooks: InboundSessionHooks) {
    this.#h = hooks
  }

  /** A new connection without a resumed session: the upstream forgot its QoS 2 state. */
  sessionLost(): void {
    this.#qos2.clear()
  }

  /** The connection ended: deliveries still queued are dropped (the upstream resends them). */
  reset(): void {
    this.#chain = Promise.resolve()
  }

  pubrel(stream: Duplex, id: number): void {
    this.#chain = this.#chain.then(() => {
      this.#qos2.delete(id)
      this.#h.write(stream, { cmd: 'pubcomp', messageId: id })
    })
  }

  publish(stream: Duplex, packet: IPublishPacket): void {
    const h = this.#h
    const id = packet.messageId ?? 0
    const msg: InboundMessage = {
      topic: packet.topic,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      qos: packet.qos,
      retain: packet.retain,
      userProperties: packet.properties?.userProperties,
      properties: packet.properties,
    }
    if (packet.qos === 2 && this.#qos2.has(id)) {
      // A resend of a message already delivered: acknowledge, do not deliver again.
      this.#chain = this.#chain.then(() => h.write(stream, { cmd: 'pubrec', messageId: id }))
      return
    }
    this.#chain = this.#chain
      .then(() => h.onMessage(msg))
      .then(
        () => {
          if (packet.qos === 1) h.write(stream, { cmd: 'puback', messageId: id })
          else if (packet.qos === 2) {
            this.#qos2.add(id)
            h.write(stream, { cmd: 'pubrec', messageId: id })
          }
        },
        (err: unknown) => {
          // Not acknowledged: close, so that the upstream delivers it again after the reconnect.
          h.logger.warn({ err, topic: msg.topic }, 'local delivery of an upstream message failed, reconnecting')
          h.fail(stream, new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'local delivery failed', { cause: err }))
        },
      )
  }
}
