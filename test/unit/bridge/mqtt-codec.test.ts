// mqtt-codec against mqtt-packet, the library it replaces on the bridge's hot
// path: PUBLISH bytes must be identical to mqtt-packet's, acknowledgements
// must parse back, and PacketFramer must cut a byte stream into whole packets
// however the stream is split.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet'
import {
  encodeAck,
  encodePublish,
  INBOUND_ACK,
  MalformedLengthError,
  PacketFramer,
  type AckType,
} from '../../../src/bridge/mqtt-codec.js'

type Version = 4 | 5

function publish(fields: Partial<IPublishPacket> & { payload: Buffer | string }): IPublishPacket {
  return { cmd: 'publish', topic: 't', qos: 0, retain: false, dup: false, ...fields }
}

function generate(p: Packet, protocolVersion: Version): Buffer {
  return mqttPacket.generate(p, { protocolVersion })
}

/** Every packet mqtt-packet's parser finds in `bytes`; throws on a parser error or leftover bytes. */
function parseAll(bytes: Buffer, protocolVersion: Version): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion })
  const out: Packet[] = []
  const errors: Error[] = []
  parser.on('packet', (p: Packet) => out.push(p))
  parser.on('error', (e: Error) => errors.push(e))
  const left = parser.parse(bytes)
  const first = errors[0]
  if (first !== undefined) throw first
  assert.equal(left, 0, 'parser left bytes unparsed')
  return out
}

/** Parsed properties with plain objects (the parser gives userProperties a null prototype). */
function plainProperties(p: IPublishPacket['properties']): unknown {
  if (p === undefined) return undefined
  return p.userProperties === undefined ? { ...p } : { ...p, userProperties: { ...p.userProperties } }
}

function parseOne(bytes: Buffer, protocolVersion: Version): Packet {
  const all = parseAll(bytes, protocolVersion)
  assert.equal(all.length, 1)
  return all[0] as Packet
}

/** Number of bytes of the Remaining Length varint of a packet. */
function remainingLengthSize(bytes: Buffer): number {
  let i = 1
  while (((bytes[i] as number) & 0x80) !== 0) i++
  return i
}

const bytes = (n: number, seed = 7): Buffer => {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff
  return b
}

// ---------------------------------------------------------------- encodePublish

interface Case {
  readonly name: string
  readonly versions: readonly Version[]
  readonly packet: IPublishPacket
}

const TWO_MB = 2 * 1024 * 1024 + 17

