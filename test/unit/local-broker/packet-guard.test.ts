// Unit tests of the byte-level MQTT guard in front of aedes.
//
// Glossary:
//   stream     | every byte a client sends on one connection, in order
//   at         | offset in the stream where the invalid packet starts; with the
//              | whole stream fed at once, the guard must pass exactly `at` bytes
//   rule       | the MQTT 3.1.1 normative statement id the guard reports
//   1-byte run | the same stream fed one byte per feed(), to exercise the
//              | accumulate-across-chunks path instead of the in-place path
import { remainingLength } from '../../helpers/mqtt-clients.js'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { duplexPair, type Duplex } from 'node:stream'
import { describe, test, type TestContext } from 'node:test'
import mqttPacket from 'mqtt-packet'
import { PacketGuard, type GuardViolation, type PacketGuardLimits } from '../../../src/local-broker/packet-guard.js'
import { connectionGuard, guardConnection } from '../../../src/local-broker/guard-connection.js'

// --- encoders ---------------------------------------------------------------

type Bytes = Buffer | readonly number[]
const bytes = (...parts: Bytes[]): Buffer => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))))
const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff]
const asBytes = (s: string | Bytes): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : bytes(s))
/** A length-prefixed MQTT string or binary field. */
const field = (s: string | Bytes): Buffer => {
  const b = asBytes(s)
  return bytes(u16(b.length), b)
}

/** Fixed header with the body's real length, then the body. */
const packet = (byte1: number, ...body: Bytes[]): Buffer => {
  const b = bytes(...body)
  return bytes([byte1, ...remainingLength(b.length)], b)
}

interface ConnectSpec {
  name?: string
  level?: number
  /** Connect flags; computed from the fields below when absent. */
  flags?: number
  clean?: boolean
  clientId?: string | Bytes
  will?: { topic: string | Bytes; message?: Bytes }
  user?: string | Bytes
  password?: Bytes
  trailing?: Bytes
}

function connect(spec: ConnectSpec = {}): Buffer {
  const flags =
    spec.flags ??
    ((spec.clean ?? true) ? 0x02 : 0) |
      (spec.will ? 0x04 : 0) |
      (spec.password !== undefined ? 0x40 : 0) |
      (spec.user !== undefined ? 0x80 : 0)
  return packet(
    0x10,
    field(spec.name ?? 'MQTT'),
    [spec.level ?? 4, flags, 0, 60],
    field(spec.clientId ?? 'dev-1'),
    spec.will ? bytes(field(spec.will.topic), field(spec.will.message ?? [0x6f, 0x66, 0x66])) : [],
    spec.user !== undefined ? field(spec.user) : [],
    spec.password !== undefined ? field(spec.password) : [],
    spec.trailing ?? [],
  )
}

interface PublishSpec {
  topic?: string | Bytes
  qos?: number
  dup?: boolean
  retain?: boolean
  id?: number
  payload?: Bytes | number
}

function publish(spec: PublishSpec = {}): Buffer {
  const qos = spec.qos ?? 0
  const byte1 = 0x30 | (spec.dup ? 0x08 : 0) | (qos << 1) | (spec.retain ? 0x01 : 0)
  const payload = typeof spec.payload === 'number' ? Buffer.alloc(spec.payload, 0x61) : asBytes(spec.payload ?? 'x')
  return packet(byte1, field(spec.topic ?? 'site/dev-1/temp'), qos > 0 ? u16(spec.id ?? 1) : [], payload)
}

const subscribe = (id: number, ...filters: [string | Bytes, number][]): Buffer =>
  packet(0x82, u16(id), ...filters.map(([f, q]) => bytes(field(f), [q])))
const unsubscribe = (id: number, ...filters: (string | Bytes)[]): Buffer => packet(0xa2, u16(id), ...filters.map(field))

const CONNECT = connect()

/** Byte 1 plus the remaining-length varint. */
const fixedHeaderLength = (p: Buffer): number => {
  let k = 1
  while ((p[k]! & 0x80) !== 0) k++
  return k + 1
}

// --- harness ----------------------------------------------------------------

interface Run {
  passed: Buffer
  violation: GuardViolation | undefined
  guard: PacketGuard
}

interface RunOptions {
  limits?: Partial<PacketGuardLimits>
  /** Call authenticated() once this many bytes have been fed (chunks are split there). */
  authenticateAt?: number
}

