// Validators of the packet guard (packet-guard.ts) for the regions it
// collects: a PUBLISH's topic and packet id, and SUBSCRIBE and UNSUBSCRIBE
// bodies. Each takes the region [s, e) of `b` and returns the violation
// (the guard adds the packet type and client id), or undefined.
import {
  scanString,
  STR_CONTROL,
  STR_HASH_PLACEMENT,
  STR_NUL,
  STR_PLUS_PLACEMENT,
  STR_UTF8,
  STR_WILDCARD,
} from './mqtt-strings.js'
import type { GuardViolation, GuardViolationReason } from './guard-types.js'

/** A violation before the guard adds the packet type and the client id it knows. */
export type PartialViolation = Omit<GuardViolation, 'packetType'>

export function fail(
  reason: GuardViolationReason,
  rule: string | undefined,
  detail: string,
  extra?: Pick<PartialViolation, 'limit' | 'connackReturnCode' | 'reasonCode' | 'packetId' | 'clientId'>,
): PartialViolation {
  return {
    reason,
    ...(rule === undefined ? {} : { rule }),
    detail,
    ...(extra?.limit === undefined ? {} : { limit: extra.limit }),
    ...(extra?.connackReturnCode === undefined ? {} : { connackReturnCode: extra.connackReturnCode }),
    ...(extra?.reasonCode === undefined ? {} : { reasonCode: extra.reasonCode }),
    ...(extra?.packetId === undefined ? {} : { packetId: extra.packetId }),
    ...(extra?.clientId === undefined ? {} : { clientId: extra.clientId }),
  }
}

export function checkPublish(b: Buffer, s: number, e: number, topicLength: number): PartialViolation | undefined {
  const topicEnd = s + topicLength
  switch (scanString(b, s, topicEnd, STR_WILDCARD)) {
    case STR_NUL:
      return fail('malformed', '[MQTT-4.7.3-2]', 'topic contains U+0000')
    case STR_CONTROL:
      return fail('malformed', undefined, 'topic contains a control character (MQTT 3.1.1 §1.5.3)')
    case STR_UTF8:
      return fail('malformed', '[MQTT-1.5.3-1]', 'topic is not well-formed UTF-8')
    case STR_WILDCARD:
      return fail('protocol-violation', '[MQTT-3.3.2-2]', 'PUBLISH topic contains a wildcard')
  }
  if (topicEnd < e && ((b[topicEnd]! << 8) | b[topicEnd + 1]!) === 0) {
    return fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
  }
  return undefined
}

export function checkSubscribe(b: Buffer, s: number, e: number): PartialViolation | undefined {
  if (e - s < 2) return fail('malformed', undefined, 'SUBSCRIBE too short for its packet identifier')
  if (((b[s]! << 8) | b[s + 1]!) === 0) return fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
  let p = s + 2
  if (p === e) return fail('protocol-violation', '[MQTT-3.8.3-3]', 'SUBSCRIBE without a topic filter')
  while (p < e) {
    if (e - p < 2) return fail('malformed', undefined, 'topic filter length truncated')
    const length = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < length + 1) return fail('malformed', undefined, 'topic filter or requested QoS truncated')
    const v = checkFilter(b, p, p + length)
    if (v !== undefined) return v
    p += length
    const options = b[p++]!
    // the spec's own id for this statement reads "3-8", not "3.8"
    if ((options & 0xfc) !== 0) return fail('malformed', '[MQTT-3-8.3-4]', 'requested QoS byte has reserved bits set')
    if (options === 3) return fail('malformed', '[MQTT-3-8.3-4]', 'requested QoS is 3')
  }
  return undefined
}

export function checkUnsubscribe(b: Buffer, s: number, e: number): PartialViolation | undefined {
  if (e - s < 2) return fail('malformed', undefined, 'UNSUBSCRIBE too short for its packet identifier')
  if (((b[s]! << 8) | b[s + 1]!) === 0) return fail('protocol-violation', '[MQTT-2.3.1-1]', 'packet identifier 0')
  return checkUnsubscribeFilters(b, s + 2, e, '[MQTT-3.10.3-2]')
}

/** The topic filters of an UNSUBSCRIBE payload in [p, e): at least one (`noneRule` names that rule), each valid. */
export function checkUnsubscribeFilters(
  b: Buffer,
  p: number,
  e: number,
  noneRule: string,
): PartialViolation | undefined {
  if (p === e) return fail('protocol-violation', noneRule, 'UNSUBSCRIBE without a topic filter')
  while (p < e) {
    if (e - p < 2) return fail('malformed', undefined, 'topic filter length truncated')
    const length = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < length) return fail('malformed', undefined, 'topic filter truncated')
    const v = checkFilter(b, p, p + length)
    if (v !== undefined) return v
    p += length
  }
  return undefined
}

export function checkFilter(b: Buffer, s: number, e: number): PartialViolation | undefined {
  if (s === e) return fail('protocol-violation', '[MQTT-4.7.3-1]', 'empty topic filter')
  switch (scanString(b, s, e, STR_HASH_PLACEMENT)) {
    case STR_NUL:
      return fail('malformed', '[MQTT-4.7.3-2]', 'topic filter contains U+0000')
    case STR_CONTROL:
      return fail('malformed', undefined, 'topic filter contains a control character (MQTT 3.1.1 §1.5.3)')
    case STR_UTF8:
      return fail('malformed', '[MQTT-1.5.3-1]', 'topic filter is not well-formed UTF-8')
    // aedes 1.2 validateTopic() misses these next to the start or end (`a#`, `+a`, `a+/b`, `a/+b`)
    case STR_HASH_PLACEMENT:
      return fail('protocol-violation', '[MQTT-4.7.1-2]', "'#' is not alone in the last level")
    case STR_PLUS_PLACEMENT:
      return fail('protocol-violation', '[MQTT-4.7.1-3]', "'+' does not fill a whole level")
  }
  return undefined
}
