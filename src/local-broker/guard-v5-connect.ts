// MQTT 5 CONNECT validation of the packet guard (packet-guard.ts), called by
// checkConnect (guard-connect.ts) once the protocol name and level 5 are read.
// Every violation carries the reason code of the CONNACK that answers it:
// MQTT 5 lets a server say why it refuses even a malformed CONNECT ([MQTT-3.1.4-1], §4.13).
import { fail, type PartialViolation } from './guard-checks.js'
import type { ValidConnect } from './guard-connect.js'
import type { GuardViolationReason, Mqtt5ClientLimits } from './guard-types.js'
import { checkPropertyBlock, found, WILL } from './guard-v5-properties.js'
import { scanString, STR_CONTROL, STR_NUL, STR_OK, STR_UTF8, STR_WILDCARD } from './mqtt-strings.js'
import { CONNECT } from './packet-types.js'

/** MQTT 5 reason codes (§2.4) for each refusal reason. */
export const V5_REASON_CODES: Readonly<Record<GuardViolationReason, number>> = {
  malformed: 0x81,
  'protocol-violation': 0x82,
  'unknown-packet-id': 0x82,
  'unsupported-protocol-version': 0x84,
  'identifier-rejected': 0x85,
  'bad-authentication-method': 0x8c,
  'topic-alias-invalid': 0x94,
  'packet-too-large': 0x95,
}

/** The CONNECT body ends at `e` in `b`; `p` is where its connect flags are (after protocol name and level 5). */
export function checkConnectV5(b: Buffer, e: number, p: number): PartialViolation | ValidConnect {
  const r = check(b, e, p)
  if (!('reason' in r)) return r
  const code = V5_REASON_CODES[r.reason]
  return { ...r, connackReturnCode: code, reasonCode: code }
}

function check(b: Buffer, e: number, p: number): PartialViolation | ValidConnect {
  const flags = b[p]!
  p += 3 // flags, keep alive
  if ((flags & 0x01) !== 0) return fail('malformed', '[MQTT-3.1.2-3]', 'CONNECT reserved flag is set')
  const will = (flags & 0x04) !== 0
  const willQos = (flags >> 3) & 3
  if (will) {
    if (willQos === 3) return fail('malformed', '[MQTT-3.1.2-12]', 'Will QoS is 3')
  } else {
    if (willQos !== 0) return fail('malformed', '[MQTT-3.1.2-11]', 'Will QoS set without the Will flag')
    if ((flags & 0x20) !== 0) return fail('malformed', '[MQTT-3.1.2-13]', 'Will Retain set without the Will flag')
  }
  const afterProps = checkPropertyBlock(b, p, e, CONNECT)
  if (typeof afterProps !== 'number') return afterProps
  p = afterProps
  // read now: the Will Properties below reuse `found`
  const limits: Mqtt5ClientLimits = {
    sessionExpiryInterval: Math.max(found.sessionExpiryInterval, 0),
    receiveMaximum: found.receiveMaximum < 0 ? 65_535 : found.receiveMaximum,
    maximumPacketSize: found.maximumPacketSize < 0 ? undefined : found.maximumPacketSize,
    topicAliasMaximum: Math.max(found.topicAliasMaximum, 0),
    requestResponseInformation: found.requestResponseInformation === 1,
    requestProblemInformation: found.requestProblemInformation !== 0,
  }
  const authenticationMethod = found.authenticationMethod
  if (found.authenticationData && !authenticationMethod) {
    return fail(
      'protocol-violation',
      undefined,
      'Authentication Data without an Authentication Method (MQTT 5 §3.1.2.11.10)',
    )
  }

  if (e - p < 2) return fail('malformed', '[MQTT-3.1.3-3]', 'client identifier missing')
  const idLength = (b[p]! << 8) | b[p + 1]!
  p += 2
  if (e - p < idLength) return fail('malformed', '[MQTT-3.1.3-3]', 'client identifier truncated')
  const idStart = p
  switch (scanString(b, p, p + idLength, STR_OK)) {
    case STR_NUL:
      return fail('malformed', '[MQTT-1.5.4-2]', 'client identifier contains U+0000')
    case STR_CONTROL:
      return fail('malformed', undefined, 'client identifier contains a control character (MQTT 5 §1.5.4)')
    case STR_UTF8:
      return fail('malformed', '[MQTT-3.1.3-4]', 'client identifier is not well-formed UTF-8')
  }
  p += idLength
  const clientId = b.toString('utf8', idStart, p)
  const known = { clientId }

  if (will) {
    const afterWillProps = checkPropertyBlock(b, p, e, WILL)
    if (typeof afterWillProps !== 'number') return { ...afterWillProps, clientId }
    p = afterWillProps
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic missing', known)
    const topicLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < topicLength) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Topic truncated', known)
    if (topicLength === 0) return fail('protocol-violation', '[MQTT-4.7.3-1]', 'Will Topic is empty', known)
    switch (scanString(b, p, p + topicLength, STR_WILDCARD)) {
      case STR_NUL:
        return fail('malformed', '[MQTT-4.7.3-2]', 'Will Topic contains U+0000', known)
      case STR_CONTROL:
        return fail('malformed', undefined, 'Will Topic contains a control character (MQTT 5 §1.5.4)', known)
      case STR_UTF8:
        return fail('malformed', '[MQTT-3.1.3-11]', 'Will Topic is not well-formed UTF-8', known)
      case STR_WILDCARD:
        return fail('protocol-violation', '[MQTT-4.7.0-1]', 'Will Topic contains a wildcard', known)
    }
    p += topicLength
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Payload missing', known)
    const payloadLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < payloadLength) return fail('malformed', '[MQTT-3.1.2-9]', 'Will Payload truncated', known)
    p += payloadLength
  }
  if ((flags & 0x80) !== 0) {
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-17]', 'user name missing', known)
    const userLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < userLength) return fail('malformed', '[MQTT-3.1.2-17]', 'user name truncated', known)
    switch (scanString(b, p, p + userLength, STR_OK)) {
      case STR_NUL:
        return fail('malformed', '[MQTT-1.5.4-2]', 'user name contains U+0000', known)
      case STR_CONTROL:
        return fail('malformed', undefined, 'user name contains a control character (MQTT 5 §1.5.4)', known)
      case STR_UTF8:
        return fail('malformed', '[MQTT-3.1.3-12]', 'user name is not well-formed UTF-8', known)
    }
    p += userLength
  }
  // MQTT 5 allows a password without a user name (§3.1.2.9)
  if ((flags & 0x40) !== 0) {
    if (e - p < 2) return fail('malformed', '[MQTT-3.1.2-19]', 'password missing', known)
    const passwordLength = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < passwordLength) return fail('malformed', '[MQTT-3.1.2-19]', 'password truncated', known)
    p += passwordLength
  }
  if (p !== e) return fail('malformed', '[MQTT-3.1.4-1]', 'CONNECT has bytes after its last field', known)
  // last, as identifier checks are: only a well-formed CONNECT earns this answer
  if (authenticationMethod) {
    return fail(
      'bad-authentication-method',
      '[MQTT-4.12.0-1]',
      'enhanced authentication (Authentication Method) is not supported',
      known,
    )
  }
  return { clientId, cleanSession: (flags & 0x02) !== 0, protocolVersion: 5, mqtt5: limits }
}
