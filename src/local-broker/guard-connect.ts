// CONNECT validation of the packet guard (packet-guard.ts): the whole
// CONNECT body, MQTT 3.1 (MQIsdp) and 3.1.1, in the region [s, e) of `b`.
// Returns what a CONNECT that passed every check asks for, or the violation.
// `patch(at, value)` rewrites the byte at region offset `at` in the bytes
// aedes will parse (MQTT 3.1 flags 3.1.1 reserves, see below).
import { scanString, STR_CONTROL, STR_NUL, STR_OK, STR_UTF8, STR_WILDCARD } from './mqtt-strings.js'
import { fail, type PartialViolation } from './guard-checks.js'

/** V5-STAND-DOWN (h/v5broker): the detail of the violation that marks an MQTT 5 CONNECT. */
export const MQTT5_CONNECT = 'MQTT 5 CONNECT'

export interface ValidConnect {
  readonly clientId: string
  readonly cleanSession: boolean
}

export function checkConnect(
  b: Buffer,
  s: number,
  e: number,
  patch: (at: number, value: number) => void,
): PartialViolation | ValidConnect {
  let p = s
  if (e - p < 2) return fail('malformed', undefined, 'CONNECT too short for its protocol name')
  const nameLength = (b[p]! << 8) | b[p + 1]!
  p += 2
  // name, level, flags, keep alive
  if (e - p < nameLength + 4) return fail('malformed', undefined, 'CONNECT variable header truncated')
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
  if (!isMqtt && !isMqisdp) return fail('protocol-violation', '[MQTT-3.1.2-1]', 'unknown protocol name')
  // Bit 7 is the bridge bit (0x83/0x84) that Mosquitto bridges send with try_private;
  // mqtt-packet and aedes accept it, so the guard does too.
  const level = b[p]! & 0x7f
  if (level !== (isMqtt ? 4 : 3)) {
    // V5-STAND-DOWN (h/v5broker; the v5 guard replaces it): marks an MQTT 5 CONNECT for guard-connection.ts
    if (isMqtt && level === 5) {
      return fail('unsupported-protocol-version', '[MQTT-3.1.2-2]', MQTT5_CONNECT, { connackReturnCode: 0x01 })
    }
    // an MQTT 5 CONNECT lands here: the rest of it is not ours to validate
    return fail('unsupported-protocol-version', '[MQTT-3.1.2-2]', 'unsupported protocol level', {
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
      patch(flagsAt, normalized)
      flags = normalized
    }
    if (will && willQos === 3) return fail('malformed', undefined, 'Will QoS is 3')
  } else {
    if ((flags & 0x01) !== 0) return fail('malformed', '[MQTT-3.1.2-3]', 'CONNECT reserved flag is set')
    if (will) {
      if (willQos === 3) return fail('malformed', '[MQTT-3.1.2-14]', 'Will QoS is 3')
    } else {
      if (willQos !== 0) return fail('malformed', '[MQTT-3.1.2-13]', 'Will QoS set without the Will flag')
      if ((flags & 0x20) !== 0) return fail('malformed', '[MQTT-3.1.2-15]', 'Will Retain set without the Will flag')
    }
  }
  const hasUser = (flags & 0x80) !== 0
  const hasPassword = (flags & 0x40) !== 0
  if (hasPassword && !hasUser) return fail('malformed', '[MQTT-3.1.2-22]', 'password flag set without user name flag')

  // Payload. Every field is a 2-byte length and that many bytes, in this order.
  if (e - p < 2) return fail('malformed', '[MQTT-3.1.3-3]', 'client identifier missing')
  const idLength = (b[p]! << 8) | b[p + 1]!
  p += 2
  if (e - p < idLength) return fail('malformed', '[MQTT-3.1.3-3]', 'client identifier truncated')
  const idStart = p
  switch (scanString(b, p, p + idLength, STR_OK)) {
    case STR_NUL:
      return fail('malformed', '[MQTT-1.5.3-2]', 'client identifier contains U+0000')
    case STR_CONTROL:
      return fail('malformed', undefined, 'client identifier contains a control character (MQTT 3.1.1 §1.5.3)')
    case STR_UTF8:
      return fail('malformed', '[MQTT-1.5.3-1]', 'client identifier is not well-formed UTF-8')
  }
  p += idLength
  const clientId = b.toString('utf8', idStart, p)
  const known = { clientId }

  if (will) {
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic missing', known)
    const topicLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < topicLength) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic truncated', known)
    if (topicLength === 0) return fail('protocol-violation', '[MQTT-4.7.3-1]', 'Will Topic is empty', known)
    switch (scanString(b, p, p + topicLength, STR_WILDCARD)) {
      case STR_NUL:
        return fail('malformed', '[MQTT-4.7.3-2]', 'Will Topic contains U+0000', known)
      case STR_CONTROL:
        return fail('malformed', undefined, 'Will Topic contains a control character (MQTT 3.1.1 §1.5.3)', known)
      case STR_UTF8:
        return fail('malformed', '[MQTT-1.5.3-1]', 'Will Topic is not well-formed UTF-8', known)
      case STR_WILDCARD:
        return fail('protocol-violation', '[MQTT-4.7.1-1]', 'Will Topic contains a wildcard', known)
    }
    p += topicLength
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Message missing', known)
    const messageLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < messageLength) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Message truncated', known)
    p += messageLength
  }
  if (hasUser) {
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-19]', 'user name missing', known)
    const userLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < userLength) return fail('malformed', '[MQTT-3.1.2-19]', 'user name truncated', known)
    switch (scanString(b, p, p + userLength, STR_OK)) {
      case STR_NUL:
        return fail('malformed', '[MQTT-1.5.3-2]', 'user name contains U+0000', known)
      case STR_CONTROL:
        return fail('malformed', undefined, 'user name contains a control character (MQTT 3.1.1 §1.5.3)', known)
      case STR_UTF8:
        return fail('malformed', '[MQTT-3.1.3-11]', 'user name is not well-formed UTF-8', known)
    }
    p += userLength
  }
  if (hasPassword) {
    // binary data: any bytes are allowed
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-21]', 'password missing', known)
    const passwordLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < passwordLength) return fail('malformed', '[MQTT-3.1.2-21]', 'password truncated', known)
    p += passwordLength
  }
  if (p !== e) return fail('malformed', undefined, 'CONNECT has bytes after its last field', known)

  // Identifier checks come last: [MQTT-3.1.4-1] wants a malformed CONNECT
  // closed without any CONNACK, so only a well-formed one earns code 0x02.
  if (idLength === 0) {
    if (level === 3) {
      // MQTT 3.1 §3.1: the client id is 1 to 23 characters (aedes checks the upper bound)
      return fail('identifier-rejected', undefined, 'MQTT 3.1 CONNECT with an empty client identifier', {
        connackReturnCode: 0x02,
      })
    }
    if ((flags & 0x02) === 0) {
      return fail('identifier-rejected', '[MQTT-3.1.3-8]', 'empty client identifier without clean session', {
        connackReturnCode: 0x02,
      })
    }
  }
  return { clientId, cleanSession: (flags & 0x02) !== 0 }
}
