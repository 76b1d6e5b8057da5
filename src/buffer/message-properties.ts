// The MQTT 5 properties of a stored message: what a device sent that the
// bridge carries upstream unchanged, and their encoding in the `properties`
// TEXT column.
//
// Encoding: one JSON object, the property names of mqtt-packet, with
// correlationData as base64 (it is binary: 0x00 and bytes that are not
// UTF-8 must come back exactly). The estimate of a row's bytes counts this
// text as stored (message-store.ts, estimateMessageBytes), base64 growth
// included. Rows written before device properties were carried have the same
// shape with fewer keys, and read the same way.
//
// Message Expiry Interval is not a property here: the capture turns it into
// the row's absolute `expires_at`, and the drain sends what is left of it.
// Topic Alias and Subscription Identifier belong to one connection
// (hop-by-hop) and are never stored.
import { Buffer } from 'node:buffer'
import { BufferError } from '../storage/index.js'

/**
 * MQTT 5 properties carried with a message. User properties keep the
 * order of their keys and, for a repeated key, the order of its values
 * (an array), as mqtt-packet hands them over.
 */
export interface MessageProperties {
  readonly contentType?: string
  readonly payloadFormatIndicator?: boolean
  readonly responseTopic?: string
  readonly correlationData?: Uint8Array
  readonly userProperties?: Readonly<Record<string, string | readonly string[]>>
}

const MAX_FIELD_BYTES = 65535 // two-byte length prefix [MQTT-1.5.4, 1.5.6]

function bad(what: string): never {
  throw new BufferError('EDGE_ERR_BUFFER_INVALID', `invalid message properties: ${what}`)
}

function checkString(name: string, v: unknown): string {
  if (typeof v !== 'string' || Buffer.byteLength(v) > MAX_FIELD_BYTES)
    bad(`${name} must be a string of at most 65535 bytes`)
  return v
}

/**
 * The column text, or null when nothing is worth storing. Throws
 * BufferError('EDGE_ERR_BUFFER_INVALID') for a value the upstream encoder
 * could not write (a row that could never be sent would block its queue).
 */
export function encodeProperties(p: MessageProperties): string | null {
  if (typeof p !== 'object' || p === null) bad('not an object')
  const out: Record<string, unknown> = {}
  let n = 0
  if (p.contentType !== undefined) {
    out['contentType'] = checkString('contentType', p.contentType)
    n++
  }
  if (p.payloadFormatIndicator !== undefined) {
    out['payloadFormatIndicator'] = p.payloadFormatIndicator === true
    n++
  }
  if (p.responseTopic !== undefined) {
    out['responseTopic'] = checkString('responseTopic', p.responseTopic)
    n++
  }
  if (p.correlationData !== undefined) {
    const c = p.correlationData
    if (!(c instanceof Uint8Array) || c.byteLength > MAX_FIELD_BYTES)
      bad('correlationData must be binary data of at most 65535 bytes')
    out['correlationData'] = Buffer.from(c.buffer, c.byteOffset, c.byteLength).toString('base64')
    n++
  }
  const user = p.userProperties
  if (user !== undefined) {
    if (typeof user !== 'object' || user === null) bad('userProperties must be an object')
    const copy: Record<string, string | string[]> = {}
    let keys = 0
    for (const key of Object.keys(user)) {
      checkString('a user property name', key)
      const v = user[key]
      if (Array.isArray(v)) copy[key] = v.map((one) => checkString(`user property ${key.slice(0, 100)}`, one))
      else copy[key] = checkString(`user property ${key.slice(0, 100)}`, v)
      keys++
    }
    if (keys > 0) {
      out['userProperties'] = copy
      n++
    }
  }
  return n === 0 ? null : JSON.stringify(out)
}

/**
 * The column text back to properties. Text that does not parse (not written
 * by this code) gives undefined: the message still goes, without them,
 * rather than blocking its queue.
 */
export function decodeProperties(json: string | null): MessageProperties | undefined {
  if (json === null) return undefined
  let raw: Record<string, unknown>
  try {
    raw = JSON.parse(json) as Record<string, unknown>
  } catch {
    return undefined
  }
  if (typeof raw !== 'object' || raw === null) return undefined
  const out: {
    contentType?: string
    payloadFormatIndicator?: boolean
    responseTopic?: string
    correlationData?: Uint8Array
    userProperties?: Record<string, string | readonly string[]>
  } = {}
  if (typeof raw['contentType'] === 'string') out.contentType = raw['contentType']
  if (typeof raw['payloadFormatIndicator'] === 'boolean') out.payloadFormatIndicator = raw['payloadFormatIndicator']
  if (typeof raw['responseTopic'] === 'string') out.responseTopic = raw['responseTopic']
  if (typeof raw['correlationData'] === 'string') out.correlationData = Buffer.from(raw['correlationData'], 'base64')
  const user = raw['userProperties']
  if (typeof user === 'object' && user !== null && !Array.isArray(user)) {
    out.userProperties = user as Record<string, string | readonly string[]>
  }
  return out
}
