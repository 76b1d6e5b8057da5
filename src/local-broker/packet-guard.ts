/**
 * Byte-level MQTT 3.1/3.1.1 guard in front of aedes.
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
 *   65,537 bytes). PUBLISH payloads are counted, never copied.
 * - An idle guard holds no Buffer and no closures: a handful of numbers, so it
 *   can sit on each of thousands of device connections.
 * - After the first violation the guard is closed for good: every later feed
 *   passes 0 bytes and returns that same violation.
 *
 * Where things are: this file frames the stream, checks fixed headers and
 * limits, and decides acknowledgements (whose ids ack-tracker.ts knows);
 * guard-connect.ts validates a CONNECT body, guard-checks.ts a PUBLISH topic
 * and SUBSCRIBE/UNSUBSCRIBE bodies.
 *
 * `guardConnection()` (guard-connection.ts) wires a guard into a connection
 * by wrapping its `read()` (see the comment there for why not a Transform). The broker must call
 * `guard.authenticated()` (or `connectionGuard(conn)?.authenticated()`) once it
 * has sent CONNACK 0, e.g. from aedes's `connackSent` event:
 *
 *   broker.on('connackSent', (connack, client) => {
 *     if (connack.returnCode === 0) connectionGuard(client.conn)?.authenticated()
 *   })
 *
 * aedes pauses reading from CONNECT until CONNACK is written, so no byte is fed
 * between the two; bytes pipelined in the same read as the CONNECT are fed
 * before it and held to the pre-connect limit.
 */
import { checkConnect } from './guard-connect.js'
import { checkPublish, checkSubscribe, checkUnsubscribe, type PartialViolation } from './guard-checks.js'

import {
  DEFAULT_PACKET_GUARD_LIMITS,
  type AckCheck,
  type GuardResult,
  type GuardViolation,
  type GuardViolationReason,
  type PacketGuardLimits,
} from './guard-types.js'

export {
  DEFAULT_PACKET_GUARD_LIMITS,
  type AckCheck,
  type GuardResult,
  type GuardViolation,
  type GuardViolationReason,
  type PacketGuardLimits,
} from './guard-types.js'

// Packet types, MQTT 3.1.1 §2.2.1
const CONNECT = 1
const CONNACK = 2
const PUBLISH = 3
const PUBACK = 4
const PUBREC = 5
const PUBREL = 6
const PUBCOMP = 7
const SUBSCRIBE = 8
const SUBACK = 9
const UNSUBSCRIBE = 10
const UNSUBACK = 11
const PINGREQ = 12
const PINGRESP = 13
const DISCONNECT = 14

// Parser states
const S_TYPE = 0 // next byte is a fixed header's first byte
const S_LENGTH = 1 // inside the remaining-length varint
const S_TOPIC_LENGTH = 2 // inside a PUBLISH's 2-byte topic length
const S_REGION = 3 // collecting a region to inspect
const S_SKIP = 4 // counting bytes that need no inspection
const S_CLOSED = 5

// Largest PUBLISH variable header: topic length, a 65,535-byte topic, packet id.
const MAX_PUBLISH_HEADER = 2 + 65_535 + 2
const EMPTY = Buffer.alloc(0)
const VARINT_WEIGHT = [1, 128, 16_384, 2_097_152]

export class PacketGuard {
  readonly #preConnectMax: number
  readonly #maxPayload: number
  readonly #acks: AckCheck | undefined

  #state = S_TYPE
  #byte1 = 0
  #remaining = 0
  #lengthBytes = 0
  #bodyLeft = 0
  #topicLength = 0
  #topicLengthBytes = 0
  #need = 0
  #acc: Buffer | null = null
  #accLength = 0
  /**
   * Where an accumulated CONNECT's bytes lie in the chunks already passed on
   * (mqtt-packet keeps those very Buffers until the packet completes), so an
   * MQTT 3.1 CONNECT's flags can be normalized in place: [chunk, chunk offset,
   * region offset, length].
   */
  #pieces: [Buffer, number, number, number][] | null = null
  #connectSeen = false
  #authenticated = false
  #clientId: string | undefined = undefined
  #violation: GuardViolation | undefined = undefined