const cases: Case[] = [
  { name: 'qos 0, short payload', versions: [4, 5], packet: publish({ payload: Buffer.from('hello') }) },
  { name: 'qos 1', versions: [4, 5], packet: publish({ qos: 1, messageId: 1, payload: Buffer.from('x') }) },
  {
    name: 'qos 2, messageId 65535',
    versions: [4, 5],
    packet: publish({ qos: 2, messageId: 65535, payload: Buffer.from('x') }),
  },
  {
    name: 'qos 1, messageId 0x1234',
    versions: [4, 5],
    packet: publish({ qos: 1, messageId: 0x1234, payload: Buffer.from('x') }),
  },
  { name: 'retain', versions: [4, 5], packet: publish({ retain: true, payload: Buffer.from('r') }) },
  {
    name: 'dup, qos 1',
    versions: [4, 5],
    packet: publish({ dup: true, qos: 1, messageId: 9, payload: Buffer.from('d') }),
  },
  {
    name: 'dup + retain, qos 2',
    versions: [4, 5],
    packet: publish({ dup: true, retain: true, qos: 2, messageId: 300, payload: Buffer.from('dr') }),
  },
  { name: 'empty payload', versions: [4, 5], packet: publish({ topic: 'a/b', payload: Buffer.alloc(0) }) },
  {
    name: 'empty payload, qos 1',
    versions: [4, 5],
    packet: publish({ topic: 'a/b', qos: 1, messageId: 2, payload: Buffer.alloc(0) }),
  },
  { name: 'string payload (UTF-8)', versions: [4, 5], packet: publish({ payload: 'grüße ✓ 😀' }) },
  {
    name: 'multi-byte UTF-8 topic',
    versions: [4, 5],
    packet: publish({ topic: 'usine/température/設備/😀', qos: 1, messageId: 5, payload: Buffer.from('v') }),
  },
  ...[0, 127, 128, 16383, 16384, TWO_MB].map((n): Case => ({
    name: `payload ${n} bytes`,
    versions: [4, 5],
    packet: publish({ topic: 'plant/line1/sensor', qos: 1, messageId: 77, payload: bytes(n) }),
  })),
  // topic 't', qos 0, v4: Remaining Length = 3 + payload, on each side of every varint size boundary.
  ...[124, 125, 16380, 16381, 2_097_148, 2_097_149].map((n): Case => ({
    name: `v4 Remaining Length ${n + 3}`,
    versions: [4],
    packet: publish({ payload: bytes(n) }),
  })),
  // Same in v5: one more byte for the empty property length.
  ...[123, 124, 16379, 16380, 2_097_147, 2_097_148].map((n): Case => ({
    name: `v5 Remaining Length ${n + 4}`,
    versions: [5],
    packet: publish({ payload: bytes(n) }),
  })),
  {
    name: 'v5 no properties (undefined)',
    versions: [5],
    packet: publish({ qos: 1, messageId: 3, payload: Buffer.from('p') }),
  },
  {
    name: 'v5 empty properties object',
    versions: [5],
    packet: publish({ qos: 1, messageId: 3, payload: Buffer.from('p'), properties: {} }),
  },
  {
    name: 'v5 userProperties, string values',
    versions: [5],
    packet: publish({
      payload: Buffer.from('p'),
      properties: { userProperties: { a: '1', site: 'Zürich', empty: '' } },
    }),
  },
  {
    name: 'v5 userProperties, array values',
    versions: [5],
    packet: publish({
      qos: 1,
      messageId: 4,
      payload: Buffer.from('p'),
      properties: { userProperties: { tag: ['x', 'yy', 'ü'], one: 'v', many: ['1', '2'] } },
    }),
  },
  {
    name: 'v5 messageExpiryInterval',
    versions: [5],
    packet: publish({ payload: Buffer.from('p'), properties: { messageExpiryInterval: 0xfedcba98 } }),
  },
  {
    name: 'v5 messageExpiryInterval 0',
    versions: [5],
    packet: publish({ payload: Buffer.from('p'), properties: { messageExpiryInterval: 0 } }),
  },
  {
    name: 'v5 contentType',
    versions: [5],
    packet: publish({ payload: Buffer.from('{}'), properties: { contentType: 'application/json; charset=utf-8 ✓' } }),
  },
  {
    name: 'v5 payloadFormatIndicator true',
    versions: [5],
    packet: publish({ payload: Buffer.from('text'), properties: { payloadFormatIndicator: true } }),
  },
  {
    name: 'v5 payloadFormatIndicator false',
    versions: [5],
    packet: publish({ payload: Buffer.from('bin'), properties: { payloadFormatIndicator: false } }),
  },
  {
    name: 'v5 responseTopic',
    versions: [5],
    packet: publish({ qos: 1, messageId: 8, payload: Buffer.from('q'), properties: { responseTopic: 'reply/to/é' } }),
  },
  {
    name: 'v5 correlationData',
    versions: [5],
    packet: publish({
      qos: 2,
      messageId: 8,
      payload: Buffer.from('q'),
      properties: { correlationData: Buffer.from([0, 1, 2, 0xff, 0x80]) },
    }),
  },
  {
    name: 'v5 correlationData empty',
    versions: [5],
    packet: publish({ payload: Buffer.from('q'), properties: { correlationData: Buffer.alloc(0) } }),
  },
  {
    // In the encoder's own order, so mqtt-packet (which follows key order) writes the same bytes.
    name: 'v5 all supported properties',
    versions: [5],
    packet: publish({
      topic: 'ot/ℓ2/ß',
      qos: 1,
      messageId: 4242,
      retain: true,
      payload: bytes(20_000),
      properties: {
        payloadFormatIndicator: true,
        messageExpiryInterval: 3600,
        contentType: 'text/plain',
        responseTopic: 'resp/1',
        correlationData: Buffer.from('corr-🙂'),
        userProperties: { k1: 'v1', k2: ['a', 'b', 'c'] },
      },
    }),
  },
  {
    name: 'v5 properties on a 2 MB payload',
    versions: [5],
    packet: publish({
      qos: 2,
      messageId: 1,
      payload: bytes(TWO_MB),
      properties: { messageExpiryInterval: 60, userProperties: { src: 'plc-7' } },
    }),
  },
]

