/**
 * Byte-level MQTT 3.1/3.1.1/5 guard in front of aedes.
 *
 * aedes 1.2 hands every byte it reads to mqtt-packet, which buffers a packet
 * until its declared remaining length has arrived: a 268 MB length sent before
 * CONNECT grows the broker without bound. mqtt-packet
 * also decodes strings with `Buffer#toString('utf8')`, which replaces ill-formed
 * UTF-8, so [MQTT-1.5.3-1] can no longer be checked once a packet is parsed.
 * `PacketGuard` therefore frames the inbound byte stream itself, checks size
 * limits as soon as a fixed header is known, and validates what MQTT 3.1.1
 * forbids but aedes lets through (probed against aedes 1.2.0: U+0000 and
 * ill-formed UTF-8 in topics and client ids, packet identifier 0, trailing
 * bytes in CONNECT, password without user name, wildcards in a Will topic,
 * UNSUBSCRIBE without filters, wrong lengths of PUBACK/PINGREQ, and topic
 * filters such as `a#`, `+a`, `a+/b` that its `validateTopic` accepts).
 *
 * MQTT 5 (only with `allowMqtt5`; docs/mqtt5.md): the protocol level comes
 * from CONNECT, and the rest of the connection is held to MQTT 5's rules. A
 * violation then carries the `reasonCode` that guard-connection.ts sends in a
 * CONNACK or DISCONNECT before closing; the client's CONNECT values are `mqtt5`.
 *
 * Invariants:
 * - Bytes stream through: `feed()` passes every byte of a chunk unless a
 *   violation is found in it. A packet that turns out to be invalid may already
 *   have had its first bytes passed in earlier chunks, but never its last byte,
 *   so mqtt-packet never completes (and aedes never sees) an invalid packet;
 *   every check below is decided no later than the packet's last byte.
 * - Nothing is copied for a packet that lies wholly in one chunk. Bytes are
 *   accumulated across chunks only for the regions that must be inspected: the
 *   CONNECT body and SUBSCRIBE/UNSUBSCRIBE bodies (each at most
 *   `preConnectMaxBytes`), and a PUBLISH's topic and packet identifier (at most
 *   65,537 bytes); in MQTT 5 also a PUBLISH's properties and the bodies of
 *   acknowledgements and DISCONNECT (each at most `preConnectMaxBytes`).
 *   PUBLISH payloads are counted, never copied.
 * - An idle guard holds no Buffer and no closures: a handful of numbers, so it
 *   can sit on each of thousands of device connections (on MQTT 5 also the
 *   client's CONNECT values and, once the client sets a Topic Alias, a bitset
 *   of `topicAliasMaximum` bits).
 * - After the first violation the guard is closed for good: every later feed
 *   passes 0 bytes and returns that same violation.
 *
 * Where things are: this file frames the stream, checks limits, and decides
 * acknowledgements (whose ids ack-tracker.ts knows); guard-header.ts checks a
 * fixed header's first byte, guard-region.ts collects a region split across
 * chunks; guard-connect.ts validates a CONNECT body (guard-v5-connect.ts an
 * MQTT 5 one), guard-checks.ts a PUBLISH topic and SUBSCRIBE/UNSUBSCRIBE
 * bodies, guard-v5-checks.ts what MQTT 5 adds.
 *
 * `guardConnection()` (guard-connection.ts) wires a guard into a connection;
 * the broker must call `authenticated()` once it has sent CONNACK 0 (see there).
 */
import { checkConnect } from './guard-connect.js'
import { checkPublish, checkSubscribe, checkUnsubscribe, fail, type PartialViolation } from './guard-checks.js'
import { checkFirstByte } from './guard-header.js'
import { PartialRegion } from './guard-region.js'
import { asMqtt5, checkAckV5, checkSubscribeV5, checkUnsubscribeV5, Mqtt5Session } from './guard-v5-checks.js'

import {
  resolveGuardLimits,
  type AckCheck,
  type GuardResult,
  type GuardViolation,
  type GuardViolationReason,
  type Mqtt5ClientLimits,
  type PacketGuardLimits,
} from './guard-types.js'

