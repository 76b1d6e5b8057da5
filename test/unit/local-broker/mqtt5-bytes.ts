// Raw-byte builders of MQTT 5 packets and the feeding harness for the packet
// guard's MQTT 5 tests: every field is spelled out, so a test can break any
// one of them (mqtt-packet's generate only makes valid packets).
import assert from 'node:assert/strict'
import { PacketGuard, type GuardViolation, type PacketGuardLimits } from '../../../src/local-broker/packet-guard.js'
import type { AckCheck } from '../../../src/local-broker/guard-types.js'
import { remainingLength } from '../../helpers/mqtt-clients.js'

export type Bytes = Buffer | readonly number[]
export const bytes = (...parts: Bytes[]): Buffer =>
  Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))))
export const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff]
export const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]
export const varint = (n: number): Buffer => remainingLength(n)
const asBytes = (s: string | Bytes): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : bytes(s))
/** A length-prefixed string or binary field. */
export const field = (s: string | Bytes): Buffer => {
  const b = asBytes(s)
  return bytes(u16(b.length), b)
}
/** Fixed header with the body's real length, then the body. */
export const packet = (byte1: number, ...body: Bytes[]): Buffer => {
  const b = bytes(...body)
  return bytes([byte1, ...remainingLength(b.length)], b)
}

// --- properties (MQTT 5 §2.2.2.2) ---------------------------------------------

/** One property: identifier, then its value bytes as given. */
export const prop = (id: number, ...value: Bytes[]): Buffer => bytes([id], ...value)
/** A property block: its length, then the properties. */
export const props = (...list: Bytes[]): Buffer => {
  const b = bytes(...list)
  return bytes(varint(b.length), b)
}
export const P = {
  payloadFormat: (v: number) => prop(0x01, [v]),
  messageExpiry: (v: number) => prop(0x02, u32(v)),
  contentType: (s: string | Bytes) => prop(0x03, field(s)),
  responseTopic: (s: string | Bytes) => prop(0x08, field(s)),
  correlationData: (b: Bytes) => prop(0x09, field(b)),
  subscriptionId: (v: number) => prop(0x0b, varint(v)),
  sessionExpiry: (v: number) => prop(0x11, u32(v)),
  assignedClientId: (s: string) => prop(0x12, field(s)),
  authMethod: (s: string) => prop(0x15, field(s)),
  authData: (b: Bytes) => prop(0x16, field(b)),
  requestProblem: (v: number) => prop(0x17, [v]),
  willDelay: (v: number) => prop(0x18, u32(v)),
  requestResponse: (v: number) => prop(0x19, [v]),
  serverReference: (s: string) => prop(0x1c, field(s)),
  reasonString: (s: string | Bytes) => prop(0x1f, field(s)),
  receiveMaximum: (v: number) => prop(0x21, u16(v)),
  topicAliasMaximum: (v: number) => prop(0x22, u16(v)),
  topicAlias: (v: number) => prop(0x23, u16(v)),
  maximumQos: (v: number) => prop(0x24, [v]),
  user: (k: string | Bytes, v: string | Bytes) => prop(0x26, field(k), field(v)),
  maximumPacketSize: (v: number) => prop(0x27, u32(v)),
}

// --- packets --------------------------------------------------------------------

export interface Connect5Spec {
  /** Connect flags; computed from the fields below when absent. */
  flags?: number
  clean?: boolean
  /** The whole property block (length included); empty when absent. */
  props?: Bytes
  clientId?: string | Bytes
  will?: { props?: Bytes; topic: string | Bytes; payload?: Bytes; qos?: number; retain?: boolean }
  user?: string | Bytes
  password?: Bytes
  trailing?: Bytes
}

export function connect5(spec: Connect5Spec = {}): Buffer {
  const will = spec.will
  const flags =
    spec.flags ??
    ((spec.clean ?? true) ? 0x02 : 0) |
      (will ? 0x04 | ((will.qos ?? 0) << 3) | (will.retain ? 0x20 : 0) : 0) |
      (spec.password !== undefined ? 0x40 : 0) |
      (spec.user !== undefined ? 0x80 : 0)
  return packet(
    0x10,
    field('MQTT'),
    [5, flags, 0, 60],
    spec.props ?? props(),
    field(spec.clientId ?? 'dev-5'),
    will ? bytes(will.props ?? props(), field(will.topic), field(will.payload ?? [0x6f, 0x66, 0x66])) : [],
    spec.user !== undefined ? field(spec.user) : [],
    spec.password !== undefined ? field(spec.password) : [],
    spec.trailing ?? [],
  )
}

export interface Publish5Spec {
  topic?: string | Bytes
  qos?: number
  dup?: boolean
  retain?: boolean
  id?: number
  /** The whole property block (length included); empty when absent. */
  props?: Bytes
  payload?: Bytes | number
}

export function publish5(spec: Publish5Spec = {}): Buffer {
  const qos = spec.qos ?? 0
  const byte1 = 0x30 | (spec.dup ? 0x08 : 0) | (qos << 1) | (spec.retain ? 0x01 : 0)
  const payload = typeof spec.payload === 'number' ? Buffer.alloc(spec.payload, 0x61) : asBytes(spec.payload ?? 'x')
  return packet(
    byte1,
    field(spec.topic ?? 'site/dev-5/temp'),
    qos > 0 ? u16(spec.id ?? 1) : [],
    spec.props ?? props(),
    payload,
  )
}

/** PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70: id, then reason code and properties when given. */
export const ack5 = (byte1: number, id: number, code?: number, properties?: Bytes): Buffer =>
  packet(byte1, u16(id), code === undefined ? [] : [code], properties ?? [])

export const subscribe5 = (id: number, properties: Bytes, ...filters: [string | Bytes, number][]): Buffer =>
  packet(0x82, u16(id), properties, ...filters.map(([f, o]) => bytes(field(f), [o])))

export const unsubscribe5 = (id: number, properties: Bytes, ...filters: (string | Bytes)[]): Buffer =>
  packet(0xa2, u16(id), properties, ...filters.map(field))

export const disconnect5 = (code?: number, properties?: Bytes): Buffer =>
  packet(0xe0, code === undefined ? [] : [code], properties ?? [])

export const CONNECT5 = connect5()

// --- harness ----------------------------------------------------------------------

/** The limits of these tests unless a case says otherwise: MQTT 5 allowed, aliases 1 to 10. */
export const V5_LIMITS: Partial<PacketGuardLimits> = { allowMqtt5: true, topicAliasMaximum: 10 }

export interface RunOptions {
  limits?: Partial<PacketGuardLimits>
  acks?: AckCheck
  /** Call authenticated() once this many bytes have been fed (chunks are split there). */
  authenticateAt?: number
}

export interface Run {
  passed: Buffer
  violation: GuardViolation | undefined
  guard: PacketGuard
}

/** Feeds `stream` in chunks of `chunkSize` (whole stream when Infinity) and collects what passes. */
export function run(stream: Buffer, chunkSize: number, options: RunOptions = {}): Run {
  const guard = new PacketGuard(options.limits ?? V5_LIMITS, options.acks)
  const passed: Buffer[] = []
  let violation: GuardViolation | undefined
  const cuts = new Set<number>()
  for (let k = chunkSize; k < stream.length; k += chunkSize) cuts.add(k)
  if (options.authenticateAt !== undefined) cuts.add(options.authenticateAt)
  const bounds = [0, ...[...cuts].sort((a, b) => a - b), stream.length]
  for (let c = 0; c + 1 < bounds.length; c++) {
    const from = bounds[c]!
    if (from === options.authenticateAt) guard.authenticated()
    const chunk = stream.subarray(from, bounds[c + 1])
    const r = guard.feed(chunk)
    assert.ok(r.pass >= 0 && r.pass <= chunk.length)
    passed.push(chunk.subarray(0, r.pass))
    if (r.violation) {
      violation = r.violation
      break
    }
  }
  return { passed: Buffer.concat(passed), violation, guard }
}

export interface Expected {
  reason: GuardViolation['reason']
  rule?: string
  /** MQTT 5 reason code; expected absent when undefined. */
  code?: number
  /** Expect a CONNACK: with `code` (MQTT 5) when true, or this MQTT 3.1.1 return code. */
  connack?: true | number
  limit?: GuardViolation['limit']
}

/**
 * Feeds `stream` whole and one byte at a time: the guard must pass exactly the
 * bytes before offset `at` (whole) and never the invalid packet's last byte
 * (byte by byte), with the same violation both ways.
 */
export function assertRefused(stream: Buffer, at: number, expected: Expected, options?: RunOptions): GuardViolation {
  const whole = run(stream, Infinity, options)
  assert.ok(whole.violation, 'expected a violation')
  const v = whole.violation
  assert.equal(v.reason, expected.reason, v.detail)
  assert.equal(v.rule, expected.rule, v.detail)
  assert.equal(v.reasonCode, expected.code, v.detail)
  assert.equal(v.connackReturnCode, expected.connack === true ? expected.code : expected.connack)
  assert.equal(v.limit, expected.limit)
  assert.deepEqual(whole.passed, stream.subarray(0, at), 'passes exactly the bytes before the invalid packet')
  const split = run(stream, 1, options)
  assert.deepEqual(split.violation, v)
  assert.ok(split.passed.length < stream.length)
  assert.deepEqual(split.passed, stream.subarray(0, split.passed.length))
  return v
}

/** `bad` after a valid MQTT 5 CONNECT. */
export function assertRefusedAfterConnect(bad: Buffer, expected: Expected, options?: RunOptions): GuardViolation {
  return assertRefused(bytes(CONNECT5, bad), CONNECT5.length, expected, options)
}

/** Passes `stream` byte-identical whole, one byte and 7 bytes at a time; returns a guard fed it whole. */
export function assertPasses(stream: Buffer, options?: RunOptions): PacketGuard {
  for (const size of [Infinity, 1, 7]) {
    const r = run(stream, size, options)
    assert.equal(r.violation, undefined, `chunk size ${size}: ${r.violation?.detail}`)
    assert.deepEqual(r.passed, stream)
  }
  return run(stream, Infinity, options).guard
}