for (const c of cases) {
  for (const v of c.versions) {
    test(`encodePublish v${v}: ${c.name} is byte-identical to mqtt-packet`, () => {
      const ours = encodePublish(c.packet, v)
      assert.ok(ours, 'encodePublish returned undefined')
      const theirs = generate(c.packet, v)
      assert.equal(ours.length, theirs.length, 'length differs')
      assert.ok(ours.equals(theirs), 'bytes differ')
    })
  }
}

test('encodePublish: the table covers Remaining Lengths of 1, 2, 3 and 4 bytes, in v4 and in v5', () => {
  for (const v of [4, 5] as const) {
    const sizes = new Set<number>()
    for (const c of cases)
      if (c.versions.includes(v)) sizes.add(remainingLengthSize(encodePublish(c.packet, v) as Buffer))
    assert.deepEqual([...sizes].sort(), [1, 2, 3, 4], `v${v}`)
  }
})

test('encodePublish: Remaining Length boundaries give the varint sizes of the MQTT spec', () => {
  const expect: [number, number][] = [
    [124, 1],
    [125, 2],
    [16380, 2],
    [16381, 3],
    [2_097_148, 3],
    [2_097_149, 4],
  ]
  for (const [n, size] of expect) {
    const b = encodePublish(publish({ payload: bytes(n) }), 4) as Buffer
    assert.equal(remainingLengthSize(b), size, `payload ${n}`)
    assert.equal(b.length, 1 + size + 3 + n)
  }
})

test("encodePublish v5: properties in another key order than the encoder's still parse back to the same packet", () => {
  // mqtt-packet writes properties in the object's key order, the encoder in a fixed order,
  // so the bytes may differ; what both carry must not.
  const properties = {
    userProperties: { z: 'last', a: ['1', '2'] },
    correlationData: Buffer.from([9, 8, 7]),
    responseTopic: 'r/t',
    contentType: 'application/octet-stream',
    messageExpiryInterval: 12,
    payloadFormatIndicator: false,
  }
  const p = publish({ topic: 'x/ÿ', qos: 2, messageId: 1000, dup: true, retain: true, payload: bytes(300), properties })
  const ours = encodePublish(p, 5)
  assert.ok(ours)
  assert.equal(ours.length, generate(p, 5).length)
  const parsed = parseOne(ours, 5) as IPublishPacket
  const reference = parseOne(generate(p, 5), 5) as IPublishPacket
  for (const got of [parsed, reference]) {
    assert.equal(got.cmd, 'publish')
    assert.equal(got.topic, p.topic)
    assert.ok(Buffer.from(got.payload).equals(p.payload as Buffer))
    assert.equal(got.qos, 2)
    assert.equal(got.retain, true)
    assert.equal(got.dup, true)
    assert.equal(got.messageId, 1000)
    assert.deepEqual(plainProperties(got.properties), properties)
  }
})

test('encodePublish: every case parses back with mqtt-packet to the same fields', () => {
  for (const c of cases) {
    for (const v of c.versions) {
      if (c.packet.payload.length > 100_000) continue
      const got = parseOne(encodePublish(c.packet, v) as Buffer, v) as IPublishPacket
      const want = c.packet
      assert.equal(got.topic, want.topic, c.name)
      assert.ok(Buffer.from(got.payload).equals(Buffer.from(want.payload)), c.name)
      assert.equal(got.qos, want.qos, c.name)
      assert.equal(got.retain, want.retain, c.name)
      assert.equal(got.dup, want.dup, c.name)
      if (want.qos > 0) assert.equal(got.messageId, want.messageId, c.name)
      const wantProps =
        v === 5 && want.properties && Object.keys(want.properties).length > 0 ? want.properties : undefined
      assert.deepEqual(plainProperties(got.properties), wantProps, c.name)
    }
  }
})

