// The packet guard's limits and verdicts (packet-guard.ts re-exports them).

/** Size limits, in bytes. Remaining lengths exclude the fixed header. */
export interface PacketGuardLimits {
  /**
   * Maximum remaining length of any packet fed before `authenticated()`: the
   * CONNECT (with its Will payload) and anything pipelined behind it. Also caps
   * SUBSCRIBE and UNSUBSCRIBE after authentication. Default 65536 (64 KiB).
   */
  readonly preConnectMaxBytes: number
  /** Maximum PUBLISH application payload. Default 262144 (256 KiB). */
  readonly maxPayloadBytes: number
  /**
   * Accept an MQTT 5 CONNECT (protocol level 5) and validate the session by
   * MQTT 5's rules. Default false: level 5 is answered CONNACK 0x01, as any
   * level the broker does not speak.
   */
  readonly allowMqtt5: boolean
  /**
   * Highest Topic Alias an MQTT 5 client may send: the Topic Alias Maximum
   * the broker announces in its CONNACK. Default 0 (no alias accepted).
   */
  readonly topicAliasMaximum: number
}

export const DEFAULT_PACKET_GUARD_LIMITS: Readonly<PacketGuardLimits> = Object.freeze({
  preConnectMaxBytes: 65_536,
  maxPayloadBytes: 262_144,
  allowMqtt5: false,
  topicAliasMaximum: 0,
})

/** `limits` with defaults applied; throws a RangeError on a value out of range. */
export function resolveGuardLimits(limits: Partial<PacketGuardLimits>): PacketGuardLimits {
  const d = DEFAULT_PACKET_GUARD_LIMITS
  const l: PacketGuardLimits = {
    preConnectMaxBytes: limits.preConnectMaxBytes ?? d.preConnectMaxBytes,
    maxPayloadBytes: limits.maxPayloadBytes ?? d.maxPayloadBytes,
    allowMqtt5: limits.allowMqtt5 ?? d.allowMqtt5,
    topicAliasMaximum: limits.topicAliasMaximum ?? d.topicAliasMaximum,
  }
  if (!Number.isSafeInteger(l.preConnectMaxBytes) || l.preConnectMaxBytes < 0)
    throw new RangeError('preConnectMaxBytes must be a non-negative integer')
  if (!Number.isSafeInteger(l.maxPayloadBytes) || l.maxPayloadBytes < 0)
    throw new RangeError('maxPayloadBytes must be a non-negative integer')
  if (!Number.isInteger(l.topicAliasMaximum) || l.topicAliasMaximum < 0 || l.topicAliasMaximum > 65_535)
    throw new RangeError('topicAliasMaximum must be an integer from 0 to 65535')
  return l
}

/**
 * - `packet-too-large`: a remaining length or payload above a limit (`limit` names it).
 * - `malformed`: the bytes do not decode into a well-formed packet (lengths,
 *   reserved bits, QoS 3, ill-formed UTF-8 or U+0000).
 * - `protocol-violation`: the packet decodes but is not allowed here (packet
 *   order, packet types a client never sends, wildcards in a topic name,
 *   empty topic, packet identifier 0, unknown protocol name).
 * - `unknown-packet-id`: a PUBACK, PUBREC, PUBREL or PUBCOMP for a non-zero
 *   packet identifier the session never used (see ack-tracker.ts).
 * - `unsupported-protocol-version`: CONNECT with a protocol level we do not speak
 *   (CONNACK 0x01).
 * - `identifier-rejected`: CONNECT with a client id we must refuse (CONNACK 0x02).
 * - `topic-alias-invalid`: MQTT 5 PUBLISH with Topic Alias 0 or above `topicAliasMaximum` (0x94).
 * - `bad-authentication-method`: MQTT 5 CONNECT with an Authentication Method;
 *   enhanced authentication is not supported (CONNACK 0x8C).
 */
export type GuardViolationReason =
  | 'packet-too-large'
  | 'malformed'
  | 'protocol-violation'
  | 'unknown-packet-id'
  | 'unsupported-protocol-version'
  | 'identifier-rejected'
  | 'topic-alias-invalid'
  | 'bad-authentication-method'

export interface GuardViolation {
  readonly reason: GuardViolationReason
  /**
   * Normative statement, e.g. `'[MQTT-3.1.2-14]'`, where one exists: of MQTT 3.1.1,
   * or of MQTT 5 on an MQTT 5 connection.
   */
  readonly rule?: string
  /** Short constant phrase for logs. */
  readonly detail: string
  readonly limit?: 'preConnectMaxBytes' | 'maxPayloadBytes'
  /**
   * Set only where a CONNACK answers before closing: the return code (MQTT 3.1/3.1.1)
   * or, when `reasonCode` is set too, the MQTT 5 reason code.
   */
  readonly connackReturnCode?: number
  /**
   * MQTT 5 reason code (0x81 Malformed Packet, 0x82 Protocol Error, 0x94, 0x95 …),
   * set only on an MQTT 5 connection: sent in the CONNACK, or in a DISCONNECT
   * once CONNACK 0 has gone out.
   */
  readonly reasonCode?: number
  /** Control packet type from the fixed header (1 = CONNECT … 14 = DISCONNECT). */
  readonly packetType: number
  /** Packet identifier of an acknowledgement refused as `unknown-packet-id`. */
  readonly packetId?: number
  /** The client id from the CONNECT, once it has been read. */
  readonly clientId?: string
}

export interface GuardResult {
  /** How many leading bytes of the fed chunk may be passed on. */
  readonly pass: number
  readonly violation?: GuardViolation
}

/** Tells the guard which acknowledgements the session may send (ack-tracker.ts). */
export interface AckCheck {
  /** `type` is the control packet type (4 PUBACK … 7 PUBCOMP), `id` non-zero. */
  accepts(type: number, id: number): boolean
  /** A valid CONNECT was read; acknowledgements pipelined behind it are checked before CONNACK. */
  connecting?(persistent: boolean): void
}

/** What an MQTT 5 client announced in its CONNECT (defaults applied where a property was absent). */
export interface Mqtt5ClientLimits {
  /** Session Expiry Interval in seconds (0 when absent). */
  readonly sessionExpiryInterval: number
  /** QoS 1/2 PUBLISH the client accepts unacknowledged (65535 when absent). */
  readonly receiveMaximum: number
  /** Largest packet the client accepts, in bytes; undefined when absent (no limit but the protocol's). */
  readonly maximumPacketSize: number | undefined
  /** Highest Topic Alias the client accepts from the broker (0 when absent: none). */
  readonly topicAliasMaximum: number
  /** Request Response Information (false when absent). */
  readonly requestResponseInformation: boolean
  /** Request Problem Information (true when absent). */
  readonly requestProblemInformation: boolean
}
