// MQTT 5 properties (§2.2.2) for the packet guard (packet-guard.ts): one
// generic check of a property block, whatever packet carries it. It knows
// every property's data type and the packets it may appear on (the table of
// §2.2.2.2), refuses unknown identifiers, values that run past the block,
// duplicates of a property that may appear once, ill-formed strings and the
// values the spec calls a Protocol Error. What a caller needs to decide
// further (Topic Alias, Session Expiry, the client's limits) is left in
// `found`, without allocating: the guard is synchronous, so the next call
// cannot start before the caller has read it.
import { fail, type PartialViolation } from './guard-checks.js'
import { scanString, scanText, STR_CONTROL, STR_NUL, STR_UTF8, STR_WILDCARD, STR_OK } from './mqtt-strings.js'

/** Context of the Will Properties in a CONNECT; packet type 0 is reserved, so it cannot clash. */
export const WILL = 0

// Property identifiers that callers look at
export const PROP_TOPIC_ALIAS = 0x23
export const PROP_SUBSCRIPTION_ID = 0x0b
const PROP_USER = 0x26

// Data types (§1.5)
const BYTE = 1
const TWO = 2
const FOUR = 3
const VARINT = 4
const STRING = 5
const BINARY = 6
const PAIR = 7

// Contexts by packet type: CONNECT 1, PUBLISH 3, PUBACK..PUBCOMP 4-7, SUBSCRIBE 8,
// UNSUBSCRIBE 10, DISCONNECT 14, AUTH 15; server-only packets (CONNACK, SUBACK,
// UNSUBACK) never reach the guard, so their properties count as not allowed.
const CONNECT = 1 << 1
const PUBLISH = 1 << 3
const ACKS = (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7)
const SUBSCRIBE = 1 << 8
const UNSUBSCRIBE = 1 << 10
const DISCONNECT = 1 << 14
const AUTH = 1 << 15
const WILL_PROPS = 1 << WILL
const ALL = CONNECT | PUBLISH | ACKS | SUBSCRIBE | UNSUBSCRIBE | DISCONNECT | AUTH | WILL_PROPS
/** Allowed only in packets a server sends. */
const SERVER_ONLY = 0

interface PropertySpec {
  readonly name: string
  readonly type: number
  readonly contexts: number
}

const SPECS: (PropertySpec | undefined)[] = []
function define(id: number, name: string, type: number, contexts: number): void {
  SPECS[id] = { name, type, contexts }
}
define(0x01, 'Payload Format Indicator', BYTE, PUBLISH | WILL_PROPS)
define(0x02, 'Message Expiry Interval', FOUR, PUBLISH | WILL_PROPS)
define(0x03, 'Content Type', STRING, PUBLISH | WILL_PROPS)
define(0x08, 'Response Topic', STRING, PUBLISH | WILL_PROPS)
define(0x09, 'Correlation Data', BINARY, PUBLISH | WILL_PROPS)
// allowed on PUBLISH by the table, but only from a server: checked by the PUBLISH check [MQTT-3.3.4-6]
define(0x0b, 'Subscription Identifier', VARINT, PUBLISH | SUBSCRIBE)
define(0x11, 'Session Expiry Interval', FOUR, CONNECT | DISCONNECT)
define(0x12, 'Assigned Client Identifier', STRING, SERVER_ONLY)
define(0x13, 'Server Keep Alive', TWO, SERVER_ONLY)
define(0x15, 'Authentication Method', STRING, CONNECT | AUTH)
define(0x16, 'Authentication Data', BINARY, CONNECT | AUTH)
define(0x17, 'Request Problem Information', BYTE, CONNECT)
define(0x18, 'Will Delay Interval', FOUR, WILL_PROPS)
define(0x19, 'Request Response Information', BYTE, CONNECT)
define(0x1a, 'Response Information', STRING, SERVER_ONLY)
define(0x1c, 'Server Reference', STRING, DISCONNECT)
define(0x1f, 'Reason String', STRING, ACKS | DISCONNECT | AUTH)
define(0x21, 'Receive Maximum', TWO, CONNECT)
define(0x22, 'Topic Alias Maximum', TWO, CONNECT)
define(0x23, 'Topic Alias', TWO, PUBLISH)
define(0x24, 'Maximum QoS', BYTE, SERVER_ONLY)
define(0x25, 'Retain Available', BYTE, SERVER_ONLY)
define(0x26, 'User Property', PAIR, ALL)
define(0x27, 'Maximum Packet Size', FOUR, CONNECT)
define(0x28, 'Wildcard Subscription Available', BYTE, SERVER_ONLY)
define(0x29, 'Subscription Identifier Available', BYTE, SERVER_ONLY)
define(0x2a, 'Shared Subscription Available', BYTE, SERVER_ONLY)

