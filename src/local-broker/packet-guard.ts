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
import {
  scanString,
  STR_CONTROL,
  STR_HASH_PLACEMENT,
  STR_NUL,
  STR_OK,
  STR_PLUS_PLACEMENT,
  STR_UTF8,
  STR_WILDCARD,
} from './mqtt-strings.js'

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
        return this.#checkPublish(b, s, e)
      }
      case CONNECT:
        this.#state = S_TYPE
        return this.#checkConnect(b, s, e)
      case SUBSCRIBE:
        this.#state = S_TYPE
        return this.#checkSubscribe(b, s, e)
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
        return this.#checkUnsubscribe(b, s, e)
    }
  }

  #checkPublish(b: Buffer, s: number, e: number): GuardViolation | undefined {
    const topicEnd = s + this.#topicLength
    switch (scanString(b, s, topicEnd, STR_WILDCARD)) {
      case STR_NUL:
        return this.#fail('malformed', '[MQTT-4.7.3-2]', 'topic contains U+0000')
      case STR_CONTROL:
        return this.#fail('malformed', undefined, 'topic contains a control character (MQTT 3.1.1 §1.5.3)')
      case STR_UTF8:
        return this.#fail('malformed', '[MQTT-1.5.3-1]', 'topic is not well-formed UTF-8')
      case STR_WILDCARD:
        return this.#fail('protocol-violation', '[MQTT-3.3.2-2]', 'PUBLISH topic contains a wildcard')
    }
    if (topicEnd < e && ((b[topicEnd]! << 8) | b[topicEnd + 1]!) === 0) {
      return this.#fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
    }
    return undefined
  }

  #checkConnect(b: Buffer, s: number, e: number): GuardViolation | undefined {
    let p = s
    if (e - p < 2) return this.#fail('malformed', undefined, 'CONNECT too short for its protocol name')
    const nameLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    // name, level, flags, keep alive
    if (e - p < nameLength + 4) return this.#fail('malformed', undefined, 'CONNECT variable header truncated')
    const isMqtt = nameLength === 4 && b[p] === 0x4d && b[p + 1] === 0x51 && b[p + 2] === 0x54 && b[p + 3] === 0x54
    const isMqisdp =
      nameLength === 6 &&
      b[p] === 0x4d &&
      b[p + 1] === 0x51 &&
      b[p + 2] === 0x49 &&
      b[p + 3] === 0x73 &&
      b[p + 4] === 0x64 &&
      b[p + 5] === 0x70
    p += nameLength
    if (!isMqtt && !isMqisdp) return this.#fail('protocol-violation', '[MQTT-3.1.2-1]', 'unknown protocol name')
    // Bit 7 is the bridge bit (0x83/0x84) that Mosquitto bridges send with try_private;
    // mqtt-packet and aedes accept it, so the guard does too.
    const level = b[p]! & 0x7f
    if (level !== (isMqtt ? 4 : 3)) {
      // an MQTT 5 CONNECT lands here: the rest of it is not ours to validate
      return this.#fail('unsupported-protocol-version', '[MQTT-3.1.2-2]', 'unsupported protocol level', {
        connackReturnCode: 0x01,
      })
    }
    let flags = b[p + 1]!
    const flagsAt = p + 1 - s
    p += 4
    const will = (flags & 0x04) !== 0
    const willQos = (flags >> 3) & 3
    if (level === 3) {
      // MQTT 3.1 reserves bit 0 without requiring it to be 0, and says nothing
      // of Will QoS/Retain without a Will; Mosquitto accepts such a CONNECT.
      // mqtt-packet applies 3.1.1's rules to every level, so the bits that
      // 3.1.1 forbids are cleared in the bytes it will parse.
      const normalized = will ? flags & ~0x01 : flags & ~0x39
      if (normalized !== flags) {
        this.#patch(b, s, flagsAt, normalized)
        flags = normalized
      }
      if (will && willQos === 3) return this.#fail('malformed', undefined, 'Will QoS is 3')
    } else {
      if ((flags & 0x01) !== 0) return this.#fail('malformed', '[MQTT-3.1.2-3]', 'CONNECT reserved flag is set')
      if (will) {
        if (willQos === 3) return this.#fail('malformed', '[MQTT-3.1.2-14]', 'Will QoS is 3')
      } else {
        if (willQos !== 0) return this.#fail('malformed', '[MQTT-3.1.2-13]', 'Will QoS set without the Will flag')
        if ((flags & 0x20) !== 0)
          return this.#fail('malformed', '[MQTT-3.1.2-15]', 'Will Retain set without the Will flag')
      }
    }
    const hasUser = (flags & 0x80) !== 0
    const hasPassword = (flags & 0x40) !== 0
    if (hasPassword && !hasUser)
      return this.#fail('malformed', '[MQTT-3.1.2-22]', 'password flag set without user name flag')

    // Payload. Every field is a 2-byte length and that many bytes, in this order.
    if (e - p < 2) return this.#fail('malformed', '[MQTT-3.1.3-3]', 'client identifier missing')
    const idLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < idLength) return this.#fail('malformed', '[MQTT-3.1.3-3]', 'client identifier truncated')
    const idStart = p
    switch (scanString(b, p, p + idLength, STR_OK)) {
      case STR_NUL:
        return this.#fail('malformed', '[MQTT-1.5.3-2]', 'client identifier contains U+0000')
      case STR_CONTROL:
        return this.#fail('malformed', undefined, 'client identifier contains a control character (MQTT 3.1.1 §1.5.3)')
      case STR_UTF8:
        return this.#fail('malformed', '[MQTT-1.5.3-1]', 'client identifier is not well-formed UTF-8')
    }
    p += idLength
    const clientId = b.toString('utf8', idStart, p)
    const known = { clientId }

    if (will) {
      if (e - p < 2) return this.#fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic missing', known)
      const topicLength = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < topicLength) return this.#fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic truncated', known)
      if (topicLength === 0) return this.#fail('protocol-violation', '[MQTT-4.7.3-1]', 'Will Topic is empty', known)
      switch (scanString(b, p, p + topicLength, STR_WILDCARD)) {
        case STR_NUL:
          return this.#fail('malformed', '[MQTT-4.7.3-2]', 'Will Topic contains U+0000', known)
        case STR_CONTROL:
          return this.#fail(
            'malformed',
            undefined,
            'Will Topic contains a control character (MQTT 3.1.1 §1.5.3)',
            known,
          )
        case STR_UTF8:
          return this.#fail('malformed', '[MQTT-1.5.3-1]', 'Will Topic is not well-formed UTF-8', known)
        case STR_WILDCARD:
          return this.#fail('protocol-violation', '[MQTT-4.7.1-1]', 'Will Topic contains a wildcard', known)
      }
      p += topicLength
      if (e - p < 2) return this.#fail('malformed', '[MQTT-3.1.2-9]', 'Will Message missing', known)
      const messageLength = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < messageLength) return this.#fail('malformed', '[MQTT-3.1.2-9]', 'Will Message truncated', known)
      p += messageLength
    }
    if (hasUser) {
      if (e - p < 2) return this.#fail('malformed', '[MQTT-3.1.2-19]', 'user name missing', known)
      const userLength = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < userLength) return this.#fail('malformed', '[MQTT-3.1.2-19]', 'user name truncated', known)
      switch (scanString(b, p, p + userLength, STR_OK)) {
        case STR_NUL:
          return this.#fail('malformed', '[MQTT-1.5.3-2]', 'user name contains U+0000', known)
        case STR_CONTROL:
          return this.#fail('malformed', undefined, 'user name contains a control character (MQTT 3.1.1 §1.5.3)', known)
        case STR_UTF8:
          return this.#fail('malformed', '[MQTT-3.1.3-11]', 'user name is not well-formed UTF-8', known)
      }
      p += userLength
    }
    if (hasPassword) {
      // binary data: any bytes are allowed
      if (e - p < 2) return this.#fail('malformed', '[MQTT-3.1.2-21]', 'password missing', known)
      const passwordLength = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < passwordLength) return this.#fail('malformed', '[MQTT-3.1.2-21]', 'password truncated', known)
      p += passwordLength
    }
    if (p !== e) return this.#fail('malformed', undefined, 'CONNECT has bytes after its last field', known)

    // Identifier checks come last: [MQTT-3.1.4-1] wants a malformed CONNECT
    // closed without any CONNACK, so only a well-formed one earns code 0x02.
    if (idLength === 0) {
      if (level === 3) {
        // MQTT 3.1 §3.1: the client id is 1 to 23 characters (aedes checks the upper bound)
        return this.#fail('identifier-rejected', undefined, 'MQTT 3.1 CONNECT with an empty client identifier', {
          connackReturnCode: 0x02,
        })
      }
      if ((flags & 0x02) === 0) {
        return this.#fail('identifier-rejected', '[MQTT-3.1.3-8]', 'empty client identifier without clean session', {
          connackReturnCode: 0x02,
        })
      }
    }
    this.#clientId = clientId
    return undefined
  }

  /** Writes one byte of the CONNECT region, in the inspected copy and in the chunks passed on. */
  #patch(b: Buffer, s: number, at: number, value: number): void {
    b[s + at] = value
    for (const [chunk, start, regionOffset, length] of this.#pieces ?? []) {
      if (at >= regionOffset && at < regionOffset + length) chunk[start + at - regionOffset] = value
    }
  }

  #checkSubscribe(b: Buffer, s: number, e: number): GuardViolation | undefined {
    if (e - s < 2) return this.#fail('malformed', undefined, 'SUBSCRIBE too short for its packet identifier')
    if (((b[s]! << 8) | b[s + 1]!) === 0)
      return this.#fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
    let p = s + 2
    if (p === e) return this.#fail('protocol-violation', '[MQTT-3.8.3-3]', 'SUBSCRIBE without a topic filter')
    while (p < e) {
      if (e - p < 2) return this.#fail('malformed', undefined, 'topic filter length truncated')
      const length = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < length + 1) return this.#fail('malformed', undefined, 'topic filter or requested QoS truncated')
      const v = this.#checkFilter(b, p, p + length)
      if (v !== undefined) return v
      p += length
      const options = b[p++]!
      // the spec's own id for this statement reads "3-8", not "3.8"
      if ((options & 0xfc) !== 0)
        return this.#fail('malformed', '[MQTT-3-8.3-4]', 'requested QoS byte has reserved bits set')
      if (options === 3) return this.#fail('malformed', '[MQTT-3-8.3-4]', 'requested QoS is 3')
    }
    return undefined
  }

  #checkUnsubscribe(b: Buffer, s: number, e: number): GuardViolation | undefined {
    if (e - s < 2) return this.#fail('malformed', undefined, 'UNSUBSCRIBE too short for its packet identifier')
    if (((b[s]! << 8) | b[s + 1]!) === 0)
      return this.#fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
    let p = s + 2
    if (p === e) return this.#fail('protocol-violation', '[MQTT-3.10.3-2]', 'UNSUBSCRIBE without a topic filter')
    while (p < e) {
      if (e - p < 2) return this.#fail('malformed', undefined, 'topic filter length truncated')
      const length = (b[p]! << 8) | b[p + 1]!
      p += 2
      if (e - p < length) return this.#fail('malformed', undefined, 'topic filter truncated')
      const v = this.#checkFilter(b, p, p + length)
      if (v !== undefined) return v
      p += length
    }
    return undefined
  }

  #checkFilter(b: Buffer, s: number, e: number): GuardViolation | undefined {
    if (s === e) return this.#fail('protocol-violation', '[MQTT-4.7.3-1]', 'empty topic filter')
    switch (scanString(b, s, e, STR_HASH_PLACEMENT)) {
      case STR_NUL:
        return this.#fail('malformed', '[MQTT-4.7.3-2]', 'topic filter contains U+0000')
      case STR_CONTROL:
        return this.#fail('malformed', undefined, 'topic filter contains a control character (MQTT 3.1.1 §1.5.3)')
      case STR_UTF8:
        return this.#fail('malformed', '[MQTT-1.5.3-1]', 'topic filter is not well-formed UTF-8')
      // aedes 1.2 validateTopic() misses these next to the start or end (`a#`, `+a`, `a+/b`, `a/+b`)
      case STR_HASH_PLACEMENT:
        return this.#fail('protocol-violation', '[MQTT-4.7.1-2]', "'#' is not alone in the last level")
      case STR_PLUS_PLACEMENT:
        return this.#fail('protocol-violation', '[MQTT-4.7.1-3]', "'+' does not fill a whole level")
    }
    return undefined
  }
}
