// The in-flight window of MqttSession (us → upstream): owns invariants 1-2 of
// mqtt-session.ts. A QoS 1/2 message stays here from its PUBLISH until PUBACK
// / PUBCOMP (or an error reason code) and its callback runs exactly once,
// then; after a reconnect the entries are resent first, in their original
// order, with their original packet ids (DUP set when the session was
// resumed, PUBREL for those already past PUBREC) [MQTT-4.4.0-1]. Map
// insertion order is the publish order.
import type { Duplex } from 'node:stream'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import type { Logger } from 'pino'
import { BridgeError } from './errors.js'
import type { AckType } from './mqtt-codec.js'
import { rejected } from './mqtt-reasons.js'

/** err is set when the upstream refused the message (reasonCode ≥ 0x80) or the session gave it up. */
export type PublishCallback = (err: BridgeError | undefined, reasonCode: number) => void

interface InflightEntry {
  readonly packet: IPublishPacket
  state: 'publish' | 'pubrel'
  readonly cb: PublishCallback
  /** Epoch ms; a resend after it is not made (see resend()). */
  readonly expiresAt: number | null
}

export class InflightWindow {
  readonly #entries = new Map<number, InflightEntry>()
  readonly #write: (stream: Duplex, packet: Packet) => void
  readonly #v5: boolean
  readonly #log: Logger

  constructor(write: (stream: Duplex, packet: Packet) => void, protocolVersion: 4 | 5, logger: Logger) {
    this.#write = write
    this.#v5 = protocolVersion === 5
    this.#log = logger
  }

  get size(): number {
    return this.#entries.size
  }

  has(id: number): boolean {
    return this.#entries.has(id)
  }

  add(packet: IPublishPacket, cb: PublishCallback, expiresAt: number | null): void {
    this.#entries.set(packet.messageId as number, { packet, state: 'publish', cb, expiresAt })
  }

  /**
   * Rewrites every entry on a new connection, in order. A message that
   * expired during the outage is not sent again (the upstream holds no state
   * for it): it leaves the window, and the caller settles its callback once
   * the connection is set up.
   */
  resend(stream: Duplex, sessionPresent: boolean, now: number): { resent: number; expired: PublishCallback[] } {
    let resent = 0
    const expired: PublishCallback[] = []
    for (const [id, e] of this.#entries) {
      if (sessionPresent && e.state === 'pubrel') {
        this.#write(stream, { cmd: 'pubrel', messageId: id })
      } else if (e.expiresAt !== null && e.expiresAt <= now) {
        this.#entries.delete(id)
        expired.push(e.cb)
        continue
      } else {
        e.state = 'publish'
        this.#write(stream, resendPacket(e, sessionPresent, now))
      }
      resent++
    }
    return { resent, expired }
  }

  onAck(stream: Duplex, type: Exclude<AckType, 'pubrel'>, id: number, code: number): void {
    if (type === 'puback') return this.#acked(id, 1, code)
    if (type === 'pubcomp') return this.#acked(id, 2, code)
    const e = this.#entries.get(id)
    if (e === undefined || e.packet.qos !== 2) {
      // Unknown id: answer so that the upstream can finish its state [MQTT-4.3.3].
      this.#write(
        stream,
        this.#v5 ? { cmd: 'pubrel', messageId: id, reasonCode: 0x92 } : { cmd: 'pubrel', messageId: id },
      )
      return
    }
    if (code >= 0x80) {
      this.#entries.delete(id)
      e.cb(rejected(code), code)
      return
    }
    e.state = 'pubrel'
    this.#write(stream, { cmd: 'pubrel', messageId: id })
  }

  /** Gives up every entry: each callback gets EDGE_ERR_BRIDGE_STOPPED. Returns how many. */
  abandon(): number {
    const entries = [...this.#entries.values()]
    this.#entries.clear()
    const err = new BridgeError('EDGE_ERR_BRIDGE_STOPPED', 'bridge stopped before the upstream acknowledged')
    for (const e of entries) e.cb(err, 0)
    return entries.length
  }

  #acked(id: number, qos: 1 | 2, code: number): void {
    const e = this.#entries.get(id)
    if (e === undefined || e.packet.qos !== qos || (qos === 2 && e.state !== 'pubrel')) {
      this.#log.debug({ messageId: id, qos }, 'acknowledgement for an unknown packet id ignored')
      return
    }
    this.#entries.delete(id)
    e.cb(code >= 0x80 ? rejected(code) : undefined, code)
  }
}

/** A resend: DUP when the session resumed, and the Message Expiry Interval of what is left now. */
function resendPacket(e: InflightEntry, dup: boolean, now: number): IPublishPacket {
  const p = e.packet
  if (e.expiresAt === null || p.properties?.messageExpiryInterval === undefined) return { ...p, dup }
  const messageExpiryInterval = Math.max(1, Math.ceil((e.expiresAt - now) / 1000))
  return { ...p, dup, properties: { ...p.properties, messageExpiryInterval } }
}