/** What the last `checkProperties` found; -1 where the property was absent. */
export const found = {
  sessionExpiryInterval: -1,
  receiveMaximum: -1,
  maximumPacketSize: -1,
  topicAliasMaximum: -1,
  topicAlias: -1,
  requestProblemInformation: -1,
  requestResponseInformation: -1,
  subscriptionIdentifier: -1,
  authenticationMethod: false,
  authenticationData: false,
}

/**
 * Reads a Variable Byte Integer at b[p, e) (§1.5.5). Returns its value, or
 * -1 when it runs past `e`, -2 when it is longer than four bytes, -3 when it
 * is not in its shortest form [MQTT-1.5.5-1]. Its length is `varintSize(value)`.
 */
export function readVarint(b: Buffer, p: number, e: number): number {
  let value = 0
  let weight = 1
  for (let k = 0; k < 4; k++) {
    if (p + k >= e) return -1
    const byte = b[p + k]!
    value += (byte & 0x7f) * weight
    if ((byte & 0x80) === 0) return k > 0 && byte === 0 ? -3 : value
    weight *= 128
  }
  return -2
}

export function varintSize(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4
}

/** The violation for a negative `readVarint` result. */
export function varintViolation(code: number, what: string): PartialViolation {
  if (code === -3) return fail('malformed', '[MQTT-1.5.5-1]', `${what} is not in its shortest form`)
  if (code === -2) return fail('malformed', undefined, `${what} longer than four bytes (MQTT 5 §1.5.5)`)
  return fail('malformed', undefined, `${what} runs past the packet`)
}

/**
 * Reads a property length at b[p, e) and checks the properties after it, for
 * a packet of type `context` (or WILL). Returns the offset just past the
 * properties, or the violation.
 */
export function checkPropertyBlock(b: Buffer, p: number, e: number, context: number): number | PartialViolation {
  const length = readVarint(b, p, e)
  if (length < 0) return varintViolation(length, 'property length')
  const s = p + varintSize(length)
  if (length > e - s) return fail('malformed', undefined, 'property length runs past the packet')
  const v = checkProperties(b, s, s + length, context)
  return v === undefined ? s + length : v
}

/** Checks the properties in b[s, e) (without their length) of a packet of type `context` (or WILL). */
export function checkProperties(b: Buffer, s: number, e: number, context: number): PartialViolation | undefined {
  found.sessionExpiryInterval = -1
  found.receiveMaximum = -1
  found.maximumPacketSize = -1
  found.topicAliasMaximum = -1
  found.topicAlias = -1
  found.requestProblemInformation = -1
  found.requestResponseInformation = -1
  found.subscriptionIdentifier = -1
  found.authenticationMethod = false
  found.authenticationData = false
  // identifiers seen so far: 0x00-0x1f in `low`, 0x20-0x3f in `high`
  let low = 0
  let high = 0
  let p = s
  while (p < e) {
    // identifiers are Variable Byte Integers, but all defined ones fit in one byte
    const id = b[p++]!
    const spec = SPECS[id]
    if (spec === undefined) return fail('malformed', undefined, 'unknown property identifier (MQTT 5 §2.2.2.2)')
    if ((spec.contexts & (1 << context)) === 0) {
      return fail('malformed', undefined, `${spec.name} is not allowed on this packet (MQTT 5 §2.2.2.2)`)
    }
    if (id !== PROP_USER) {
      const bit = 1 << (id & 31)
      const seen = id < 32 ? low : high
      if ((seen & bit) !== 0) {
        return fail('protocol-violation', undefined, `${spec.name} appears more than once (MQTT 5 §2.2.2.2)`)
      }
      if (id < 32) low |= bit
      else high |= bit
    }
    let value = 0
    switch (spec.type) {
      case BYTE:
        if (e - p < 1) return truncated(spec)
        value = b[p++]!
        break
      case TWO:
        if (e - p < 2) return truncated(spec)
        value = (b[p]! << 8) | b[p + 1]!
        p += 2
        break
      case FOUR:
        if (e - p < 4) return truncated(spec)
        value = b.readUInt32BE(p)
        p += 4
        break
      case VARINT:
        value = readVarint(b, p, e)
        if (value < 0) return varintViolation(value, spec.name)
        p += varintSize(value)
        break
      case BINARY: {
        if (e - p < 2) return truncated(spec)
        const length = (b[p]! << 8) | b[p + 1]!
        if (e - p - 2 < length) return truncated(spec)
        p += 2 + length
        break
      }
      default: {
        // STRING, or PAIR: a name string and a value string
        for (let k = spec.type === PAIR ? 2 : 1; k > 0; k--) {
          if (e - p < 2) return truncated(spec)
          const length = (b[p]! << 8) | b[p + 1]!
          p += 2
          if (e - p < length) return truncated(spec)
          const v = checkString(b, p, p + length, id, spec)
          if (v !== undefined) return v
          p += length
        }
      }
    }
    const v = checkValue(id, value, spec)
    if (v !== undefined) return v
  }
  return undefined
}

