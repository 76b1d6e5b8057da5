// The upstream session as a small MQTT client for the agent's own
// request/reply exchanges with the upstream (the certificate renewal of
// src/certs/certificate-renewer.ts). Its messages bypass the buffer and the
// rules, in both directions; messages on its topics go to its listeners only.
import { EventEmitter } from 'node:events'
import { BridgeError } from './errors.js'
import type { OutboundMessage } from './mqtt-session.js'
import type { UpstreamConnection } from './upstream-connection.js'

/** Structurally an mqtt.js client for these four calls. */
export interface ControlChannel {
  /** Subscribes to one topic name (no wildcards) on the current connection. */
  subscribeAsync(topic: string, opts: { qos: 0 | 1 | 2 }): Promise<void>
  /** Resolves on PUBACK (QoS 1/2) or once written (QoS 0); rejects when not connected or refused. */
  publishAsync(topic: string, payload: string | Buffer, opts: { qos: 0 | 1 | 2 }): Promise<void>
  on(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
  off(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
}

export class UpstreamControl implements ControlChannel {
  readonly #conn: UpstreamConnection
  readonly #topics = new Set<string>()
  readonly #events = new EventEmitter<{ message: [topic: string, payload: Buffer] }>()

  constructor(conn: UpstreamConnection) {
    this.#conn = conn
  }

  /** Takes an inbound message if it is on one of the channel's topics; false: not ours. */
  deliver(topic: string, payload: Buffer): boolean {
    if (!this.#topics.has(topic)) return false
    this.#events.emit('message', topic, payload)
    return true
  }

  async subscribeAsync(topic: string, opts: { qos: 0 | 1 | 2 }): Promise<void> {
    // Registered before the SUBSCRIBE: a retained or queued message may follow the SUBACK at once.
    this.#topics.add(topic)
    const [granted] = await this.#conn.session.subscribe([{ topic, qos: opts.qos, nl: true, rap: false, rh: 0 }])
    if (granted === undefined || granted >= 0x80) {
      throw new BridgeError('EDGE_ERR_BRIDGE_UPSTREAM_REJECTED', `the upstream refused the subscription to ${topic}`, {
        reasonCode: granted ?? 0x80,
      })
    }
  }

  publishAsync(topic: string, payload: string | Buffer, opts: { qos: 0 | 1 | 2 }): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload
      const msg: OutboundMessage = { topic, payload: body, qos: opts.qos, retain: false }
      try {
        this.#conn.session.publish(msg, (err) => (err === undefined ? resolve() : reject(err)))
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)))
      }
    })
  }

  on(event: 'message', listener: (topic: string, payload: Buffer) => void): this {
    this.#events.on(event, listener)
    return this
  }

  off(event: 'message', listener: (topic: string, payload: Buffer) => void): this {
    this.#events.off(event, listener)
    return this
  }
}
