// Fixed-header first byte checks of the packet guard (packet-guard.ts): the
// packet type and its flags, once CONNECT has come first (the guard checks
// packet order itself).
import { fail, type PartialViolation } from './guard-checks.js'
import {
  CONNECT,
  CONNACK,
  PUBLISH,
  PUBACK,
  PUBREC,
  PUBREL,
  PUBCOMP,
  SUBSCRIBE,
  SUBACK,
  UNSUBSCRIBE,
  UNSUBACK,
  PINGREQ,
  PINGRESP,
  DISCONNECT,
  AUTH,
} from './packet-types.js'

/** `mqtt5`: the connection speaks MQTT 5 (where AUTH exists). */
export function checkFirstByte(b: number, mqtt5: boolean): PartialViolation | undefined {
  const type = b >> 4
  const flags = b & 0x0f
  switch (type) {
    case PUBLISH: {
      const qos = (flags >> 1) & 3
      if (qos === 3) return fail('malformed', '[MQTT-3.3.1-4]', 'PUBLISH with QoS 3')
      if (qos === 0 && (flags & 0x08) !== 0) {
        return fail('malformed', '[MQTT-3.3.1-2]', 'PUBLISH with DUP set and QoS 0')
      }
      return undefined
    }
    case PUBREL:
      return flags === 2 ? undefined : fail('malformed', '[MQTT-3.6.1-1]', 'PUBREL fixed-header flags are not 0010')
    case SUBSCRIBE:
      return flags === 2 ? undefined : fail('malformed', '[MQTT-3.8.1-1]', 'SUBSCRIBE fixed-header flags are not 0010')
    case UNSUBSCRIBE:
      return flags === 2
        ? undefined
        : fail('malformed', '[MQTT-3.10.1-1]', 'UNSUBSCRIBE fixed-header flags are not 0010')
    case CONNECT:
    case PUBACK:
    case PUBREC:
    case PUBCOMP:
    case PINGREQ:
    case DISCONNECT:
      return flags === 0 ? undefined : fail('malformed', '[MQTT-2.2.2-2]', 'reserved fixed-header flags are set')
    case CONNACK:
    case SUBACK:
    case UNSUBACK:
    case PINGRESP:
      // CVE-2021-28166 (Mosquitto): a server-to-client packet sent to the broker
      return fail('protocol-violation', undefined, 'packet type is only sent by a server')
    case AUTH:
      if (!mqtt5) break
      if (flags !== 0) return fail('malformed', '[MQTT-3.15.1-1]', 'AUTH fixed-header flags are not 0000')
      // the guard refuses a CONNECT with an Authentication Method, so no AUTH can follow one
      return fail('protocol-violation', '[MQTT-4.12.0-7]', 'AUTH without an Authentication Method in CONNECT')
  }
  return fail('protocol-violation', undefined, 'reserved packet type')
}