function truncated(spec: PropertySpec): PartialViolation {
  return fail('malformed', undefined, `${spec.name} runs past the property length`)
}

function checkString(b: Buffer, s: number, e: number, id: number, spec: PropertySpec): PartialViolation | undefined {
  if (id === 0x08) {
    // Response Topic: a topic name, like the PUBLISH topic
    if (s === e) return fail('protocol-violation', '[MQTT-4.7.3-1]', 'Response Topic is empty')
    switch (scanString(b, s, e, STR_WILDCARD)) {
      case STR_NUL:
        return fail('malformed', '[MQTT-4.7.3-2]', 'Response Topic contains U+0000')
      case STR_CONTROL:
        return fail('malformed', undefined, 'Response Topic contains a control character (MQTT 5 §1.5.4)')
      case STR_UTF8:
        return fail('malformed', '[MQTT-3.3.2-13]', 'Response Topic is not well-formed UTF-8')
      case STR_WILDCARD:
        return fail('protocol-violation', '[MQTT-3.3.2-14]', 'Response Topic contains a wildcard')
    }
    return undefined
  }
  const r = scanText(b, s, e)
  if (r === STR_OK) return undefined
  const rule = id === PROP_USER ? '[MQTT-1.5.7-1]' : r === STR_NUL ? '[MQTT-1.5.4-2]' : '[MQTT-1.5.4-1]'
  return fail('malformed', rule, `${spec.name} ${r === STR_NUL ? 'contains U+0000' : 'is not well-formed UTF-8'}`)
}

function checkValue(id: number, value: number, spec: PropertySpec): PartialViolation | undefined {
  switch (id) {
    case 0x01: // Payload Format Indicator
    case 0x17: // Request Problem Information
    case 0x19: // Request Response Information
      if (value > 1) return fail('protocol-violation', undefined, `${spec.name} is neither 0 nor 1 (MQTT 5 §3)`)
      if (id === 0x17) found.requestProblemInformation = value
      if (id === 0x19) found.requestResponseInformation = value
      return undefined
    case 0x0b:
      if (value === 0) return fail('protocol-violation', undefined, 'Subscription Identifier is 0 (MQTT 5 §3.8.2.1.2)')
      found.subscriptionIdentifier = value
      return undefined
    case 0x11:
      found.sessionExpiryInterval = value
      return undefined
    case 0x15:
      found.authenticationMethod = true
      return undefined
    case 0x16:
      found.authenticationData = true
      return undefined
    case 0x21:
      if (value === 0) return fail('protocol-violation', undefined, 'Receive Maximum is 0 (MQTT 5 §3.1.2.11.3)')
      found.receiveMaximum = value
      return undefined
    case 0x22:
      found.topicAliasMaximum = value
      return undefined
    case 0x23:
      found.topicAlias = value
      return undefined
    case 0x27:
      if (value === 0) return fail('protocol-violation', undefined, 'Maximum Packet Size is 0 (MQTT 5 §3.1.2.11.4)')
      found.maximumPacketSize = value
      return undefined
    default:
      return undefined
  }
}
