// MQTT 5 validators of the packet guard (packet-guard.ts) for the regions it
// collects on an MQTT 5 connection: acknowledgements with a reason code,
// SUBSCRIBE and UNSUBSCRIBE bodies with properties and subscription options,
// and, in `Mqtt5Session`, what depends on the connection (PUBLISH properties
// and Topic Aliases, DISCONNECT). Each takes the region [s, e) of `b`.
import { checkFilter, checkUnsubscribeFilters, fail, type PartialViolation } from './guard-checks.js'
import type { Mqtt5ClientLimits } from './guard-types.js'
import { V5_REASON_CODES } from './guard-v5-connect.js'
import { checkProperties, checkPropertyBlock, found } from './guard-v5-properties.js'
import { PUBLISH, PUBACK, PUBREC, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT } from './packet-types.js'

// Reason codes a client may send, one bit per code (§3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.14.2.1)
const PUBACK_CODES = codes(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
const PUBREL_CODES = codes(0x00, 0x92)
const DISCONNECT_CODES = codes(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99)
const ACK_RULES = ['[MQTT-3.4.2-1]', '[MQTT-3.5.2-1]', '[MQTT-3.6.2-1]', '[MQTT-3.7.2-1]']
const ACK_NAMES = ['PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP']

function codes(...list: number[]): Uint8Array {
  const set = new Uint8Array(256)
  for (const c of list) set[c] = 1
  return set
}

// The MQTT 3.1.1 statements that checks shared with 3.1.1 report, and their MQTT 5 ids.
const V5_RULES: Readonly<Record<string, string>> = {
  '[MQTT-1.5.3-1]': '[MQTT-1.5.4-1]',
  '[MQTT-1.5.3-2]': '[MQTT-1.5.4-2]',
  '[MQTT-2.2.2-2]': '[MQTT-2.1.3-1]',
  '[MQTT-2.3.1-1]': '[MQTT-2.2.1-3]',
  '[MQTT-4.7.1-2]': '[MQTT-4.7.1-1]',
  '[MQTT-4.7.1-3]': '[MQTT-4.7.1-2]',
  '[MQTT-4.8.0-1]': '[MQTT-2.2.1-5]',
}

/** A violation on an MQTT 5 connection: MQTT 5 statement ids, and the reason code to answer with. */
export function asMqtt5(v: PartialViolation): PartialViolation {
  const rule = v.rule === undefined ? undefined : (V5_RULES[v.rule] ?? v.rule)
  return { ...v, ...(rule === undefined ? {} : { rule }), reasonCode: v.reasonCode ?? V5_REASON_CODES[v.reason] }
}

/** PUBACK, PUBREC, PUBREL or PUBCOMP of remaining length 3 or more: id, reason code, properties. */
export function checkAckV5(b: Buffer, s: number, e: number, type: number): PartialViolation | undefined {
  const code = b[s + 2]!
  const valid = type === PUBACK || type === PUBREC ? PUBACK_CODES : PUBREL_CODES
  if (valid[code] !== 1) {
    return fail(
      'protocol-violation',
      ACK_RULES[type - PUBACK],
      `${ACK_NAMES[type - PUBACK]} reason code is not one of its own`,
    )
  }
  if (e - s === 3) return undefined
  const end = checkPropertyBlock(b, s + 3, e, type)
  if (typeof end !== 'number') return end
  return end === e ? undefined : fail('malformed', undefined, 'acknowledgement has bytes after its properties')
}

export function checkSubscribeV5(b: Buffer, s: number, e: number): PartialViolation | undefined {
  if (e - s < 2) return fail('malformed', undefined, 'SUBSCRIBE too short for its packet identifier')
  if (((b[s]! << 8) | b[s + 1]!) === 0) return fail('protocol-violation', '[MQTT-2.2.1-3]', 'packet identifier 0')
  const end = checkPropertyBlock(b, s + 2, e, SUBSCRIBE)
  if (typeof end !== 'number') return end
  let p = end
  if (p === e) return fail('protocol-violation', '[MQTT-3.8.3-2]', 'SUBSCRIBE without a topic filter')
  while (p < e) {
    if (e - p < 2) return fail('malformed', undefined, 'topic filter length truncated')
    const length = (b[p]! << 8) | b[p + 1]!
    p += 2
    if (e - p < length + 1) return fail('malformed', undefined, 'topic filter or subscription options truncated')
    const v = checkFilter(b, p, p + length)
    if (v !== undefined) return v
    const shared = isShared(b, p, p + length)
    if (shared) {
      const sv = checkShared(b, p, p + length)
      if (sv !== undefined) return sv
    }
    p += length
    const options = b[p++]!
    if ((options & 0xc0) !== 0) return fail('malformed', '[MQTT-3.8.3-5]', 'subscription options reserved bits are set')
    if ((options & 0x03) === 3) return fail('protocol-violation', undefined, 'Maximum QoS is 3 (MQTT 5 §3.8.3.1)')
    if ((options & 0x30) === 0x30) {
      return fail('protocol-violation', undefined, 'Retain Handling is 3 (MQTT 5 §3.8.3.1)')
    }
    if (shared && (options & 0x04) !== 0) {
      return fail('protocol-violation', '[MQTT-3.8.3-4]', 'No Local set on a shared subscription')
    }
  }
  return undefined
}

export function checkUnsubscribeV5(b: Buffer, s: number, e: number): PartialViolation | undefined {
  if (e - s < 2) return fail('malformed', undefined, 'UNSUBSCRIBE too short for its packet identifier')
  if (((b[s]! << 8) | b[s + 1]!) === 0) return fail('protocol-violation', '[MQTT-2.2.1-3]', 'packet identifier 0')
  const end = checkPropertyBlock(b, s + 2, e, UNSUBSCRIBE)
  if (typeof end !== 'number') return end
  return checkUnsubscribeFilters(b, end, e, '[MQTT-3.10.2-2]')
}

const SHARE_PREFIX = Buffer.from('$share/')

function isShared(b: Buffer, s: number, e: number): boolean {
  return (
    e - s >= SHARE_PREFIX.length && b.compare(SHARE_PREFIX, 0, SHARE_PREFIX.length, s, s + SHARE_PREFIX.length) === 0
  )
}

/** `$share/{ShareName}/{filter}` [MQTT-4.8.2-1] [MQTT-4.8.2-2]; the whole string already passed checkFilter. */
function checkShared(b: Buffer, s: number, e: number): PartialViolation | undefined {
  const name = s + SHARE_PREFIX.length
  let k = name
  while (k < e && b[k] !== 0x2f) {
    if (b[k] === 0x2b || b[k] === 0x23) {
      return fail('protocol-violation', '[MQTT-4.8.2-2]', "ShareName contains '+' or '#'")
    }
    k++
  }
  if (k === name) return fail('protocol-violation', '[MQTT-4.8.2-1]', 'empty ShareName')
  if (e - k < 2) return fail('protocol-violation', '[MQTT-4.8.2-2]', 'shared subscription without a topic filter')
  return undefined
}

/** What an MQTT 5 connection remembers: the client's CONNECT values and the Topic Aliases it set. */
export class Mqtt5Session {
  readonly limits: Mqtt5ClientLimits
  readonly #aliasMaximum: number
  /** One bit per alias the client has set; allocated on the first one. */
  #aliases: Uint8Array | null = null

  constructor(limits: Mqtt5ClientLimits, topicAliasMaximum: number) {
    this.limits = limits
    this.#aliasMaximum = topicAliasMaximum
  }

  /** The properties of a PUBLISH in [s, e); `emptyTopic` when its Topic Name has length 0. */
  publish(b: Buffer, s: number, e: number, emptyTopic: boolean): PartialViolation | undefined {
    const v = checkProperties(b, s, e, PUBLISH)
    if (v !== undefined) return v
    if (found.subscriptionIdentifier >= 0) {
      return fail('protocol-violation', '[MQTT-3.3.4-6]', 'PUBLISH from a client carries a Subscription Identifier')
    }
    const alias = found.topicAlias
    if (alias < 0) {
      if (!emptyTopic) return undefined
      return fail('protocol-violation', undefined, 'PUBLISH with an empty topic and no Topic Alias (MQTT 5 §3.3.2.1)')
    }
    if (alias === 0) return fail('topic-alias-invalid', '[MQTT-3.3.2-8]', 'Topic Alias is 0')
    if (alias > this.#aliasMaximum) {
      return fail('topic-alias-invalid', '[MQTT-3.3.2-9]', 'Topic Alias above the Topic Alias Maximum')
    }
    const set = this.#aliases
    if (emptyTopic) {
      if (set !== null && (set[alias >> 3]! & (1 << (alias & 7))) !== 0) return undefined
      return fail('protocol-violation', undefined, 'Topic Alias that this connection never set (MQTT 5 §3.3.2.3.4)')
    }
    const aliases = set ?? (this.#aliases = new Uint8Array((this.#aliasMaximum >> 3) + 1))
    aliases[alias >> 3]! |= 1 << (alias & 7)
    return undefined
  }

  /** A DISCONNECT body of one byte or more: reason code, properties. */
  disconnect(b: Buffer, s: number, e: number): PartialViolation | undefined {
    if (DISCONNECT_CODES[b[s]!] !== 1) {
      return fail('protocol-violation', '[MQTT-3.14.2-1]', 'DISCONNECT reason code a client may not send')
    }
    if (e - s === 1) return undefined
    const end = checkPropertyBlock(b, s + 1, e, DISCONNECT)
    if (typeof end !== 'number') return end
    if (end !== e) return fail('malformed', undefined, 'DISCONNECT has bytes after its properties')
    if (this.limits.sessionExpiryInterval === 0 && found.sessionExpiryInterval > 0) {
      return fail(
        'protocol-violation',
        undefined,
        'DISCONNECT sets a Session Expiry Interval after CONNECT set 0 (MQTT 5 §3.14.2.2.2)',
      )
    }
    return undefined
  }
}