export {
  DEFAULT_PACKET_GUARD_LIMITS,
  type AckCheck,
  type GuardResult,
  type GuardViolation,
  type GuardViolationReason,
  type Mqtt5ClientLimits,
  type PacketGuardLimits,
} from './guard-types.js'
import {
  CONNECT,
  PUBLISH,
  PUBACK,
  PUBREC,
  PUBREL,
  PUBCOMP,
  SUBSCRIBE,
  UNSUBSCRIBE,
  PINGREQ,
  DISCONNECT,
} from './packet-types.js'

// Parser states
const S_TYPE = 0 // next byte is a fixed header's first byte
const S_LENGTH = 1 // inside the remaining-length varint
const S_TOPIC_LENGTH = 2 // inside a PUBLISH's 2-byte topic length
const S_REGION = 3 // collecting a region to inspect
const S_SKIP = 4 // counting bytes that need no inspection
const S_CLOSED = 5
const S_PROPERTY_LENGTH = 6 // inside an MQTT 5 PUBLISH's property-length varint

// Largest PUBLISH variable header: topic length, a 65,535-byte topic, packet id.
const MAX_PUBLISH_HEADER = 2 + 65_535 + 2
const EMPTY = Buffer.alloc(0)
const VARINT_WEIGHT = [1, 128, 16_384, 2_097_152]

export class PacketGuard {
  readonly #preConnectMax: number
  readonly #maxPayload: number
  readonly #allowMqtt5: boolean
  readonly #topicAliasMaximum: number
  readonly #acks: AckCheck | undefined

  #state = S_TYPE
  #byte1 = 0
  #remaining = 0
  #lengthBytes = 0
  #bodyLeft = 0
  #topicLength = 0
  #topicLengthBytes = 0
  #need = 0
  /** A region being collected across chunks; null otherwise. */
  #partial: PartialRegion | null = null
  #connectSeen = false
  #authenticated = false
  #clientId: string | undefined = undefined
  #protocolVersion: number | undefined = undefined
  /** Set once an MQTT 5 CONNECT passed: the connection is held to MQTT 5's rules. */
  #v5: Mqtt5Session | null = null
  /** MQTT 5 PUBLISH: the region being collected is its properties (not its topic). */
  #inProperties = false
  #propertyLength = 0
  #propertyLengthBytes = 0
  #violation: GuardViolation | undefined = undefined

  /** `acks`, when given, decides which non-zero packet ids a PUBACK, PUBREC, PUBREL or PUBCOMP may carry. */
  constructor(limits: Partial<PacketGuardLimits> = {}, acks?: AckCheck) {
    const l = resolveGuardLimits(limits)
    this.#preConnectMax = l.preConnectMaxBytes
    this.#maxPayload = l.maxPayloadBytes
    this.#allowMqtt5 = l.allowMqtt5
    this.#topicAliasMaximum = l.topicAliasMaximum
    this.#acks = acks
  }

  /** Client id of a CONNECT that passed every check; undefined before that. */
  get clientId(): string | undefined {
    return this.#clientId
  }

  /** Protocol level of a CONNECT that passed every check (3, 4 or 5); undefined before that. */
  get protocolVersion(): number | undefined {
    return this.#protocolVersion
  }

  /** What an MQTT 5 client announced in a CONNECT that passed every check; undefined otherwise. */
  get mqtt5(): Mqtt5ClientLimits | undefined {
    return this.#v5?.limits
  }

  /** Whether `authenticated()` was called (CONNACK 0 went out). */
  get isAuthenticated(): boolean {
    return this.#authenticated
  }

  /** The violation that closed the guard, if any. */
  get violation(): GuardViolation | undefined {
    return this.#violation
  }

  /**
   * The broker accepted the CONNECT (CONNACK 0 went out). Packets whose fixed
   * header is read from now on get the post-authentication limits.
   */
  authenticated(): void {
    this.#authenticated = true
  }