test('encodePublish v5: a property it does not write → undefined', () => {
  const unsupported: NonNullable<IPublishPacket['properties']>[] = [
    { topicAlias: 3 },
    { subscriptionIdentifier: 5 },
    { messageExpiryInterval: 10, topicAlias: 1 },
    { userProperties: { a: 'b' }, subscriptionIdentifier: [1, 2] },
  ]
  for (const properties of unsupported) {
    assert.equal(
      encodePublish(publish({ qos: 1, messageId: 1, payload: Buffer.from('p'), properties }), 5),
      undefined,
      JSON.stringify(properties),
    )
  }
})

test('encodePublish v4: properties are ignored, even ones v5 would refuse', () => {
  const base = { topic: 'a/b', qos: 1 as const, messageId: 12, retain: true, payload: Buffer.from('payload') }
  const bare = generate(publish(base), 4)
  for (const properties of [
    { topicAlias: 3 },
    { messageExpiryInterval: 10, contentType: 'text/plain', userProperties: { a: ['1', '2'] } },
    { payloadFormatIndicator: true, correlationData: Buffer.from('c') },
  ]) {
    const ours = encodePublish(publish({ ...base, properties }), 4)
    assert.ok(ours, JSON.stringify(properties))
    assert.ok(ours.equals(bare), JSON.stringify(properties))
  }
})

// ---------------------------------------------------------------- encodeAck

const ACK_TYPES: readonly AckType[] = ['puback', 'pubrec', 'pubrel', 'pubcomp']

for (const type of ACK_TYPES) {
  for (const v of [4, 5] as const) {
    test(`encodeAck ${type} v${v}, reason 0: 4 bytes, parsed back by mqtt-packet`, () => {
      for (const messageId of [1, 0x1234, 65535]) {
        const b = encodeAck(type, messageId, 0, v)
        assert.equal(b.length, 4)
        assert.ok(b.equals(generate({ cmd: type, messageId }, 4)), 'same bytes as mqtt-packet v4')
        const p = parseOne(b, v) as Packet & { messageId: number; reasonCode?: number }
        assert.equal(p.cmd, type)
        assert.equal(p.messageId, messageId)
        if (v === 5) assert.equal(p.reasonCode, 0)
        assert.equal(INBOUND_ACK.get(b[0] as number), type)
      }
    })
  }

  // The parser accepts only the codes the spec allows for each packet type.
  const valid = type === 'puback' || type === 'pubrec' ? 0x80 : 0x92
  test(`encodeAck ${type} v5, reason 0x${valid.toString(16)}: 5 bytes, parsed back with the reason code`, () => {
    const b = encodeAck(type, 513, valid, 5)
    assert.equal(b.length, 5)
    assert.equal(b[1], 3)
    assert.equal(b[4], valid)
    // mqtt-packet adds an empty Property Length (6 bytes); MQTT 5 §3.4.2.2.1 lets it be left out
    // at Remaining Length 3, which is what the encoder does. Same header, id and reason code:
    assert.ok(b.equals(generate({ cmd: type, messageId: 513, reasonCode: valid }, 5).subarray(0, 5).fill(3, 1, 2)))
    const p = parseOne(b, 5) as Packet & { messageId: number; reasonCode?: number }
    assert.equal(p.cmd, type)
    assert.equal(p.messageId, 513)
    assert.equal(p.reasonCode, valid)
  })

  test(`encodeAck ${type} v5: both 0x92 and 0x80 are written as the 5th byte`, () => {
    for (const code of [0x92, 0x80]) {
      const b = encodeAck(type, 7, code, 5)
      assert.deepEqual([...b], [b[0], 3, 0, 7, code])
    }
  })

  test(`encodeAck ${type} v4 ignores the reason code`, () => {
    for (const code of [0x92, 0x80]) {
      const b = encodeAck(type, 7, code, 4)
      assert.equal(b.length, 4)
      assert.ok(b.equals(generate({ cmd: type, messageId: 7 }, 4)))
      const p = parseOne(b, 4) as Packet & { messageId: number }
      assert.equal(p.cmd, type)
      assert.equal(p.messageId, 7)
    }
  })
}

test('encodeAck: default protocol is v4, PUBREL carries flags 0b0010', () => {
  assert.deepEqual([...encodeAck('puback', 258)], [0x40, 2, 1, 2])
  assert.deepEqual([...encodeAck('pubrel', 258, 0x92)], [0x62, 2, 1, 2])
})