  /** `acks`, when given, decides which non-zero packet ids a PUBACK, PUBREC, PUBREL or PUBCOMP may carry. */
  constructor(limits: Partial<PacketGuardLimits> = {}, acks?: AckCheck) {
    const pre = limits.preConnectMaxBytes ?? DEFAULT_PACKET_GUARD_LIMITS.preConnectMaxBytes
    const payload = limits.maxPayloadBytes ?? DEFAULT_PACKET_GUARD_LIMITS.maxPayloadBytes
    if (!Number.isSafeInteger(pre) || pre < 0) throw new RangeError('preConnectMaxBytes must be a non-negative integer')
    if (!Number.isSafeInteger(payload) || payload < 0)
      throw new RangeError('maxPayloadBytes must be a non-negative integer')
    this.#preConnectMax = pre
    this.#maxPayload = payload
    this.#acks = acks
  }

  /** Client id of a CONNECT that passed every check; undefined before that. */
  get clientId(): string | undefined {
    return this.#clientId
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
        case S_REGION: {
          const need = this.#need
          const acc = this.#acc
          if (acc === null && n - i >= need) {
            // whole region in this chunk: inspect it in place
            v = this.#onRegion(chunk, i, i + need)
            i += need
          } else {
            // Grow with what has arrived, not with what the header declares: a
            // client that announces 64 KiB and trickles 5 bytes must not cost
            // 64 KiB. allocUnsafeSlow, because a partial region can live as long
            // as a slow client and would otherwise pin an 8 KiB pool slab.
            const have = this.#accLength
            const take = Math.min(need - have, n - i)
            let buf = acc
            if (buf === null || have + take > buf.length) {
              buf = Buffer.allocUnsafeSlow(Math.min(need, Math.max(2 * (have + take), 256)))
              if (acc !== null) acc.copy(buf, 0, 0, have)
              this.#acc = buf
            }
            chunk.copy(buf, have, i, i + take)
            if (this.#byte1 >> 4 === CONNECT) (this.#pieces ??= []).push([chunk, i, have, take])
            this.#accLength = have + take
            i += take
            if (have + take === need) {
              this.#acc = null
              this.#accLength = 0
              v = this.#onRegion(buf, 0, need)
              this.#pieces = null
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
        this.#acc = null
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
    extra?: { limit?: GuardViolation['limit']; connackReturnCode?: number; clientId?: string; packetId?: number },
  ): GuardViolation {
    const clientId = extra?.clientId ?? this.#clientId
    return {
      reason,
      ...(rule === undefined ? {} : { rule }),
      detail,
      ...(extra?.limit === undefined ? {} : { limit: extra.limit }),
      ...(extra?.connackReturnCode === undefined ? {} : { connackReturnCode: extra.connackReturnCode }),
      packetType: this.#byte1 >> 4,
      ...(extra?.packetId === undefined ? {} : { packetId: extra.packetId }),
      ...(clientId === undefined ? {} : { clientId }),
    }
  }

  #tooLarge(limit: 'preConnectMaxBytes' | 'maxPayloadBytes', detail: string): GuardViolation {
    return this.#fail('packet-too-large', undefined, detail, { limit })
  }

  #checkFirstByte(b: number): GuardViolation | undefined {
    const type = b >> 4
    const flags = b & 0x0f
    if (!this.#connectSeen) {
      if (type !== CONNECT) return this.#fail('protocol-violation', '[MQTT-3.1.0-1]', 'first packet is not CONNECT')
      this.#connectSeen = true
    } else if (type === CONNECT) {
      return this.#fail('protocol-violation', '[MQTT-3.1.0-2]', 'second CONNECT on a connection')
    }
    switch (type) {
      case PUBLISH: {
        const qos = (flags >> 1) & 3
        if (qos === 3) return this.#fail('malformed', '[MQTT-3.3.1-4]', 'PUBLISH with QoS 3')
        if (qos === 0 && (flags & 0x08) !== 0)
          return this.#fail('malformed', '[MQTT-3.3.1-2]', 'PUBLISH with DUP set and QoS 0')
        return undefined
      }
      case PUBREL:
        return flags === 2
          ? undefined
          : this.#fail('malformed', '[MQTT-3.6.1-1]', 'PUBREL fixed-header flags are not 0010')
      case SUBSCRIBE:
        return flags === 2
          ? undefined
          : this.#fail('malformed', '[MQTT-3.8.1-1]', 'SUBSCRIBE fixed-header flags are not 0010')
      case UNSUBSCRIBE:
        return flags === 2
          ? undefined
          : this.#fail('malformed', '[MQTT-3.10.1-1]', 'UNSUBSCRIBE fixed-header flags are not 0010')
      case CONNECT:
      case PUBACK:
      case PUBREC:
      case PUBCOMP:
      case PINGREQ:
      case DISCONNECT:
        return flags === 0
          ? undefined
          : this.#fail('malformed', '[MQTT-2.2.2-2]', 'reserved fixed-header flags are set')
      case CONNACK:
      case SUBACK:
      case UNSUBACK:
      case PINGRESP:
        // CVE-2021-28166 (Mosquitto): a server-to-client packet sent to the broker
        return this.#fail('protocol-violation', undefined, 'packet type is only sent by a server')
      default:
        return this.#fail('protocol-violation', undefined, 'reserved packet type')
    }
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
        if (rl > this.#maxPayload + MAX_PUBLISH_HEADER)
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
        if (rl !== 2) return this.#fail('malformed', undefined, 'remaining length is not 2')
        this.#need = 2
        this.#state = S_REGION
        return undefined
      default: // PINGREQ, DISCONNECT: the only other types #checkFirstByte lets through
        if (rl !== 0) return this.#fail('malformed', undefined, 'remaining length is not 0')
        this.#state = S_TYPE
        return undefined
    }
  }

  #onTopicLength(): GuardViolation | undefined {
    const topicLength = this.#topicLength
    const region = topicLength + (((this.#byte1 >> 1) & 3) === 0 ? 0 : 2)
    this.#bodyLeft -= 2
    if (topicLength === 0) return this.#fail('protocol-violation', '[MQTT-4.7.3-1]', 'PUBLISH with an empty topic')
    if (region > this.#bodyLeft)
      return this.#fail('malformed', undefined, 'PUBLISH topic runs past the remaining length')
    if (this.#bodyLeft - region > this.#maxPayload) return this.#tooLarge('maxPayloadBytes', 'payload above the limit')
    this.#need = region
    this.#state = S_REGION
    return undefined
  }

  #onRegion(b: Buffer, s: number, e: number): GuardViolation | undefined {
    switch (this.#byte1 >> 4) {
      case PUBLISH: {
        this.#bodyLeft -= e - s
        this.#state = this.#bodyLeft === 0 ? S_TYPE : S_SKIP
        return this.#complete(checkPublish(b, s, e, this.#topicLength))
      }
      case CONNECT:
        this.#state = S_TYPE
        return this.#connect(b, s, e)
      case SUBSCRIBE:
        this.#state = S_TYPE
        return this.#complete(checkSubscribe(b, s, e))
      case PUBACK:
      case PUBREC:
      case PUBREL:
      case PUBCOMP: {
        this.#state = S_TYPE
        const id = (b[s]! << 8) | b[s + 1]!
        // no session ever uses packet identifier 0, so an acknowledgement of it is one it never sent
        if (id === 0)
          return this.#fail('protocol-violation', '[MQTT-2.3.1-1]', 'acknowledgement of packet identifier 0')
        if (this.#acks !== undefined && !this.#acks.accepts(this.#byte1 >> 4, id)) {
          return this.#fail(
            'unknown-packet-id',
            '[MQTT-4.8.0-1]',
            'acknowledgement of a packet identifier the session never used',
            { packetId: id },
          )
        }
        return undefined
      }
      default: // UNSUBSCRIBE
        this.#state = S_TYPE
        return this.#complete(checkUnsubscribe(b, s, e))
    }
  }

  #connect(b: Buffer, s: number, e: number): GuardViolation | undefined {
    const r = checkConnect(b, s, e, (at, value) => this.#patch(b, s, at, value))
    if (!('cleanSession' in r)) return this.#complete(r)
    this.#clientId = r.clientId
    this.#acks?.connecting?.(!r.cleanSession)
    return undefined
  }

  /** Completes a validator's violation with what the guard knows. */
  #complete(v: PartialViolation | undefined): GuardViolation | undefined {
    if (v === undefined) return undefined
    const clientId = v.clientId ?? this.#clientId
    return { ...v, packetType: this.#byte1 >> 4, ...(clientId === undefined ? {} : { clientId }) }
  }

  /** Writes one byte of the CONNECT region, in the inspected copy and in the chunks passed on. */
  #patch(b: Buffer, s: number, at: number, value: number): void {
    b[s + at] = value
    for (const [chunk, start, regionOffset, length] of this.#pieces ?? []) {
      if (at >= regionOffset && at < regionOffset + length) chunk[start + at - regionOffset] = value
    }
  }
}
