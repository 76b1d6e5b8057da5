// MQTT UTF-8 string checks on raw bytes, for the packet guard: mqtt-packet
// decodes with Buffer#toString, which replaces ill-formed UTF-8, so these
// rules can only be checked before it parses [MQTT-1.5.3].
import { isUtf8 } from 'node:buffer'

// scanString results; the argument `wildcards` takes STR_OK, STR_WILDCARD or STR_HASH_PLACEMENT.
export const STR_OK = 0
export const STR_NUL = 1
export const STR_UTF8 = 2
export const STR_WILDCARD = 3
export const STR_HASH_PLACEMENT = 4
export const STR_PLUS_PLACEMENT = 5
/** U+0001–U+001F or U+007F–U+009F (MQTT 3.1.1 §1.5.3; Mosquitto 2.0.20 closes the connection). */
export const STR_CONTROL = 6

/**
 * Checks b[s, e) as an MQTT UTF-8 string. `wildcards`: STR_OK ignores '+'/'#',
 * STR_WILDCARD refuses them (topic names), STR_HASH_PLACEMENT checks their
 * placement (topic filters). One pass in JS; isUtf8 only runs when a byte is
 * >= 0x80, since short ASCII topics are the common case and the native call
 * costs more than the loop. '+', '#', '/' and 0x00 cannot occur inside a
 * multi-byte sequence, so matching them byte-wise is exact. Control
 * characters are refused in every string scanned (client ids, user names,
 * topics, filters, Will topics), never in passwords or payloads.
 */
export function scanString(b: Buffer, s: number, e: number, wildcards: number): number {
  let high = false
  for (let k = s; k < e; k++) {
    const c = b[k]!
    if (c >= 0x80) {
      high = true
      // C1 controls U+0080–U+009F are C2 80–C2 9F; 0xC2 is never a continuation byte
      if (c === 0xc2 && k + 1 < e && b[k + 1]! <= 0x9f) return STR_CONTROL
    } else if (c === 0x00) {
      return STR_NUL
    } else if (c < 0x20 || c === 0x7f) {
      return STR_CONTROL
    } else if (c === 0x23 /* # */ || c === 0x2b /* + */) {
      if (wildcards === STR_WILDCARD) return STR_WILDCARD
      if (wildcards === STR_HASH_PLACEMENT) {
        const alone = (k === s || b[k - 1] === 0x2f) && (k === e - 1 || b[k + 1] === 0x2f)
        if (c === 0x23 && (k !== e - 1 || !alone)) return STR_HASH_PLACEMENT // [MQTT-4.7.1-2]
        if (c === 0x2b && !alone) return STR_PLUS_PLACEMENT // [MQTT-4.7.1-3]
      }
    }
  }
  if (high && !isUtf8(b.subarray(s, e))) return STR_UTF8
  return STR_OK
}

/**
 * Checks b[s, e) as an MQTT 5 UTF-8 string that is neither a topic nor an
 * identifier (user properties, reason strings, content types): U+0000 and
 * ill-formed UTF-8 are refused [MQTT-1.5.4-1] [MQTT-1.5.4-2]; control
 * characters are only SHOULD NOT there, so they pass. Returns STR_OK,
 * STR_NUL or STR_UTF8.
 */
export function scanText(b: Buffer, s: number, e: number): number {
  let high = false
  for (let k = s; k < e; k++) {
    const c = b[k]!
    if (c === 0x00) return STR_NUL
    if (c >= 0x80) high = true
  }
  if (high && !isUtf8(b.subarray(s, e))) return STR_UTF8
  return STR_OK
}
