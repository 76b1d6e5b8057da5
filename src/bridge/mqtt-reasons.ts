// Reason and return codes of the upstream's CONNACK, DISCONNECT and acks, as
// errors and log text.
import { BridgeError } from './errors.js'
import type { ProtocolVersion } from './mqtt-session.js'

/** MQTT 5 reason codes a PUBACK/PUBREC may carry that mean "try again later", not "never". */
const TRANSIENT_REASONS = new Set([0x91 /* packet id in use */, 0x97 /* quota exceeded */])

export function isTransientReason(code: number): boolean {
  return TRANSIENT_REASONS.has(code)
}

export function rejected(code: number): BridgeError {
  const message = `upstream refused the message (reason code 0x${code.toString(16)})`
  return new BridgeError('EDGE_ERR_BRIDGE_UPSTREAM_REJECTED', message, { reasonCode: code })
}

const CONNACK_311: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
}

const REASONS_5: Record<number, string> = {
  0x80: 'unspecified error',
  0x81: 'malformed packet',
  0x82: 'protocol error',
  0x83: 'implementation specific error',
  0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid',
  0x86: 'bad user name or password',
  0x87: 'not authorized',
  0x88: 'server unavailable',
  0x89: 'server busy',
  0x8a: 'banned',
  0x8b: 'server shutting down',
  0x8c: 'bad authentication method',
  0x8d: 'keep alive timeout',
  0x8e: 'session taken over',
  0x93: 'receive maximum exceeded',
  0x95: 'packet too large',
  0x97: 'quota exceeded',
  0x98: 'administrative action',
  0x9c: 'use another server',
  0x9d: 'server moved',
  0x9f: 'connection rate exceeded',
}

export function connackText(version: ProtocolVersion, code: number): string {
  const text = version === 5 ? REASONS_5[code] : CONNACK_311[code]
  return `${version === 5 ? 'reason' : 'return'} code ${code}${text === undefined ? '' : `, ${text}`}`
}

export function disconnectText(code: number): string {
  return `reason code 0x${code.toString(16)}${REASONS_5[code] === undefined ? '' : `, ${REASONS_5[code]}`}`
}
