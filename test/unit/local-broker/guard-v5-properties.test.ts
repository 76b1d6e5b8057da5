// The packet guard's generic MQTT 5 property check (guard-v5-properties.ts)
// on raw property blocks: data types, lengths, duplicates, which packet may
// carry which property (MQTT 5 §2.2.2.2), and what it records for callers.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  checkProperties,
  checkPropertyBlock,
  found,
  readVarint,
  WILL,
} from '../../../src/local-broker/guard-v5-properties.js'
import { bytes, field, P, prop, props, u16, u32 } from './mqtt5-bytes.js'

const CONNECT = 1
const PUBLISH = 3
const PUBACK = 4
const PUBREC = 5
const PUBREL = 6
const PUBCOMP = 7
const SUBSCRIBE = 8
const UNSUBSCRIBE = 10
const DISCONNECT = 14
const CLIENT_CONTEXTS = [CONNECT, WILL, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT]

const check = (b: Buffer, context: number) => checkProperties(b, 0, b.length, context)

describe('readVarint (MQTT 5 §1.5.5)', () => {
  const cases: [number[], number][] = [
    [[0x00], 0],
    [[0x7f], 127],
    [[0x80, 0x01], 128],
    [[0xff, 0x7f], 16_383],
    [[0x80, 0x80, 0x01], 16_384],
    [[0xff, 0xff, 0xff, 0x7f], 268_435_455],
  ]
  for (const [encoded, value] of cases) {
    test(`reads ${encoded.map((b) => b.toString(16).padStart(2, '0')).join(' ')} as ${value}`, () => {
      assert.equal(readVarint(Buffer.from(encoded), 0, encoded.length), value)
    })
  }

  test('returns -1 when it runs past the end, -2 past four bytes, -3 when not shortest [MQTT-1.5.5-1]', () => {
    assert.equal(readVarint(Buffer.from([0x80]), 0, 1), -1)
    assert.equal(readVarint(Buffer.from([0x80, 0x01]), 0, 1), -1, 'the end bounds it, not the Buffer')
    assert.equal(readVarint(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x01]), 0, 5), -2)
    assert.equal(readVarint(Buffer.from([0x80, 0x00]), 0, 2), -3)
    assert.equal(readVarint(Buffer.from([0xff, 0x80, 0x00]), 0, 3), -3)
  })
})