// ---------------------------------------------------------------- PacketFramer

/** Feeds `chunks` to one framer, returns a copy of each packet it reports. */
function frame(chunks: readonly Buffer[], framer = new PacketFramer()): Buffer[] {
  const out: Buffer[] = []
  for (const chunk of chunks) {
    framer.push(chunk, (buf, start, end) => {
      assert.ok(
        Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= buf.length,
        `bounds ${start}..${end} of ${buf.length}`,
      )
      out.push(Buffer.from(buf.subarray(start, end)))
    })
  }
  return out
}

function assertPackets(got: Buffer[], want: Buffer[], message?: string): void {
  assert.equal(got.length, want.length, `${message ?? ''} packet count`)
  for (let i = 0; i < want.length; i++)
    assert.ok((got[i] as Buffer).equals(want[i] as Buffer), `${message ?? ''} packet ${i} bytes`)
}

const pingreq = generate({ cmd: 'pingreq' }, 4)
const small = encodePublish(publish({ topic: 'a', qos: 1, messageId: 1, payload: Buffer.from('hi') }), 4) as Buffer
const twoByteLen = encodePublish(publish({ topic: 'b/c', qos: 1, messageId: 2, payload: bytes(200) }), 5) as Buffer
const threeByteLen = encodePublish(publish({ topic: 'd', qos: 0, payload: bytes(20_000) }), 4) as Buffer
const ack = encodeAck('pubrec', 99, 0x80, 5)

test('PacketFramer: fixtures have Remaining Lengths of 1, 2 and 3 bytes', () => {
  assert.equal(remainingLengthSize(small), 1)
  assert.equal(remainingLengthSize(twoByteLen), 2)
  assert.equal(remainingLengthSize(threeByteLen), 3)
})

test('PacketFramer: several packets in one chunk, in order, with bounds into that chunk', () => {
  const want = [small, pingreq, twoByteLen, ack, threeByteLen, encodeAck('puback', 1)]
  const chunk = Buffer.concat(want)
  const seen: [Buffer, number, number][] = []
  new PacketFramer().push(chunk, (buf, start, end) => seen.push([buf, start, end]))
  assert.equal(seen.length, want.length)
  let offset = 0
  for (let i = 0; i < want.length; i++) {
    const [buf, start, end] = seen[i] as [Buffer, number, number]
    const w = want[i] as Buffer
    assert.equal(buf, chunk, 'a packet whole in the chunk is reported in the chunk itself')
    assert.equal(start, offset)
    assert.equal(end, offset + w.length)
    assert.ok(buf.subarray(start, end).equals(w), `packet ${i}`)
    offset = end
  }
})

test('PacketFramer: one packet split in two at every byte boundary', () => {
  for (const packet of [pingreq, small, twoByteLen, ack, threeByteLen]) {
    for (let cut = 0; cut <= packet.length; cut++) {
      const got = frame([packet.subarray(0, cut), packet.subarray(cut)])
      assertPackets(got, [packet], `${packet.length}-byte packet cut at ${cut}`)
    }
  }
})

test('PacketFramer: a stream of packets split in two at every byte boundary', () => {
  const want = [pingreq, twoByteLen, small, ack, pingreq]
  const stream = Buffer.concat(want)
  for (let cut = 0; cut <= stream.length; cut++) {
    assertPackets(frame([stream.subarray(0, cut), stream.subarray(cut)]), want, `cut at ${cut}`)
  }
})

test('PacketFramer: every cut inside the Remaining Length varint, fed one byte at a time up to the cut', () => {
  for (const packet of [twoByteLen, threeByteLen]) {
    const lenEnd = 1 + remainingLengthSize(packet)
    for (let cut = 1; cut <= lenEnd; cut++) {
      const chunks = [...Array.from({ length: cut }, (_, i) => packet.subarray(i, i + 1)), packet.subarray(cut)]
      assertPackets(frame(chunks), [packet], `cut at ${cut}`)
    }
  }
})

test('PacketFramer: a stream fed one byte at a time', () => {
  const want = [small, twoByteLen, pingreq, ack, small]
  const stream = Buffer.concat(want)
  assertPackets(frame(Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1))), want)
})

