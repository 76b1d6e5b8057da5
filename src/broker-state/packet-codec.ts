// Packet codec (invariant 5 of persistence.ts, exact round trip): the
// payload as a BLOB (string payloads stay strings), every other own field as
// JSON, with Buffers (e.g. MQTT 5 correlationData) and `undefined` tagged.
import type { PersistedPacket } from './types.js'

const PAYLOAD_NONE = 0
const PAYLOAD_BUFFER = 1
const PAYLOAD_STRING = 2
// MQTT strings cannot contain U+0000 [MQTT-1.5.4-2], so no key from the wire
// can collide with these tags.
const TAG_UNDEFINED = '\u0000u'
const TAG_BINARY = '\u0000b'

export interface EncodedPacket {
  header: string
  payload: Buffer | null
  payloadKind: number
  /** payload + header bytes: what the queue byte bound charges. */
  bytes: number
}

export interface EncodedRow {
  header: string
  payload: Buffer | null
  payload_kind: number
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

function jsonReplacer(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key]
  if (raw === undefined) return { [TAG_UNDEFINED]: 1 }
  if (raw instanceof Uint8Array) return { [TAG_BINARY]: asBuffer(raw).toString('base64') }
  return value
}

export function encodePacket(packet: object): EncodedPacket {
  let payload: Buffer | null = null
  let payloadKind = PAYLOAD_NONE
  const rest: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  for (const [k, v] of Object.entries(packet)) {
    if (k === 'payload') {
      if (typeof v === 'string') {
        payload = Buffer.from(v, 'utf8')
        payloadKind = PAYLOAD_STRING
        continue
      }
      if (v instanceof Uint8Array) {
        payload = asBuffer(v)
        payloadKind = PAYLOAD_BUFFER
        continue
      }
    }
    rest[k] = v
  }
  const header = JSON.stringify(rest, jsonReplacer)
  return { header, payload, payloadKind, bytes: (payload?.length ?? 0) + Buffer.byteLength(header) }
}

function revive(v: unknown): unknown {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i])
    return v
  }
  if (v === null || typeof v !== 'object') return v
  const o = v as Record<string, unknown>
  const keys = Object.keys(o)
  if (keys.length === 1) {
    if (keys[0] === TAG_UNDEFINED) return undefined
    if (keys[0] === TAG_BINARY) return Buffer.from(String(o[TAG_BINARY]), 'base64')
  }
  for (const k of keys) {
    const before = o[k]
    const after = revive(before)
    // defineProperty, not assignment: a key named "__proto__" must stay data
    if (after !== before)
      Object.defineProperty(o, k, { value: after, writable: true, enumerable: true, configurable: true })
  }
  return o
}

export function decodePacket(row: EncodedRow): PersistedPacket {
  const packet = revive(JSON.parse(row.header)) as PersistedPacket
  if (row.payload_kind === PAYLOAD_BUFFER) packet.payload = row.payload ?? Buffer.alloc(0)
  else if (row.payload_kind === PAYLOAD_STRING) packet.payload = row.payload?.toString('utf8') ?? ''
  return packet
}
