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
}

export const DEFAULT_PACKET_GUARD_LIMITS: Readonly<PacketGuardLimits> = Object.freeze({
  preConnectMaxBytes: 65_536,
  maxPayloadBytes: 262_144,
})

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
 */
export type GuardViolationReason =
  | 'packet-too-large'
  | 'malformed'
  | 'protocol-violation'
  | 'unknown-packet-id'
  | 'unsupported-protocol-version'
  | 'identifier-rejected'

export interface GuardViolation {
  readonly reason: GuardViolationReason
  /** Normative statement of MQTT 3.1.1, e.g. `'[MQTT-3.1.2-14]'`, where one exists. */
  readonly rule?: string
  /** Short constant phrase for logs. */
  readonly detail: string
  readonly limit?: 'preConnectMaxBytes' | 'maxPayloadBytes'
  /** Set only where the spec says to answer with a CONNACK before closing. */
  readonly connackReturnCode?: number
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