test('PacketFramer: a 300 KB packet in 1 KB chunks → exactly one packet, reported once, with the right bytes', () => {
  const big = encodePublish(
    publish({ topic: 'big/one', qos: 1, messageId: 31, payload: bytes(300 * 1024, 3) }),
    5,
  ) as Buffer
  const stream = Buffer.concat([big, small])
  const framer = new PacketFramer()
  const got: Buffer[] = []
  let pushes = 0
  for (let o = 0; o < stream.length; o += 1024) {
    pushes++
    const before = got.length
    framer.push(stream.subarray(o, o + 1024), (buf, start, end) => got.push(Buffer.from(buf.subarray(start, end))))
    // Nothing before the chunk that completes the big packet.
    if (o + 1024 < big.length) assert.equal(got.length, before, `packet reported early at offset ${o}`)
  }
  assert.ok(pushes > 300)
  assertPackets(got, [big, small])
})

test('PacketFramer: bytes after a complete packet are kept for the next push', () => {
  const framer = new PacketFramer()
  const first = Buffer.concat([small, twoByteLen.subarray(0, 3)])
  assertPackets(frame([first], framer), [small])
  assertPackets(frame([twoByteLen.subarray(3, 50)], framer), [])
  assertPackets(frame([Buffer.concat([twoByteLen.subarray(50), pingreq.subarray(0, 1)])], framer), [twoByteLen])
  assertPackets(frame([Buffer.concat([pingreq.subarray(1), ack])], framer), [pingreq, ack])
  // Nothing held back any more.
  assertPackets(frame([small], framer), [small])
})

test('PacketFramer: a single leftover byte is kept too', () => {
  const framer = new PacketFramer()
  assertPackets(frame([Buffer.concat([ack, small.subarray(0, 1)])], framer), [ack])
  assertPackets(frame([small.subarray(1)], framer), [small])
})

test('PacketFramer: a kept partial packet does not depend on the caller reusing its read buffer', () => {
  const framer = new PacketFramer()
  const read = Buffer.concat([small, twoByteLen.subarray(0, 100)])
  assertPackets(frame([read], framer), [small])
  read.fill(0xee) // the socket reuses its buffer for the next read
  assertPackets(frame([twoByteLen.subarray(100)], framer), [twoByteLen])
})

test('PacketFramer: a Remaining Length of 5 bytes throws MalformedLengthError', () => {
  const bad = Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0])
  assert.throws(
    () => new PacketFramer().push(bad, () => assert.fail('no packet expected')),
    (e: unknown) => e instanceof MalformedLengthError && e.name === 'MalformedLengthError',
  )
  // Same after a valid packet in the same chunk, and with the 5 bytes across pushes.
  const got: Buffer[] = []
  assert.throws(
    () => new PacketFramer().push(Buffer.concat([pingreq, bad]), (b, s, e) => got.push(b.subarray(s, e))),
    MalformedLengthError,
  )
  assertPackets(got, [pingreq])
  const framer = new PacketFramer()
  framer.push(Buffer.from([0x30, 0x80, 0x80]), () => assert.fail('no packet expected'))
  assert.throws(
    () => framer.push(Buffer.from([0x80, 0x80, 0x01]), () => assert.fail('no packet expected')),
    MalformedLengthError,
  )
})

test('PacketFramer: the largest 4-byte Remaining Length is waited for, not an error', () => {
  const framer = new PacketFramer()
  assert.doesNotThrow(() =>
    framer.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1]), () => assert.fail('no packet expected')),
  )
  // Three continuation bytes so far: still valid; a fourth one means a fifth length byte, malformed.
  const pending = new PacketFramer()
  assert.doesNotThrow(() =>
    pending.push(Buffer.from([0x30, 0x80, 0x80, 0x80]), () => assert.fail('no packet expected')),
  )
  assert.throws(() => pending.push(Buffer.from([0x80]), () => assert.fail('no packet expected')), MalformedLengthError)
})

test('PacketFramer: an empty chunk changes nothing', () => {
  const framer = new PacketFramer()
  assertPackets(
    frame(
      [Buffer.alloc(0), twoByteLen.subarray(0, 2), Buffer.alloc(0), twoByteLen.subarray(2), Buffer.alloc(0)],
      framer,
    ),
    [twoByteLen],
  )
})