describe('checkProperties', () => {
  test('passes an empty block in every client packet', () => {
    for (const context of CLIENT_CONTEXTS) assert.equal(check(Buffer.alloc(0), context), undefined)
  })

  test('passes User Property any number of times in every client packet (MQTT 5 §2.2.2.2)', () => {
    const users = bytes(P.user('a', 'b'), P.user('a', 'b'), P.user('', ''), P.user('ü', '\u0001 control ok'))
    for (const context of CLIENT_CONTEXTS) assert.equal(check(users, context), undefined, `context ${context}`)
  })

  test('refuses every property only a server sends, in every client packet (MQTT 5 §2.2.2.2)', () => {
    const serverOnly = [
      prop(0x12, field('id')), // Assigned Client Identifier
      prop(0x13, u16(10)), // Server Keep Alive
      prop(0x1a, field('x')), // Response Information
      prop(0x24, [1]), // Maximum QoS
      prop(0x25, [1]), // Retain Available
      prop(0x28, [1]), // Wildcard Subscription Available
      prop(0x29, [1]), // Subscription Identifier Available
      prop(0x2a, [1]), // Shared Subscription Available
    ]
    for (const p of serverOnly) {
      for (const context of CLIENT_CONTEXTS) {
        assert.equal(check(p, context)?.reason, 'malformed', `property 0x${p[0]!.toString(16)} in ${context}`)
      }
    }
  })

  test('refuses a property on a packet the table does not list it for (MQTT 5 §2.2.2.2)', () => {
    const cases: [Buffer, number][] = [
      [P.topicAlias(1), CONNECT],
      [P.topicAlias(1), WILL],
      [P.sessionExpiry(1), WILL],
      [P.sessionExpiry(1), PUBLISH],
      [P.willDelay(1), CONNECT],
      [P.reasonString('r'), PUBLISH],
      [P.reasonString('r'), SUBSCRIBE],
      [P.subscriptionId(1), UNSUBSCRIBE],
      [P.receiveMaximum(1), DISCONNECT],
      [P.authMethod('m'), DISCONNECT],
      [P.serverReference('s'), CONNECT],
      [P.payloadFormat(0), PUBACK],
    ]
    for (const [p, context] of cases) {
      const v = check(p, context)
      assert.equal(v?.reason, 'malformed', `0x${p[0]!.toString(16)} in ${context}`)
      assert.match(v.detail, /is not allowed on this packet/)
    }
  })

  test('refuses unknown identifiers, including multi-byte ones (MQTT 5 §2.2.2.2)', () => {
    for (const id of [0x00, 0x04, 0x10, 0x14, 0x1b, 0x20, 0x2b, 0x7f, 0x80]) {
      assert.equal(
        check(Buffer.from([id, 0, 0, 0, 0]), PUBLISH)?.detail,
        'unknown property identifier (MQTT 5 §2.2.2.2)',
      )
    }
  })

  test('refuses a value of each data type cut off by the end of the block (MQTT 5 §1.5)', () => {
    const whole = [
      P.payloadFormat(1), // byte
      P.topicAlias(1), // two-byte integer
      P.messageExpiry(1), // four-byte integer
      P.subscriptionId(200), // variable byte integer
      P.contentType('text'), // UTF-8 string
      P.correlationData([1, 2]), // binary data
      P.user('k', 'v'), // string pair
    ]
    for (const p of whole) {
      const context = p[0] === 0x0b ? SUBSCRIBE : PUBLISH
      assert.equal(check(p, context), undefined)
      const v = check(p.subarray(0, p.length - 1), context)
      assert.equal(v?.reason, 'malformed', `0x${p[0]!.toString(16)}`)
    }
  })

  test('refuses the second of any property other than User Property (MQTT 5 §2.2.2.2)', () => {
    const cases: [Buffer, number][] = [
      [P.sessionExpiry(1), CONNECT],
      [P.maximumPacketSize(10), CONNECT],
      [P.topicAliasMaximum(10), CONNECT],
      [P.authData([1]), CONNECT],
      [P.willDelay(1), WILL],
      [P.correlationData([1]), PUBLISH],
      [P.responseTopic('r'), PUBLISH],
      [P.contentType('c'), PUBLISH],
      [P.messageExpiry(1), PUBLISH],
      [P.reasonString('a'), PUBREL],
      [P.subscriptionId(1), SUBSCRIBE],
      [P.serverReference('s'), DISCONNECT],
    ]
    for (const [p, context] of cases) {
      assert.equal(check(p, context), undefined)
      assert.equal(
        check(bytes(p, P.user('x', 'y'), p), context)?.reason,
        'protocol-violation',
        `0x${p[0]!.toString(16)}`,
      )
    }
  })

  test('records what callers decide on, and forgets it on the next call', () => {
    const block = bytes(
      P.sessionExpiry(0xffffffff),
      P.receiveMaximum(7),
      P.maximumPacketSize(1 << 20),
      P.topicAliasMaximum(3),
      P.requestProblem(0),
      P.requestResponse(1),
      P.authMethod('m'),
    )
    assert.equal(check(block, CONNECT), undefined)
    assert.deepEqual(
      { ...found },
      {
        sessionExpiryInterval: 0xffffffff,
        receiveMaximum: 7,
        maximumPacketSize: 1 << 20,
        topicAliasMaximum: 3,
        topicAlias: -1,
        requestProblemInformation: 0,
        requestResponseInformation: 1,
        subscriptionIdentifier: -1,
        authenticationMethod: true,
        authenticationData: false,
      },
    )
    assert.equal(check(bytes(P.topicAlias(9)), PUBLISH), undefined)
    assert.equal(found.topicAlias, 9)
    assert.equal(found.sessionExpiryInterval, -1)
    assert.equal(found.authenticationMethod, false)
  })

  test('refuses ill-formed UTF-8 and U+0000 in string properties, names the pair rule for User Property', () => {
    assert.equal(check(P.reasonString([0xc0, 0x80]), PUBACK)?.rule, '[MQTT-1.5.4-1]')
    assert.equal(check(P.reasonString([0x61, 0x00]), PUBACK)?.rule, '[MQTT-1.5.4-2]')
    assert.equal(check(prop(0x1c, field([0xed, 0xa0, 0x80])), DISCONNECT)?.rule, '[MQTT-1.5.4-1]')
    assert.equal(check(P.user('k', [0xf8, 0x88, 0x80, 0x80, 0x80]), PUBLISH)?.rule, '[MQTT-1.5.7-1]')
    assert.equal(check(P.responseTopic(''), PUBLISH)?.rule, '[MQTT-4.7.3-1]')
    // binary data is any bytes
    assert.equal(check(bytes(P.correlationData([0, 0xff, 0xc0])), PUBLISH), undefined)
  })
})

describe('checkPropertyBlock', () => {
  test('returns the offset after the block, or a violation when its length is bad', () => {
    const block = props(P.user('k', 'v'))
    const b = bytes([9, 9], block, [7])
    assert.equal(checkPropertyBlock(b, 2, b.length, PUBLISH), 2 + block.length)
    assert.equal(typeof checkPropertyBlock(b, 2, 2 + block.length - 1, PUBLISH), 'object')
    assert.equal(typeof checkPropertyBlock(Buffer.from([]), 0, 0, PUBLISH), 'object', 'missing length')
    const big = bytes([0x80, 0x80, 0x80, 0x80, 0x01], u32(0))
    assert.equal(
      (checkPropertyBlock(big, 0, big.length, PUBLISH) as { detail: string }).detail,
      'property length longer than four bytes (MQTT 5 §1.5.5)',
    )
  })
})