  feed(chunk: Buffer): GuardResult {
    if (this.#violation !== undefined) return { pass: 0, violation: this.#violation }
    const n = chunk.length
    let i = 0
    // Where the current packet starts in this chunk; 0 when it began in an earlier one.
    let start = 0
    let v: GuardViolation | undefined

    while (i < n) {
      switch (this.#state) {
        case S_TYPE: {
          start = i
          const b = chunk[i++]!
          this.#byte1 = b
          this.#remaining = 0
          this.#lengthBytes = 0
          v = this.#checkFirstByte(b)
          if (v === undefined) this.#state = S_LENGTH
          break
        }
        case S_LENGTH: {
          const b = chunk[i++]!
          // base-128, least significant group first (MQTT 3.1.1 §2.2.3)
          this.#remaining += (b & 0x7f) * VARINT_WEIGHT[this.#lengthBytes]!
          this.#lengthBytes++
          if ((b & 0x80) === 0) v = this.#onHeader()
          else if (this.#lengthBytes === 4) {
            // MQTT 3.1.1 §2.2.3: at most four bytes
            v = this.#fail('malformed', undefined, 'remaining length longer than four bytes')
          }
          break
        }
        case S_TOPIC_LENGTH: {
          this.#topicLength = (this.#topicLength << 8) | chunk[i++]!
          if (++this.#topicLengthBytes === 2) v = this.#onTopicLength()
          break
        }
        case S_PROPERTY_LENGTH: {
          const b = chunk[i++]!
          this.#propertyLength += (b & 0x7f) * VARINT_WEIGHT[this.#propertyLengthBytes]!
          this.#propertyLengthBytes++
          this.#bodyLeft--
          if ((b & 0x80) === 0) {
            v =
              this.#propertyLengthBytes > 1 && b === 0
                ? this.#fail('malformed', '[MQTT-1.5.5-1]', 'property length is not in its shortest form')
                : this.#onPropertyLength()
          } else if (this.#propertyLengthBytes === 4) {
            v = this.#fail('malformed', undefined, 'property length longer than four bytes (MQTT 5 §1.5.5)')
          } else if (this.#bodyLeft === 0) {
            v = this.#fail('malformed', undefined, 'property length runs past the packet')
          }
          break
        }
        case S_REGION: {
          const need = this.#need
          let partial = this.#partial
          if (partial === null && n - i >= need) {
            // whole region in this chunk: inspect it in place
            v = this.#onRegion(chunk, i, i + need)
            i += need
          } else {
            partial ??= this.#partial = new PartialRegion(need)
            i += partial.add(chunk, i, n, this.#byte1 >> 4 === CONNECT)
            if (partial.length === need) {
              v = this.#onRegion(partial.buf, 0, need)
              this.#partial = null
            }
          }
          break
        }
        case S_SKIP: {
          const take = Math.min(this.#bodyLeft, n - i)
          i += take
          this.#bodyLeft -= take
          if (this.#bodyLeft === 0) this.#state = S_TYPE
          break
        }
        default:
          return { pass: 0, violation: this.#violation! }
      }
      if (v !== undefined) {
        this.#state = S_CLOSED
        this.#partial = null
        this.#violation = v
        return { pass: start, violation: v }
      }
    }
    return { pass: n }
  }

  #fail(
    reason: GuardViolationReason,
    rule: string | undefined,
    detail: string,
    extra?: Parameters<typeof fail>[3],
  ): GuardViolation {
    return this.#complete(fail(reason, rule, detail, extra))!
  }

  #tooLarge(limit: 'preConnectMaxBytes' | 'maxPayloadBytes', detail: string): GuardViolation {
    return this.#fail('packet-too-large', undefined, detail, { limit })
  }

  /** Room that MQTT 5 PUBLISH properties may take besides topic and payload. */
  #propertyRoom(): number {
    return this.#v5 === null ? 0 : 4 + this.#preConnectMax
  }

  #checkFirstByte(b: number): GuardViolation | undefined {
    const type = b >> 4
    if (!this.#connectSeen) {
      if (type !== CONNECT) return this.#fail('protocol-violation', '[MQTT-3.1.0-1]', 'first packet is not CONNECT')
      this.#connectSeen = true
    } else if (type === CONNECT) {
      return this.#fail('protocol-violation', '[MQTT-3.1.0-2]', 'second CONNECT on a connection')
    }
    return this.#complete(checkFirstByte(b, this.#v5 !== null))
  }

  #onHeader(): GuardViolation | undefined {
    const type = this.#byte1 >> 4
    const rl = this.#remaining
    this.#bodyLeft = rl
    switch (type) {
      case CONNECT:
      case SUBSCRIBE:
      case UNSUBSCRIBE:
        if (rl > this.#preConnectMax) return this.#tooLarge('preConnectMaxBytes', 'remaining length above the limit')
        if (rl === 0) return this.#onRegion(EMPTY, 0, 0)
        this.#need = rl
        this.#state = S_REGION
        return undefined
      case PUBLISH:
        if (!this.#authenticated && rl > this.#preConnectMax) {
          return this.#tooLarge('preConnectMaxBytes', 'remaining length above the limit')
        }
        // refuse at once what cannot fit even under the longest topic
        if (rl > this.#maxPayload + MAX_PUBLISH_HEADER + this.#propertyRoom())
          return this.#tooLarge('maxPayloadBytes', 'payload above the limit')
        if (rl < 2) return this.#fail('malformed', undefined, 'PUBLISH too short for its topic length')
        this.#topicLength = 0
        this.#topicLengthBytes = 0
        this.#state = S_TOPIC_LENGTH
        return undefined
      case PUBACK:
      case PUBREC:
      case PUBREL:
      case PUBCOMP:
        // MQTT 5 adds a reason code and properties after the id (§3.4.2)
        if (rl !== 2 && (this.#v5 === null || rl < 2))
          return this.#fail('malformed', undefined, 'remaining length is not 2')
        if (rl > this.#preConnectMax) return this.#tooLarge('preConnectMaxBytes', 'remaining length above the limit')
        this.#need = rl
        this.#state = S_REGION
        return undefined
      default: // PINGREQ, DISCONNECT: the only other types checkFirstByte lets through
        if (rl === 0) {
          this.#state = S_TYPE
          return undefined
        }
        // MQTT 5 DISCONNECT: reason code and properties (§3.14.2)
        if (this.#v5 === null || type === PINGREQ)
          return this.#fail('malformed', undefined, 'remaining length is not 0')
        if (rl > this.#preConnectMax) return this.#tooLarge('preConnectMaxBytes', 'remaining length above the limit')
        this.#need = rl
        this.#state = S_REGION
        return undefined
    }
  }

  #onTopicLength(): GuardViolation | undefined {
    const topicLength = this.#topicLength
    const region = topicLength + (((this.#byte1 >> 1) & 3) === 0 ? 0 : 2)
    this.#bodyLeft -= 2
    // MQTT 5: an empty topic is allowed with a Topic Alias, decided with the properties
    if (topicLength === 0 && this.#v5 === null)
      return this.#fail('protocol-violation', '[MQTT-4.7.3-1]', 'PUBLISH with an empty topic')
    if (region > this.#bodyLeft)
      return this.#fail('malformed', undefined, 'PUBLISH topic runs past the remaining length')
    if (this.#bodyLeft - region > this.#maxPayload + this.#propertyRoom())
      return this.#tooLarge('maxPayloadBytes', 'payload above the limit')
    // an MQTT 5 QoS 0 PUBLISH with an empty topic: nothing to collect, and its last byte may be this one
    if (region === 0) return this.#onRegion(EMPTY, 0, 0)
    this.#need = region
    this.#state = S_REGION
    return undefined
  }

  #onPropertyLength(): GuardViolation | undefined {
    const length = this.#propertyLength
    if (length > this.#bodyLeft) return this.#fail('malformed', undefined, 'property length runs past the packet')
    if (length > this.#preConnectMax) return this.#tooLarge('preConnectMaxBytes', 'PUBLISH properties above the limit')
    if (this.#bodyLeft - length > this.#maxPayload) return this.#tooLarge('maxPayloadBytes', 'payload above the limit')
    if (length === 0) return this.#onPublishProperties(EMPTY, 0, 0)
    this.#inProperties = true
    this.#need = length
    this.#state = S_REGION
    return undefined
  }

  #onPublishProperties(b: Buffer, s: number, e: number): GuardViolation | undefined {
    this.#inProperties = false
    this.#state = this.#bodyLeft === 0 ? S_TYPE : S_SKIP
    return this.#complete(this.#v5!.publish(b, s, e, this.#topicLength === 0))
  }

  #onRegion(b: Buffer, s: number, e: number): GuardViolation | undefined {
    const type = this.#byte1 >> 4
    switch (type) {
      case PUBLISH: {
        this.#bodyLeft -= e - s
        if (this.#inProperties) return this.#onPublishProperties(b, s, e)
        this.#state = this.#bodyLeft === 0 ? S_TYPE : S_SKIP
        const v = this.#complete(checkPublish(b, s, e, this.#topicLength))
        if (v !== undefined || this.#v5 === null) return v
        // MQTT 5: properties follow the packet id
        if (this.#bodyLeft === 0) return this.#fail('malformed', undefined, 'PUBLISH without a property length')
        this.#propertyLength = 0
        this.#propertyLengthBytes = 0
        this.#state = S_PROPERTY_LENGTH
        return undefined
      }
      case CONNECT:
        this.#state = S_TYPE
        return this.#connect(b, s, e)
      case SUBSCRIBE:
        this.#state = S_TYPE
        return this.#complete(this.#v5 === null ? checkSubscribe(b, s, e) : checkSubscribeV5(b, s, e))
      case UNSUBSCRIBE:
        this.#state = S_TYPE
        return this.#complete(this.#v5 === null ? checkUnsubscribe(b, s, e) : checkUnsubscribeV5(b, s, e))
      case DISCONNECT: // MQTT 5 only: an MQTT 3.1.1 DISCONNECT has no body
        this.#state = S_TYPE
        return this.#complete(this.#v5!.disconnect(b, s, e))
      default: {
        // PUBACK, PUBREC, PUBREL, PUBCOMP
        this.#state = S_TYPE
        const id = (b[s]! << 8) | b[s + 1]!
        // no session ever uses packet identifier 0, so an acknowledgement of it is one it never sent
        if (id === 0)
          return this.#fail('protocol-violation', '[MQTT-2.3.1-1]', 'acknowledgement of packet identifier 0')
        if (e - s > 2) {
          const v = this.#complete(checkAckV5(b, s, e, type))
          if (v !== undefined) return v
        }
        if (this.#acks !== undefined && !this.#acks.accepts(type, id)) {
          return this.#fail(
            'unknown-packet-id',
            '[MQTT-4.8.0-1]',
            'acknowledgement of a packet identifier the session never used',
            { packetId: id },
          )
        }
        return undefined
      }
    }
  }

  #connect(b: Buffer, s: number, e: number): GuardViolation | undefined {
    const patch = (at: number, value: number): void => {
      b[s + at] = value
      this.#partial?.patchChunks(at, value)
    }
    const r = checkConnect(b, s, e, patch, this.#allowMqtt5)
    if (!('cleanSession' in r)) return this.#complete(r)
    this.#clientId = r.clientId
    this.#protocolVersion = r.protocolVersion
    if (r.mqtt5 !== undefined) this.#v5 = new Mqtt5Session(r.mqtt5, this.#topicAliasMaximum)
    this.#acks?.connecting?.(!r.cleanSession)
    return undefined
  }

  /** Completes a validator's violation with what the guard knows (and MQTT 5's ids and reason code). */
  #complete(partial: PartialViolation | undefined): GuardViolation | undefined {
    if (partial === undefined) return undefined
    const v = this.#v5 === null ? partial : asMqtt5(partial)
    const clientId = v.clientId ?? this.#clientId
    return { ...v, packetType: this.#byte1 >> 4, ...(clientId === undefined ? {} : { clientId }) }
  }
}