/** Feeds `stream` in chunks of `chunkSize` (whole stream when Infinity) and collects what passes. */
function run(stream: Buffer, chunkSize: number, options: RunOptions = {}): Run {
  const guard = new PacketGuard(options.limits)
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

interface Case {
  name: string
  stream: Buffer
  /** Offset of the invalid packet. */
  at: number
  reason: GuardViolation['reason']
  rule?: string
  connack?: number
  limit?: GuardViolation['limit']
  options?: RunOptions
}

/** A case whose bad packet follows a valid CONNECT (and authentication when `auth`). */
function afterConnect(
  name: string,
  bad: Buffer,
  expected: Pick<Case, 'reason' | 'rule' | 'limit'>,
  options: RunOptions & { auth?: boolean } = {},
): Case {
  const { auth, ...rest } = options
  return {
    name,
    stream: bytes(CONNECT, bad),
    at: CONNECT.length,
    ...expected,
    options: auth ? { ...rest, authenticateAt: CONNECT.length } : rest,
  }
}

function first(
  name: string,
  bad: Buffer,
  expected: Pick<Case, 'reason' | 'rule' | 'connack' | 'limit'>,
  options?: RunOptions,
): Case {
  return { name, stream: bad, at: 0, ...expected, ...(options ? { options } : {}) }
}

function assertCase(c: Case): void {
  const whole = run(c.stream, Infinity, c.options)
  assert.ok(whole.violation, 'expected a violation')
  assert.equal(whole.violation.reason, c.reason)
  assert.equal(whole.violation.rule, c.rule)
  assert.equal(whole.violation.connackReturnCode, c.connack)
  assert.equal(whole.violation.limit, c.limit)
  assert.deepEqual(whole.passed, c.stream.subarray(0, c.at), 'passes exactly the bytes before the invalid packet')
  // The same stream byte by byte: same verdict, and the invalid packet's last
  // byte never goes through, so mqtt-packet can never complete it.
  const split = run(c.stream, 1, c.options)
  assert.deepEqual(split.violation, whole.violation)
  assert.ok(split.passed.length < c.stream.length)
  assert.deepEqual(split.passed, c.stream.subarray(0, split.passed.length))
}

function assertPassesWhole(stream: Buffer, options?: RunOptions): PacketGuard {
  for (const size of [Infinity, 1, 7]) {
    const r = run(stream, size, options)
    assert.equal(r.violation, undefined, `chunk size ${size}: ${r.violation?.detail}`)
    assert.deepEqual(r.passed, stream)
  }
  return run(stream, Infinity, options).guard
}

const malformed = { reason: 'malformed' } as const
const protocol = { reason: 'protocol-violation' } as const

// --- CONNECT ----------------------------------------------------------------

describe('PacketGuard: CONNECT', () => {
  test('passes an MQTT 3.1.1 CONNECT and exposes its client id', () => {
    const guard = assertPassesWhole(CONNECT)
    assert.equal(guard.clientId, 'dev-1')
  })

  test('passes an MQTT 3.1 CONNECT (protocol name MQIsdp, level 3)', () => {
    assertPassesWhole(connect({ name: 'MQIsdp', level: 3 }))
  })

  test('passes the bridge bit on the protocol level (0x84, 0x83), as aedes does', () => {
    assertPassesWhole(connect({ level: 0x84 }))
    assertPassesWhole(connect({ name: 'MQIsdp', level: 0x83 }))
  })

  test('passes a CONNECT with Will, user name and a binary password holding 0x00 and 0xff', () => {
    const c = connect({
      will: { topic: 'site/dev-1/status', message: [0, 0xff] },
      user: 'ü-user',
      password: [0, 0xff, 0xc0, 0x80],
    })
    assert.equal(assertPassesWhole(c).clientId, 'dev-1')
  })

  test('passes an empty client id with clean session [MQTT-3.1.3-6]', () => {
    assert.equal(assertPassesWhole(connect({ clientId: '' })).clientId, '')
  })

  test('passes what mqtt-packet generates, Will QoS 2 and retain included', () => {
    const c = mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clientId: 'gen',
      clean: false,
      keepalive: 30,
      username: 'u',
      password: Buffer.from('p'),
      will: { topic: 'w/t', payload: Buffer.from('bye'), qos: 2, retain: true },
    })
    assert.equal(assertPassesWhole(c).clientId, 'gen')
  })

  test('leaves clientId undefined until the CONNECT is known valid', () => {
    const guard = new PacketGuard()
    const c = connect({ trailing: [0] })
    guard.feed(c.subarray(0, c.length - 1))
    assert.equal(guard.clientId, undefined)
    assert.equal(guard.feed(c.subarray(c.length - 1)).violation?.clientId, 'dev-1')
    assert.equal(guard.clientId, undefined)
  })

  const cases: Case[] = [
    first('closes when the first packet is PUBLISH, not CONNECT [MQTT-3.1.0-1]', publish(), {
      ...protocol,
      rule: '[MQTT-3.1.0-1]',
    }),
    first('closes when the first packet is PINGREQ, not CONNECT [MQTT-3.1.0-1]', bytes([0xc0, 0]), {
      ...protocol,
      rule: '[MQTT-3.1.0-1]',
    }),
    afterConnect('closes on a second CONNECT [MQTT-3.1.0-2]', CONNECT, { ...protocol, rule: '[MQTT-3.1.0-2]' }),
    first(
      'answers CONNACK 0x84 to an MQTT 5 CONNECT (level 5) where MQTT 5 is off [MQTT-3.1.2-2]',
      connect({ level: 5 }),
      {
        reason: 'unsupported-protocol-version',
        rule: '[MQTT-3.1.2-2]',
        connack: 0x84,
      },
    ),
    first(
      'answers CONNACK 0x84 to an MQTT 5 CONNECT from mqtt-packet, properties and all, where MQTT 5 is off [MQTT-3.1.2-2]',
      mqttPacket.generate(
        {
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 5,
          clientId: 'v5',
          clean: true,
          keepalive: 60,
          properties: { sessionExpiryInterval: 300, userProperties: { a: 'b' } },
        },
        { protocolVersion: 5 },
      ),
      { reason: 'unsupported-protocol-version', rule: '[MQTT-3.1.2-2]', connack: 0x84 },
    ),
    first('answers CONNACK 0x01 to protocol name MQTT with level 3 [MQTT-3.1.2-2]', connect({ level: 3 }), {
      reason: 'unsupported-protocol-version',
      rule: '[MQTT-3.1.2-2]',
      connack: 1,
    }),
    first(
      'answers CONNACK 0x01 to protocol name MQIsdp with level 4 [MQTT-3.1.2-2]',
      connect({ name: 'MQIsdp', level: 4 }),
      {
        reason: 'unsupported-protocol-version',
        rule: '[MQTT-3.1.2-2]',
        connack: 1,
      },
    ),
    first('closes without CONNACK on an unknown protocol name [MQTT-3.1.2-1]', connect({ name: 'MQTX' }), {
      ...protocol,
      rule: '[MQTT-3.1.2-1]',
    }),
    first('closes on CONNECT fixed-header flags other than 0000 [MQTT-2.2.2-2]', bytes([0x11], CONNECT.subarray(1)), {
      ...malformed,
      rule: '[MQTT-2.2.2-2]',
    }),
    first('closes when the CONNECT reserved flag is 1 [MQTT-3.1.2-3]', connect({ flags: 0x03 }), {
      ...malformed,
      rule: '[MQTT-3.1.2-3]',
    }),
    first('closes on Will QoS set while the Will flag is 0 [MQTT-3.1.2-13]', connect({ flags: 0x02 | 0x08 }), {
      ...malformed,
      rule: '[MQTT-3.1.2-13]',
    }),
    first('closes on Will Retain set while the Will flag is 0 [MQTT-3.1.2-15]', connect({ flags: 0x02 | 0x20 }), {
      ...malformed,
      rule: '[MQTT-3.1.2-15]',
    }),
    first('closes on Will QoS 3 [MQTT-3.1.2-14]', connect({ flags: 0x02 | 0x04 | 0x18, will: { topic: 'w' } }), {
      ...malformed,
      rule: '[MQTT-3.1.2-14]',
    }),
    first(
      'closes on a password flag without the user name flag [MQTT-3.1.2-22]',
      connect({ flags: 0x02 | 0x40, password: [1, 2] }),
      { ...malformed, rule: '[MQTT-3.1.2-22]' },
    ),
    first('closes on a client id that is not well-formed UTF-8 [MQTT-1.5.3-1]', connect({ clientId: [0x64, 0xff] }), {
      ...malformed,
      rule: '[MQTT-1.5.3-1]',
    }),
    first(
      'closes on a client id with an overlong encoding of U+0000 (C0 80) [MQTT-1.5.3-1]',
      connect({ clientId: [0xc0, 0x80] }),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    first(
      'closes on a client id encoding the surrogate U+D800 [MQTT-1.5.3-1]',
      connect({ clientId: [0xed, 0xa0, 0x80] }),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    first('closes on a client id containing U+0000 [MQTT-1.5.3-2]', connect({ clientId: [0x64, 0x00, 0x65] }), {
      ...malformed,
      rule: '[MQTT-1.5.3-2]',
    }),
    first(
      'closes on a Will Topic that is not well-formed UTF-8 [MQTT-1.5.3-1]',
      connect({ will: { topic: [0x61, 0xfe] } }),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    first('closes on a Will Topic containing U+0000 [MQTT-4.7.3-2]', connect({ will: { topic: [0x61, 0x00] } }), {
      ...malformed,
      rule: '[MQTT-4.7.3-2]',
    }),
    first("closes on a Will Topic containing '#' [MQTT-4.7.1-1]", connect({ will: { topic: 'a/#' } }), {
      ...protocol,
      rule: '[MQTT-4.7.1-1]',
    }),
    first("closes on a Will Topic containing '+' [MQTT-4.7.1-1]", connect({ will: { topic: 'a/+/b' } }), {
      ...protocol,
      rule: '[MQTT-4.7.1-1]',
    }),
    first('closes on an empty Will Topic [MQTT-4.7.3-1]', connect({ will: { topic: '' } }), {
      ...protocol,
      rule: '[MQTT-4.7.3-1]',
    }),
    first('closes on a user name that is not well-formed UTF-8 [MQTT-3.1.3-11]', connect({ user: [0x75, 0x80] }), {
      ...malformed,
      rule: '[MQTT-3.1.3-11]',
    }),
    first('closes on a user name containing U+0000 [MQTT-1.5.3-2]', connect({ user: [0x75, 0x00] }), {
      ...malformed,
      rule: '[MQTT-1.5.3-2]',
    }),
    first(
      'answers CONNACK 0x02 to an empty client id without clean session [MQTT-3.1.3-8]',
      connect({ clientId: '', clean: false }),
      { reason: 'identifier-rejected', rule: '[MQTT-3.1.3-8]', connack: 2 },
    ),
    first(
      'answers CONNACK 0x02 to an MQTT 3.1 CONNECT with an empty client id (MQTT 3.1 §3.1)',
      connect({ name: 'MQIsdp', level: 3, clientId: '' }),
      { reason: 'identifier-rejected', connack: 2 },
    ),
    first(
      'closes without CONNACK 0x02 when a CONNECT with an empty client id is also malformed [MQTT-3.1.4-1]',
      connect({ clientId: '', clean: false, trailing: [0] }),
      malformed,
    ),
    first(
      'closes on a CONNECT with bytes after its last field (MQTT 3.1.1 §3.1)',
      connect({ trailing: [0, 0] }),
      malformed,
    ),
    first('closes on a CONNECT with an empty body', packet(0x10), malformed),
    first('closes on a CONNECT cut off inside its variable header', packet(0x10, field('MQTT'), [4, 2]), malformed),
    first('closes on a CONNECT without a client id [MQTT-3.1.3-3]', packet(0x10, field('MQTT'), [4, 2, 0, 60]), {
      ...malformed,
      rule: '[MQTT-3.1.3-3]',
    }),
    first(
      'closes on a client id longer than the remaining length [MQTT-3.1.3-3]',
      packet(0x10, field('MQTT'), [4, 2, 0, 60], [0, 9, 0x61]),
      { ...malformed, rule: '[MQTT-3.1.3-3]' },
    ),
    first(
      'closes when the Will flag is set but the Will Message is missing [MQTT-3.1.2-9]',
      packet(0x10, field('MQTT'), [4, 0x06, 0, 60], field('id'), field('w/t')),
      { ...malformed, rule: '[MQTT-3.1.2-9]' },
    ),
    first(
      'closes when the user name flag is set but no user name follows [MQTT-3.1.2-19]',
      packet(0x10, field('MQTT'), [4, 0x82, 0, 60], field('id')),
      { ...malformed, rule: '[MQTT-3.1.2-19]' },
    ),
    first(
      'closes when the password flag is set but no password follows [MQTT-3.1.2-21]',
      packet(0x10, field('MQTT'), [4, 0xc2, 0, 60], field('id'), field('u')),
      { ...malformed, rule: '[MQTT-3.1.2-21]' },
    ),
  ]
  for (const c of cases) test(c.name, () => assertCase(c))

  test('reports the client id of a CONNECT rejected after the id was read', () => {
    const r = run(connect({ clientId: 'dev-7', user: [0xff] }), Infinity)
    assert.equal(r.violation?.clientId, 'dev-7')
    assert.equal(r.violation?.packetType, 1)
  })
})

// --- fixed header -----------------------------------------------------------

describe('PacketGuard: fixed header', () => {
  const flagCases: [string, number, string][] = [
    ['PUBACK', 0x41, '[MQTT-2.2.2-2]'],
    ['PUBREC', 0x52, '[MQTT-2.2.2-2]'],
    ['PUBCOMP', 0x78, '[MQTT-2.2.2-2]'],
    ['PINGREQ', 0xc1, '[MQTT-2.2.2-2]'],
    ['DISCONNECT', 0xe4, '[MQTT-2.2.2-2]'],
    ['PUBREL', 0x60, '[MQTT-3.6.1-1]'],
    ['PUBREL', 0x6a, '[MQTT-3.6.1-1]'],
    ['SUBSCRIBE', 0x80, '[MQTT-3.8.1-1]'],
    ['SUBSCRIBE', 0x83, '[MQTT-3.8.1-1]'],
    ['UNSUBSCRIBE', 0xa0, '[MQTT-3.10.1-1]'],
    ['UNSUBSCRIBE', 0xaa, '[MQTT-3.10.1-1]'],
  ]
  for (const [name, byte1, rule] of flagCases) {
    const body = byte1 >> 4 === 12 || byte1 >> 4 === 14 ? [] : [0, 1]
    test(`closes on ${name} with reserved fixed-header flags ${(byte1 & 0xf).toString(2).padStart(4, '0')} ${rule}`, () =>
      assertCase(afterConnect('', packet(byte1, body), { ...malformed, rule })))
  }

  for (const [name, byte1] of [
    ['CONNACK', 0x20],
    ['SUBACK', 0x90],
    ['UNSUBACK', 0xb0],
    ['PINGRESP', 0xd0],
  ] as const) {
    test(`closes on ${name}, a packet only a server sends (CVE-2021-28166 class)`, () =>
      assertCase(afterConnect('', packet(byte1, [0, 1]), protocol)))
  }

  test('closes on reserved packet types 0 and 15 (MQTT 3.1.1 §2.2.1)', () => {
    assertCase(afterConnect('', packet(0x00), protocol))
    assertCase(afterConnect('', packet(0xf0, [0]), protocol))
  })

  test('closes on a remaining length longer than four bytes (MQTT 3.1.1 §2.2.3)', () => {
    assertCase(afterConnect('', bytes([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), malformed))
  })

  test('passes a remaining length in non-minimal form, as mqtt-packet does', () => {
    assertPassesWhole(bytes(CONNECT, [0xc0, 0x80, 0x00]))
  })

  const lengthCases: [string, Buffer][] = [
    ['PUBACK with remaining length 3', packet(0x40, [0, 1, 0])],
    ['PUBREC with remaining length 1', packet(0x50, [0])],
    ['PUBREL with remaining length 0', packet(0x62)],
    ['PUBCOMP with remaining length 4', packet(0x70, [0, 1, 0, 0])],
    ['PINGREQ with remaining length 1', packet(0xc0, [0])],
    ['DISCONNECT with remaining length 1', packet(0xe0, [0])],
  ]
  for (const [name, bad] of lengthCases) {
    test(`closes on ${name} (fixed-size packet, MQTT 3.1.1 §3.4-3.14)`, () =>
      assertCase(afterConnect('', bad, malformed)))
  }

  test('passes PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ and DISCONNECT of the right size', () => {
    assertPassesWhole(
      bytes(
        CONNECT,
        packet(0x40, [0, 1]),
        packet(0x50, [0, 2]),
        packet(0x62, [0, 2]),
        packet(0x70, [0, 2]),
        [0xc0, 0],
        [0xe0, 0],
      ),
    )
  })
})

// --- PUBLISH ----------------------------------------------------------------

describe('PacketGuard: PUBLISH', () => {
  const cases: Case[] = [
    afterConnect('closes on PUBLISH with QoS 3 [MQTT-3.3.1-4]', publish({ qos: 3 }), {
      ...malformed,
      rule: '[MQTT-3.3.1-4]',
    }),
    afterConnect('closes on PUBLISH with DUP 1 and QoS 0 [MQTT-3.3.1-2]', publish({ dup: true }), {
      ...malformed,
      rule: '[MQTT-3.3.1-2]',
    }),
    afterConnect(
      'closes on PUBLISH with an empty topic [MQTT-4.7.3-1] (CVE-2021-34432 class)',
      publish({ topic: '' }),
      {
        ...protocol,
        rule: '[MQTT-4.7.3-1]',
      },
    ),
    afterConnect('closes on a PUBLISH topic containing U+0000 [MQTT-4.7.3-2]', publish({ topic: [0x61, 0x00, 0x62] }), {
      ...malformed,
      rule: '[MQTT-4.7.3-2]',
    }),
    afterConnect(
      'closes on a PUBLISH topic that is not well-formed UTF-8 [MQTT-1.5.3-1]',
      publish({ topic: [0x61, 0xc3] }),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    afterConnect(
      'closes on a PUBLISH topic encoding the surrogate U+D800 [MQTT-1.5.3-1]',
      publish({ topic: [0xed, 0xa0, 0x80] }),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    afterConnect("closes on a PUBLISH topic containing '+' [MQTT-3.3.2-2]", publish({ topic: 'a/+/c' }), {
      ...protocol,
      rule: '[MQTT-3.3.2-2]',
    }),
    afterConnect("closes on a PUBLISH topic containing '#' [MQTT-3.3.2-2]", publish({ topic: 'a/#' }), {
      ...protocol,
      rule: '[MQTT-3.3.2-2]',
    }),
    afterConnect('closes on a QoS 1 PUBLISH with packet identifier 0 [MQTT-2.3.1-1]', publish({ qos: 1, id: 0 }), {
      ...protocol,
      rule: '[MQTT-2.3.1-1]',
    }),
    afterConnect('closes on a QoS 2 PUBLISH with packet identifier 0 [MQTT-2.3.1-1]', publish({ qos: 2, id: 0 }), {
      ...protocol,
      rule: '[MQTT-2.3.1-1]',
    }),
    afterConnect(
      'closes on a PUBLISH whose topic runs past its remaining length',
      packet(0x30, [0, 9], asBytes('abc')),
      malformed,
    ),
    afterConnect(
      'closes on a QoS 1 PUBLISH too short for its packet identifier',
      packet(0x32, field('t'), [0]),
      malformed,
    ),
    afterConnect('closes on a PUBLISH too short for its topic length', packet(0x30, [0]), malformed),
  ]
  for (const c of cases) test(c.name, () => assertCase(c))

  test('passes DUP with QoS 1 and 2, retain, empty payload and a topic with U+FFFF (only SHOULD NOT [MQTT-1.5.3-3] ff.)', () => {
    assertPassesWhole(
      bytes(
        CONNECT,
        publish({ qos: 1, dup: true, id: 7 }),
        publish({ qos: 2, dup: true, retain: true, id: 65535 }),
        publish({ payload: 0 }),
        publish({ topic: 'a/\uffff/\ufeff/ü', payload: [0, 0xff] }),
        publish({ topic: '$SYS-like/but/not', qos: 1, id: 2 }),
      ),
    )
  })
})

// --- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------

describe('PacketGuard: SUBSCRIBE and UNSUBSCRIBE', () => {
  const cases: Case[] = [
    afterConnect('closes on SUBSCRIBE with packet identifier 0 [MQTT-2.3.1-1]', subscribe(0, ['a', 0]), {
      ...protocol,
      rule: '[MQTT-2.3.1-1]',
    }),
    afterConnect('closes on SUBSCRIBE without a topic filter [MQTT-3.8.3-3]', subscribe(1), {
      ...protocol,
      rule: '[MQTT-3.8.3-3]',
    }),
    afterConnect('closes on a requested-QoS byte with reserved bits set [MQTT-3-8.3-4]', subscribe(1, ['a', 0x04]), {
      ...malformed,
      rule: '[MQTT-3-8.3-4]',
    }),
    afterConnect('closes on requested QoS 3 [MQTT-3-8.3-4]', subscribe(1, ['a', 1], ['b', 3]), {
      ...malformed,
      rule: '[MQTT-3-8.3-4]',
    }),
    afterConnect('closes on an empty topic filter in SUBSCRIBE [MQTT-4.7.3-1]', subscribe(1, ['', 0]), {
      ...protocol,
      rule: '[MQTT-4.7.3-1]',
    }),
    afterConnect('closes on a SUBSCRIBE topic filter containing U+0000 [MQTT-4.7.3-2]', subscribe(1, [[0x61, 0], 0]), {
      ...malformed,
      rule: '[MQTT-4.7.3-2]',
    }),
    afterConnect(
      'closes on a SUBSCRIBE topic filter that is not well-formed UTF-8 [MQTT-1.5.3-1]',
      subscribe(1, [[0xff], 0]),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    afterConnect(
      'closes on a SUBSCRIBE whose last filter lacks its requested-QoS byte',
      packet(0x82, [0, 1], field('a')),
      malformed,
    ),
    afterConnect(
      'closes on a SUBSCRIBE whose filter length runs past the packet',
      packet(0x82, [0, 1], [0, 5, 0x61]),
      malformed,
    ),
    afterConnect('closes on a SUBSCRIBE too short for its packet identifier', packet(0x82, [0]), malformed),
    afterConnect('closes on UNSUBSCRIBE with packet identifier 0 [MQTT-2.3.1-1]', unsubscribe(0, 'a'), {
      ...protocol,
      rule: '[MQTT-2.3.1-1]',
    }),
    afterConnect('closes on UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]', unsubscribe(1), {
      ...protocol,
      rule: '[MQTT-3.10.3-2]',
    }),
    afterConnect('closes on an empty topic filter in UNSUBSCRIBE [MQTT-4.7.3-1]', unsubscribe(1, 'a', ''), {
      ...protocol,
      rule: '[MQTT-4.7.3-1]',
    }),
    afterConnect('closes on an UNSUBSCRIBE topic filter containing U+0000 [MQTT-4.7.3-2]', unsubscribe(1, [0]), {
      ...malformed,
      rule: '[MQTT-4.7.3-2]',
    }),
    afterConnect(
      'closes on an UNSUBSCRIBE topic filter that is not well-formed UTF-8 [MQTT-1.5.3-1]',
      unsubscribe(1, [0xe2, 0x82]),
      {
        ...malformed,
        rule: '[MQTT-1.5.3-1]',
      },
    ),
    afterConnect("closes on an UNSUBSCRIBE filter with a misplaced '#' [MQTT-4.7.1-2]", unsubscribe(1, 'a/#/b'), {
      ...protocol,
      rule: '[MQTT-4.7.1-2]',
    }),
    afterConnect(
      'closes on an UNSUBSCRIBE whose filter runs past the packet',
      packet(0xa2, [0, 1], [0, 3, 0x61]),
      malformed,
    ),
  ]
  for (const c of cases) test(c.name, () => assertCase(c))

  // aedes 1.2's validateTopic() accepts the first five of these (SUBACK 0) and
  // closes on the rest, so the guard checks placement itself.
  const misplaced: [string, string][] = [
    ['a#', '[MQTT-4.7.1-2]'],
    ['+a', '[MQTT-4.7.1-3]'],
    ['a+', '[MQTT-4.7.1-3]'],
    ['a+/b', '[MQTT-4.7.1-3]'],
    ['a/+b', '[MQTT-4.7.1-3]'],
    ['a/b#', '[MQTT-4.7.1-2]'],
    ['#/a', '[MQTT-4.7.1-2]'],
    ['a/#/b', '[MQTT-4.7.1-2]'],
    ['##', '[MQTT-4.7.1-2]'],
    ['++', '[MQTT-4.7.1-3]'],
  ]
  for (const [filter, rule] of misplaced) {
    test(`closes on the topic filter '${filter}' ${rule}`, () =>
      assertCase(afterConnect('', subscribe(1, [filter, 0]), { ...protocol, rule })))
  }

  test('passes well-placed wildcards [MQTT-4.7.1-2] [MQTT-4.7.1-3] and QoS 0-2 requests', () => {
    const filters = ['#', '+', '/#', '+/#', '+/+', '/+', '+/', 'a/+/b', 'sport/tennis/#', '$SYS/#', 'ü/+/€']
    assertPassesWhole(
      bytes(
        CONNECT,
        subscribe(1, ...filters.map((f, k): [string, number] => [f, k % 3])),
        unsubscribe(2, ...filters),
        mqttPacket.generate({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'x/+', qos: 2 }] }),
        mqttPacket.generate({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['x/+'] }),
      ),
    )
  })
})

// --- limits -------------------------------------------------------------------

describe('PacketGuard: limits', () => {
  const limits = { preConnectMaxBytes: 1024, maxPayloadBytes: 4096 }

  test('refuses a 268 MB remaining length before CONNECT as soon as the fixed header is read', () => {
    const guard = new PacketGuard()
    // Only the 5-byte header exists: the verdict cannot depend on a body.
    const r = guard.feed(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]))
    assert.equal(r.pass, 0)
    assert.equal(r.violation?.reason, 'packet-too-large')
    assert.equal(r.violation?.limit, 'preConnectMaxBytes')
  })

  test('refuses a 268 MB non-CONNECT first packet at its first byte [MQTT-3.1.0-1] (CVE-2023-0809 class)', () => {
    for (const byte1 of [0x30, 0x82, 0xa2, 0x62, 0x40, 0xc0, 0xe0, 0x20, 0x90, 0x00, 0xf0]) {
      const r = new PacketGuard().feed(Buffer.from([byte1]))
      assert.equal(r.violation?.rule, '[MQTT-3.1.0-1]', `type ${byte1 >> 4}`)
    }
  })

  test('refuses a CONNECT above preConnectMaxBytes, Will payload included', () => {
    const big = connect({ will: { topic: 'w', message: Buffer.alloc(2000) } })
    assertCase(first('', big, { reason: 'packet-too-large', limit: 'preConnectMaxBytes' }, { limits }))
  })

  test('passes a CONNECT of exactly preConnectMaxBytes', () => {
    // name 6, level/flags/keep alive 4, client id 7, Will Topic 3, Will Message 2 + n
    const c = connect({ will: { topic: 'w', message: Buffer.alloc(1024 - 22) } })
    assert.equal(c.length - 3, 1024)
    assertPassesWhole(c, { limits })
  })

  test('holds packets pipelined before authenticated() to preConnectMaxBytes', () => {
    assertCase(
      afterConnect(
        '',
        publish({ payload: 2000 }),
        { reason: 'packet-too-large', limit: 'preConnectMaxBytes' },
        { limits },
      ),
    )
  })

  test('refuses an oversized PUBLISH after authentication once its topic length is read', () => {
    const guard = new PacketGuard(limits)
    guard.feed(CONNECT)
    guard.authenticated()
    const big = publish({ qos: 1, payload: 4097 })
    const header = fixedHeaderLength(big)
    assert.equal(guard.feed(big.subarray(0, header + 1)).violation, undefined)
    const r = guard.feed(big.subarray(header + 1, header + 2))
    assert.equal(r.violation?.reason, 'packet-too-large')
    assert.equal(r.violation?.limit, 'maxPayloadBytes')
    assert.equal(r.violation?.clientId, 'dev-1')
    assert.equal(r.violation?.packetType, 3)
    assert.equal(r.pass, 0)
  })

  test('refuses at the fixed header a PUBLISH that cannot fit under the longest topic', () => {
    const guard = new PacketGuard(limits)
    guard.feed(CONNECT)
    guard.authenticated()
    const r = guard.feed(Buffer.from([0x30, ...remainingLength(4096 + 65539 + 1)]))
    assert.equal(r.violation?.limit, 'maxPayloadBytes')
  })

  test('passes a PUBLISH payload of exactly maxPayloadBytes after authentication, in any chunking', () => {
    const stream = bytes(
      CONNECT,
      publish({ qos: 1, topic: 't'.repeat(3000), payload: 4096 }),
      publish({ qos: 2, payload: 4096 }),
    )
    assertPassesWhole(stream, { limits, authenticateAt: CONNECT.length })
  })

  test('caps SUBSCRIBE and UNSUBSCRIBE at preConnectMaxBytes after authentication', () => {
    const sub = subscribe(1, ...Array.from({ length: 200 }, (_, k): [string, number] => [`t/${k}`, 0]))
    assertCase(
      afterConnect('', sub, { reason: 'packet-too-large', limit: 'preConnectMaxBytes' }, { limits, auth: true }),
    )
    const unsub = unsubscribe(1, ...Array.from({ length: 250 }, (_, k) => `t/${k}`))
    assertCase(
      afterConnect('', unsub, { reason: 'packet-too-large', limit: 'preConnectMaxBytes' }, { limits, auth: true }),
    )
  })

  test('refuses negative or fractional limits', () => {
    assert.throws(() => new PacketGuard({ preConnectMaxBytes: -1 }), RangeError)
    assert.throws(() => new PacketGuard({ maxPayloadBytes: 1.5 }), RangeError)
  })
})

// --- streaming ------------------------------------------------------------------

/** mulberry32: a seeded generator, so a failing chunking can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe('PacketGuard: streaming', () => {
  const session = bytes(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clientId: 'stream-1',
      clean: true,
      keepalive: 30,
      will: { topic: 'w', payload: Buffer.from('gone'), qos: 1, retain: false },
    }),
    mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'cmd/#', qos: 1 }] }),
    mqttPacket.generate({
      cmd: 'publish',
      topic: 'site/a',
      payload: Buffer.alloc(300, 1),
      qos: 0,
      retain: false,
      dup: false,
    }),
    mqttPacket.generate({
      cmd: 'publish',
      topic: 'site/b',
      payload: Buffer.from('p'),
      qos: 1,
      messageId: 2,
      retain: true,
      dup: false,
    }),
    mqttPacket.generate({
      cmd: 'publish',
      topic: 'site/c',
      payload: Buffer.alloc(20_000, 2),
      qos: 2,
      messageId: 3,
      retain: false,
      dup: false,
    }),
    mqttPacket.generate({ cmd: 'pubrel', messageId: 3 }),
    mqttPacket.generate({ cmd: 'puback', messageId: 9 }),
    mqttPacket.generate({ cmd: 'pingreq' }),
    mqttPacket.generate({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['cmd/#'] }),
    mqttPacket.generate({ cmd: 'disconnect' }),
  )

  test('passes a valid stream fed one byte at a time byte-for-byte, and mqtt-packet parses the same packets', () => {
    const r = run(session, 1)
    assert.equal(r.violation, undefined)
    assert.deepEqual(r.passed, session)
    const parser = mqttPacket.parser()
    const cmds: string[] = []
    parser.on('packet', (p) => cmds.push(p.cmd))
    parser.parse(r.passed)
    assert.deepEqual(cmds, [
      'connect',
      'subscribe',
      'publish',
      'publish',
      'publish',
      'pubrel',
      'puback',
      'pingreq',
      'unsubscribe',
      'disconnect',
    ])
  })

  test('passes a valid stream under 200 random chunkings', () => {
    const random = prng(42)
    for (let round = 0; round < 200; round++) {
      const guard = new PacketGuard()
      let off = 0
      while (off < session.length) {
        const size = 1 + Math.floor(random() * (round % 2 === 0 ? 16 : 4096))
        const chunk = session.subarray(off, off + size)
        const r = guard.feed(chunk)
        assert.equal(r.violation, undefined, `round ${round} at ${off}`)
        assert.equal(r.pass, chunk.length)
        off += chunk.length
      }
    }
  })

  test('passes many valid packets in one chunk whole', () => {
    const many = bytes(
      CONNECT,
      ...Array.from({ length: 1000 }, (_, k) => publish({ qos: 1, id: k + 1, topic: `t/${k}` })),
    )
    const guard = new PacketGuard()
    const r = guard.feed(many)
    assert.deepEqual(r, { pass: many.length })
  })

  test('passes the valid packets before an invalid one in the same chunk', () => {
    const good = bytes(CONNECT, publish({ qos: 1, id: 1 }), [0xc0, 0])
    const r = new PacketGuard().feed(bytes(good, publish({ qos: 1, id: 0 }), publish()))
    assert.equal(r.pass, good.length)
    assert.equal(r.violation?.rule, '[MQTT-2.3.1-1]')
  })

  test('passes nothing of the chunk that completes an invalid packet begun in an earlier chunk', () => {
    const guard = new PacketGuard()
    guard.feed(CONNECT)
    const bad = subscribe(1, ['a', 0], ['b', 3])
    assert.equal(guard.feed(bad.subarray(0, 4)).pass, 4)
    const r = guard.feed(bytes(bad.subarray(4), [0xc0, 0]))
    assert.equal(r.pass, 0)
    assert.equal(r.violation?.rule, '[MQTT-3-8.3-4]')
  })

  test('stays closed after a violation: later feeds pass 0 and repeat the violation', () => {
    const guard = new PacketGuard()
    const first = guard.feed(publish())
    const later = guard.feed(CONNECT)
    assert.equal(later.pass, 0)
    assert.equal(later.violation, first.violation)
    assert.equal(guard.violation, first.violation)
  })

  test('passes an empty chunk as 0 bytes without a violation', () => {
    assert.deepEqual(new PacketGuard().feed(Buffer.alloc(0)), { pass: 0 })
  })
})

// --- guardConnection -------------------------------------------------------------

/** Reads like aedes does: one read per 'readable' (aedes passes null, which Readable treats as no size). */
function aedesLikeReader(conn: Duplex): Buffer[] {
  const got: Buffer[] = []
  conn.on('readable', () => {
    const b: unknown = conn.read()
    if (Buffer.isBuffer(b)) got.push(b)
  })
  return got
}

/** Everything the peer receives until its socket closes. */
async function receiveUntilClose(socket: net.Socket): Promise<Buffer> {
  const got: Buffer[] = []
  socket.on('data', (d: Buffer) => got.push(d))
  socket.on('error', () => {})
  // not events.once: it rejects on the ECONNRESET that a destroyed peer may cause
  await new Promise((resolve) => socket.once('close', resolve))
  return Buffer.concat(got)
}

interface GuardedServer {
  port: number
  accepted: Promise<{ conn: net.Socket; got: Buffer[] }>
  violations: GuardViolation[]
  close(): Promise<void>
}

/** A plain TCP server whose connections are guarded; closed, with its connections, after the test, pass or fail. */
async function guardedServer(t: TestContext, limits?: Partial<PacketGuardLimits>): Promise<GuardedServer> {
  const violations: GuardViolation[] = []
  const conns = new Set<net.Socket>()
  let resolve!: (v: { conn: net.Socket; got: Buffer[] }) => void
  const accepted = new Promise<{ conn: net.Socket; got: Buffer[] }>((r) => (resolve = r))
  const server = net.createServer((conn) => {
    conns.add(conn)
    conn.on('error', () => {})
    guardConnection(conn, new PacketGuard(limits), (v) => violations.push(v), { closeTimeoutMs: 2000 })
    resolve({ conn, got: aedesLikeReader(conn) })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const close = (): Promise<void> =>
    new Promise((r) => {
      for (const c of conns) c.destroy()
      server.close(() => r())
    })
  t.after(close)
  const { port } = server.address() as net.AddressInfo
  return { port, accepted, violations, close }
}

describe('guardConnection', () => {
  test('writes an MQTT 5 CONNACK 0x84 to an MQTT 5 client where MQTT 5 is off, and closes [MQTT-3.1.2-2]', async (t) => {
    const srv = await guardedServer(t)
    const client = net.connect(srv.port, '127.0.0.1')
    t.after(() => client.destroy())
    const received = receiveUntilClose(client)
    client.write(connect({ level: 5 }))
    // reason code 0x84 and an empty property list: the format the MQTT 5 client reads
    assert.deepEqual(await received, Buffer.from([0x20, 0x03, 0x00, 0x84, 0x00]))
    const { conn, got } = await srv.accepted
    if (!conn.destroyed) await once(conn, 'close')
    assert.deepEqual(got, [])
    assert.equal(srv.violations.length, 1)
    assert.equal(srv.violations[0]?.reason, 'unsupported-protocol-version')
    await srv.close()
  })

  test('hands the reader the valid prefix and destroys the connection without a CONNACK', async (t) => {
    const srv = await guardedServer(t)
    const client = net.connect(srv.port, '127.0.0.1')
    t.after(() => client.destroy())
    const received = receiveUntilClose(client)
    const good = bytes(CONNECT, publish({ qos: 1, id: 5 }))
    client.write(bytes(good, publish({ topic: 'a/#' })))
    assert.deepEqual(await received, Buffer.alloc(0))
    const { got } = await srv.accepted
    assert.deepEqual(Buffer.concat(got), good)
    assert.equal(srv.violations[0]?.rule, '[MQTT-3.3.2-2]')
    await srv.close()
  })

  test('closes a client that keeps streaming an oversized first packet', async (t) => {
    const srv = await guardedServer(t)
    const client = net.connect(srv.port, '127.0.0.1')
    t.after(() => client.destroy())
    const received = receiveUntilClose(client)
    client.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]))
    // keep writing until the socket dies under us
    const junk = Buffer.alloc(64 * 1024)
    const pump = setInterval(() => {
      if (!client.destroyed) client.write(junk)
    }, 1)
    try {
      await received
    } finally {
      clearInterval(pump)
    }
    assert.equal(srv.violations[0]?.limit, 'preConnectMaxBytes')
    await srv.close()
  })

  test('writes CONNACK 0x02 over an in-memory duplex pair and ends it [MQTT-3.1.3-8]', async () => {
    const [server, client] = duplexPair()
    const violations: GuardViolation[] = []
    guardConnection(server, new PacketGuard(), (v) => violations.push(v))
    const got = aedesLikeReader(server)
    const answer: Buffer[] = []
    client.on('data', (d: Buffer) => answer.push(d))
    client.write(connect({ clientId: '', clean: false }))
    await once(client, 'end')
    assert.deepEqual(Buffer.concat(answer), Buffer.from([0x20, 0x02, 0x00, 0x02]))
    assert.deepEqual(got, [])
    assert.equal(violations[0]?.connackReturnCode, 2)
    client.destroy()
  })

  test('applies post-authentication limits once the broker calls authenticated() through connectionGuard()', async () => {
    const [server, client] = duplexPair()
    const violations: GuardViolation[] = []
    guardConnection(server, new PacketGuard({ preConnectMaxBytes: 256, maxPayloadBytes: 4096 }), (v) =>
      violations.push(v),
    )
    const got = aedesLikeReader(server)
    client.write(CONNECT)
    await once(server, 'readable')
    await new Promise((r) => setImmediate(r))
    connectionGuard(server)?.authenticated()
    assert.equal(connectionGuard(server)?.clientId, 'dev-1')
    const pub = publish({ qos: 1, payload: 3000 })
    client.write(pub)
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(violations, [])
    assert.deepEqual(Buffer.concat(got), bytes(CONNECT, pub))
    client.destroy()
    server.destroy()
  })

  test('refuses a connection that is already guarded, in object mode or flowing', () => {
    const [a] = duplexPair()
    guardConnection(a, new PacketGuard(), () => {})
    assert.throws(() => guardConnection(a, new PacketGuard(), () => {}), TypeError)
    const [b] = duplexPair({ readableObjectMode: true })
    assert.throws(() => guardConnection(b, new PacketGuard(), () => {}), TypeError)
    const [c] = duplexPair()
    c.on('data', () => {})
    assert.throws(() => guardConnection(c, new PacketGuard(), () => {}), TypeError)
  })
})
