// Unit tests of the packet guard on MQTT 5 connections (allowMqtt5). Each
// refusal names the MQTT 5 normative statement it enforces, or the section
// where the spec states the rule without an id. Streams are raw bytes
// (mqtt5-bytes.ts); valid ones also come from mqtt-packet's generate.
//
// Glossary:
//   at       | offset in the stream where the invalid packet starts
//   code     | MQTT 5 reason code the violation carries (CONNACK or DISCONNECT)
//   1-byte   | the stream fed one byte per feed(), the accumulate-across-chunks path
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import mqttPacket from 'mqtt-packet'
import { AckTracker } from '../../../src/local-broker/ack-tracker.js'
import { PacketGuard } from '../../../src/local-broker/packet-guard.js'
import {
  ack5,
  assertPasses,
  assertRefused,
  assertRefusedAfterConnect,
  bytes,
  connect5,
  CONNECT5,
  disconnect5,
  field,
  P,
  packet,
  prop,
  props,
  publish5,
  run,
  subscribe5,
  u16,
  unsubscribe5,
  V5_LIMITS,
  type Expected,
} from './mqtt5-bytes.js'

const malformed = { reason: 'malformed', code: 0x81 } as const
const protocol = { reason: 'protocol-violation', code: 0x82 } as const
const aliasInvalid = { reason: 'topic-alias-invalid', code: 0x94 } as const
/** A refused CONNECT: answered by a CONNACK with the reason code. */
const atConnect = (e: Expected): Expected => ({ ...e, connack: true })

const gen = (p: object): Buffer => mqttPacket.generate(p as mqttPacket.Packet, { protocolVersion: 5 })

// --- CONNECT ------------------------------------------------------------------------

describe('PacketGuard MQTT 5: CONNECT', () => {
  test('answers an MQTT 5 CONNACK 0x84 (Unsupported Protocol Version) to level 5 unless allowMqtt5 [MQTT-3.1.2-2]', () => {
    for (const limits of [{}, { allowMqtt5: false }]) {
      assertRefused(
        CONNECT5,
        0,
        { reason: 'unsupported-protocol-version', rule: '[MQTT-3.1.2-2]', code: 0x84, connack: true },
        { limits },
      )
    }
  })

  test('passes what mqtt-packet generates, every CONNECT and Will property, and exposes the client limits', () => {
    const c = gen({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 5,
      clientId: 'gen-5',
      clean: false,
      keepalive: 30,
      username: 'u',
      password: Buffer.from('p'),
      properties: {
        sessionExpiryInterval: 3600,
        receiveMaximum: 20,
        maximumPacketSize: 4096,
        topicAliasMaximum: 7,
        requestResponseInformation: true,
        requestProblemInformation: false,
        userProperties: { site: ['a', 'b'], ü: 'é' },
      },
      will: {
        topic: 'w/t',
        payload: Buffer.from('bye'),
        qos: 2,
        retain: true,
        properties: {
          willDelayInterval: 10,
          payloadFormatIndicator: true,
          messageExpiryInterval: 60,
          contentType: 'text/plain',
          responseTopic: 'r/t',
          correlationData: Buffer.from([0, 0xff]),
          userProperties: { k: 'v' },
        },
      },
    })
    const guard = assertPasses(c)
    assert.equal(guard.clientId, 'gen-5')
    assert.equal(guard.protocolVersion, 5)
    assert.deepEqual(guard.mqtt5, {
      sessionExpiryInterval: 3600,
      receiveMaximum: 20,
      maximumPacketSize: 4096,
      topicAliasMaximum: 7,
      requestResponseInformation: true,
      requestProblemInformation: false,
    })
  })

  test('applies the defaults of absent properties (MQTT 5 §3.1.2.11)', () => {
    assert.deepEqual(assertPasses(CONNECT5).mqtt5, {
      sessionExpiryInterval: 0,
      receiveMaximum: 65_535,
      maximumPacketSize: undefined,
      topicAliasMaximum: 0,
      requestResponseInformation: false,
      requestProblemInformation: true,
    })
  })

  test('still validates MQTT 3.1.1 and 3.1 by their own rules when allowMqtt5, without reason codes', () => {
    const c311 = packet(0x10, field('MQTT'), [4, 2, 0, 60], field('dev-4'))
    const guard = assertPasses(c311)
    assert.equal(guard.protocolVersion, 4)
    assert.equal(guard.mqtt5, undefined)
    assertPasses(packet(0x10, field('MQIsdp'), [3, 2, 0, 60], field('dev-3')))
    const v = assertRefused(bytes(c311, packet(0x40, [0, 1, 0])), c311.length, { reason: 'malformed' })
    assert.equal(v.reasonCode, undefined)
    // the password-without-user rule of 3.1.1 still holds there
    assertRefused(packet(0x10, field('MQTT'), [4, 0x42, 0, 60], field('d'), field('p')), 0, {
      reason: 'malformed',
      rule: '[MQTT-3.1.2-22]',
    })
  })

  test('passes a password without a user name, and an empty client id without Clean Start (MQTT 5 §3.1.2.9, §3.1.3.1)', () => {
    assertPasses(connect5({ password: [1, 2, 3] }))
    assert.equal(assertPasses(connect5({ clientId: '', clean: false })).clientId, '')
  })

  const cases: [string, Buffer, Expected][] = [
    [
      'closes on the CONNECT reserved flag [MQTT-3.1.2-3]',
      connect5({ flags: 0x03 }),
      { ...malformed, rule: '[MQTT-3.1.2-3]' },
    ],
    [
      'closes on Will QoS without the Will flag [MQTT-3.1.2-11]',
      connect5({ flags: 0x0a }),
      { ...malformed, rule: '[MQTT-3.1.2-11]' },
    ],
    [
      'closes on Will QoS 3 [MQTT-3.1.2-12]',
      connect5({ will: { topic: 'w', qos: 3 } }),
      { ...malformed, rule: '[MQTT-3.1.2-12]' },
    ],
    [
      'closes on Will Retain without the Will flag [MQTT-3.1.2-13]',
      connect5({ flags: 0x22 }),
      { ...malformed, rule: '[MQTT-3.1.2-13]' },
    ],
    [
      'closes on a property length that runs past the CONNECT (MQTT 5 §2.2.2.1)',
      packet(0x10, field('MQTT'), [5, 2, 0, 60], [0x09, 0x11, 0, 0]),
      malformed,
    ],
    [
      'closes on a property length longer than four bytes (MQTT 5 §1.5.5)',
      packet(0x10, field('MQTT'), [5, 2, 0, 60], [0x80, 0x80, 0x80, 0x80, 0x01], field('d')),
      malformed,
    ],
    [
      'closes on a property length not in its shortest form [MQTT-1.5.5-1]',
      packet(0x10, field('MQTT'), [5, 2, 0, 60], [0x80, 0x00], field('d')),
      { ...malformed, rule: '[MQTT-1.5.5-1]' },
    ],
    ['closes on an unknown property identifier (MQTT 5 §2.2.2.2)', connect5({ props: props([0x7f, 0]) }), malformed],
    [
      'closes on a property value cut off by the property length (MQTT 5 §2.2.2.1)',
      connect5({ props: props([0x11, 0, 0]) }),
      malformed,
    ],
    [
      'closes on a duplicate Session Expiry Interval (MQTT 5 §3.1.2.11.2)',
      connect5({ props: props(P.sessionExpiry(1), P.sessionExpiry(2)) }),
      protocol,
    ],
    [
      'closes on a duplicate Receive Maximum (MQTT 5 §3.1.2.11.3)',
      connect5({ props: props(P.receiveMaximum(5), P.user('a', 'b'), P.receiveMaximum(5)) }),
      protocol,
    ],
    [
      'closes on a Topic Alias in CONNECT, a PUBLISH property (MQTT 5 §2.2.2.2)',
      connect5({ props: props(P.topicAlias(1)) }),
      malformed,
    ],
    [
      'closes on a Will Delay Interval among the CONNECT properties (MQTT 5 §2.2.2.2)',
      connect5({ props: props(P.willDelay(1)) }),
      malformed,
    ],
    [
      'closes on a Session Expiry Interval among the Will Properties (MQTT 5 §2.2.2.2)',
      connect5({ will: { topic: 'w', props: props(P.sessionExpiry(1)) } }),
      malformed,
    ],
    [
      'closes on Assigned Client Identifier, a property only a server sends (MQTT 5 §2.2.2.2)',
      connect5({ props: props(P.assignedClientId('x')) }),
      malformed,
    ],
    ['closes on Receive Maximum 0 (MQTT 5 §3.1.2.11.3)', connect5({ props: props(P.receiveMaximum(0)) }), protocol],
    [
      'closes on Maximum Packet Size 0 (MQTT 5 §3.1.2.11.4)',
      connect5({ props: props(P.maximumPacketSize(0)) }),
      protocol,
    ],
    [
      'closes on Request Problem Information 2 (MQTT 5 §3.1.2.11.7)',
      connect5({ props: props(P.requestProblem(2)) }),
      protocol,
    ],
    [
      'closes on Request Response Information 2 (MQTT 5 §3.1.2.11.6)',
      connect5({ props: props(P.requestResponse(2)) }),
      protocol,
    ],
    [
      'closes on a User Property name that is not well-formed UTF-8 [MQTT-1.5.7-1]',
      connect5({ props: props(P.user([0x61, 0xff], 'v')) }),
      { ...malformed, rule: '[MQTT-1.5.7-1]' },
    ],
    [
      'closes on a User Property value containing U+0000 [MQTT-1.5.7-1]',
      connect5({ props: props(P.user('k', [0x61, 0x00])) }),
      { ...malformed, rule: '[MQTT-1.5.7-1]' },
    ],
    [
      'closes on a Will Content Type containing U+0000 [MQTT-1.5.4-2]',
      connect5({ will: { topic: 'w', props: props(P.contentType([0x74, 0x00])) } }),
      { ...malformed, rule: '[MQTT-1.5.4-2]' },
    ],
    [
      'closes on a Will Response Topic with a wildcard [MQTT-3.3.2-14]',
      connect5({ will: { topic: 'w', props: props(P.responseTopic('r/#')) } }),
      { ...protocol, rule: '[MQTT-3.3.2-14]' },
    ],
    [
      'closes on a client id that is not well-formed UTF-8 [MQTT-3.1.3-4]',
      connect5({ clientId: [0x64, 0xc3] }),
      { ...malformed, rule: '[MQTT-3.1.3-4]' },
    ],
    [
      'closes on a client id containing U+0000 [MQTT-1.5.4-2]',
      connect5({ clientId: [0x64, 0x00] }),
      { ...malformed, rule: '[MQTT-1.5.4-2]' },
    ],
    [
      'closes on a Will Topic that is not well-formed UTF-8 [MQTT-3.1.3-11]',
      connect5({ will: { topic: [0xed, 0xa0, 0x80] } }),
      { ...malformed, rule: '[MQTT-3.1.3-11]' },
    ],
    [
      "closes on a Will Topic with '+' [MQTT-4.7.0-1]",
      connect5({ will: { topic: 'a/+' } }),
      { ...protocol, rule: '[MQTT-4.7.0-1]' },
    ],
    [
      'closes on an empty Will Topic [MQTT-4.7.3-1]',
      connect5({ will: { topic: '' } }),
      { ...protocol, rule: '[MQTT-4.7.3-1]' },
    ],
    [
      'closes on a user name that is not well-formed UTF-8 [MQTT-3.1.3-12]',
      connect5({ user: [0x75, 0x80] }),
      { ...malformed, rule: '[MQTT-3.1.3-12]' },
    ],
    [
      'closes when the Will flag is set but the Will Payload is missing [MQTT-3.1.2-9]',
      packet(0x10, field('MQTT'), [5, 0x06, 0, 60], [0], field('id'), [0], field('w/t')),
      { ...malformed, rule: '[MQTT-3.1.2-9]' },
    ],
    [
      'closes when the user name flag is set but no user name follows [MQTT-3.1.2-17]',
      packet(0x10, field('MQTT'), [5, 0x82, 0, 60], [0], field('id')),
      { ...malformed, rule: '[MQTT-3.1.2-17]' },
    ],
    [
      'closes when the password flag is set but no password follows [MQTT-3.1.2-19]',
      packet(0x10, field('MQTT'), [5, 0x42, 0, 60], [0], field('id')),
      { ...malformed, rule: '[MQTT-3.1.2-19]' },
    ],
    [
      'closes on bytes after the last CONNECT field [MQTT-3.1.4-1]',
      connect5({ trailing: [0] }),
      { ...malformed, rule: '[MQTT-3.1.4-1]' },
    ],
    [
      'closes on Authentication Data without an Authentication Method (MQTT 5 §3.1.2.11.10)',
      connect5({ props: props(P.authData([1])) }),
      protocol,
    ],
    [
      'answers 0x8C to an Authentication Method: enhanced authentication is not supported [MQTT-4.12.0-1]',
      connect5({ props: props(P.authMethod('SCRAM-SHA-1'), P.authData([1, 2])) }),
      { reason: 'bad-authentication-method', rule: '[MQTT-4.12.0-1]', code: 0x8c },
    ],
  ]
  for (const [name, c, expected] of cases)
    test(name, () => {
      assertRefused(c, 0, atConnect(expected))
    })

  test('answers 0x81, not 0x8C, to an Authentication Method in a malformed CONNECT [MQTT-3.1.4-1]', () => {
    assertRefused(
      connect5({ props: props(P.authMethod('x')), trailing: [0] }),
      0,
      atConnect({ ...malformed, rule: '[MQTT-3.1.4-1]' }),
    )
  })

  test('reports the client id of a CONNECT refused after the id was read', () => {
    const r = run(connect5({ clientId: 'dev-9', user: [0xff] }), Infinity)
    assert.equal(r.violation?.clientId, 'dev-9')
  })

  test('closes on a second CONNECT [MQTT-3.1.0-2], with reason code 0x82', () => {
    assertRefusedAfterConnect(CONNECT5, { ...protocol, rule: '[MQTT-3.1.0-2]' })
  })
})

// --- PUBLISH ----------------------------------------------------------------------------

describe('PacketGuard MQTT 5: PUBLISH', () => {
  test('passes every PUBLISH property a client may send, byte-identical and in any chunking', () => {
    assertPasses(
      bytes(
        CONNECT5,
        gen({
          cmd: 'publish',
          topic: 'site/a',
          payload: Buffer.from('{"t":1}'),
          qos: 1,
          messageId: 9,
          retain: true,
          dup: false,
          properties: {
            payloadFormatIndicator: true,
            messageExpiryInterval: 120,
            topicAlias: 3,
            responseTopic: 'reply/dev-5',
            correlationData: Buffer.from([0, 1, 0xff]),
            userProperties: { a: ['1', '2'], unit: '°C' },
            contentType: 'application/json',
          },
        }),
        publish5({ qos: 2, id: 10, props: props(P.user('k', 'v'), P.user('k', 'v')) }),
        publish5({ payload: 0 }),
      ),
    )
  })

  test('passes an empty topic with a Topic Alias the connection set before (MQTT 5 §3.3.2.3.4)', () => {
    assertPasses(
      bytes(
        CONNECT5,
        publish5({ topic: 'a/b', props: props(P.topicAlias(10)) }),
        publish5({ topic: '', props: props(P.topicAlias(10)) }),
        // re-mapping an alias to another topic is allowed
        publish5({ topic: 'c', qos: 1, id: 2, props: props(P.topicAlias(10)) }),
        publish5({ topic: '', qos: 1, id: 3, props: props(P.topicAlias(10)) }),
      ),
    )
  })

  const cases: [string, Buffer, Expected][] = [
    [
      'closes on Topic Alias 0 [MQTT-3.3.2-8]',
      publish5({ props: props(P.topicAlias(0)) }),
      { ...aliasInvalid, rule: '[MQTT-3.3.2-8]' },
    ],
    [
      'closes on a Topic Alias above the Topic Alias Maximum [MQTT-3.3.2-9]',
      publish5({ props: props(P.topicAlias(11)) }),
      { ...aliasInvalid, rule: '[MQTT-3.3.2-9]' },
    ],
    ['closes on an empty topic without a Topic Alias (MQTT 5 §3.3.2.1)', publish5({ topic: '' }), protocol],
    [
      'closes on an empty topic with a Topic Alias the connection never set (MQTT 5 §3.3.2.3.4)',
      publish5({ topic: '', props: props(P.topicAlias(4)) }),
      protocol,
    ],
    [
      'closes on a Subscription Identifier from a client [MQTT-3.3.4-6]',
      publish5({ props: props(P.subscriptionId(1)) }),
      { ...protocol, rule: '[MQTT-3.3.4-6]' },
    ],
    [
      'closes on a Response Topic with a wildcard [MQTT-3.3.2-14]',
      publish5({ props: props(P.responseTopic('reply/+')) }),
      { ...protocol, rule: '[MQTT-3.3.2-14]' },
    ],
    [
      'closes on a Response Topic that is not well-formed UTF-8 [MQTT-3.3.2-13]',
      publish5({ props: props(P.responseTopic([0x72, 0xc0, 0x80])) }),
      { ...malformed, rule: '[MQTT-3.3.2-13]' },
    ],
    [
      'closes on a Content Type that is not well-formed UTF-8 [MQTT-1.5.4-1]',
      publish5({ props: props(P.contentType([0xff])) }),
      { ...malformed, rule: '[MQTT-1.5.4-1]' },
    ],
    [
      'closes on a duplicate Topic Alias (MQTT 5 §3.3.2.3.4)',
      publish5({ props: props(P.topicAlias(1), P.topicAlias(1)) }),
      protocol,
    ],
    [
      'closes on a duplicate Payload Format Indicator (MQTT 5 §3.3.2.3.2)',
      publish5({ props: props(P.payloadFormat(1), P.payloadFormat(1)) }),
      protocol,
    ],
    [
      'closes on Payload Format Indicator 2 (MQTT 5 §3.3.2.3.2)',
      publish5({ props: props(P.payloadFormat(2)) }),
      protocol,
    ],
    [
      'closes on a Session Expiry Interval in PUBLISH, a property PUBLISH does not carry (MQTT 5 §2.2.2.2)',
      publish5({ props: props(P.sessionExpiry(1)) }),
      malformed,
    ],
    [
      'closes on a Will Delay Interval in PUBLISH (MQTT 5 §2.2.2.2)',
      publish5({ props: props(P.willDelay(1)) }),
      malformed,
    ],
    [
      'closes on a property length that runs past the PUBLISH (MQTT 5 §2.2.2.1)',
      packet(0x30, field('t'), [0x05], [0x01, 0x01]),
      malformed,
    ],
    [
      'closes at its last byte on a QoS 0 PUBLISH with an empty topic and no property length (MQTT 5 §3.3.2)',
      packet(0x30, field('')),
      malformed,
    ],
    [
      'closes on a PUBLISH without a property length (an MQTT 3.1.1 PUBLISH on an MQTT 5 connection)',
      packet(0x32, field('t'), u16(1)),
      malformed,
    ],
    [
      'closes on a PUBLISH property length longer than four bytes (MQTT 5 §1.5.5)',
      packet(0x30, field('t'), [0xff, 0xff, 0xff, 0xff, 0x01], Buffer.alloc(8)),
      malformed,
    ],
    [
      'closes on a PUBLISH property length not in its shortest form [MQTT-1.5.5-1]',
      packet(0x30, field('t'), [0x80, 0x00], [0x61]),
      { ...malformed, rule: '[MQTT-1.5.5-1]' },
    ],
    [
      'closes on an unknown property identifier in PUBLISH (MQTT 5 §2.2.2.2)',
      publish5({ props: props([0x00]) }),
      malformed,
    ],
    ["closes on a topic with '#' [MQTT-3.3.2-2]", publish5({ topic: 'a/#' }), { ...protocol, rule: '[MQTT-3.3.2-2]' }],
    [
      'closes on a topic that is not well-formed UTF-8 [MQTT-1.5.4-1]',
      publish5({ topic: [0x61, 0xc3] }),
      { ...malformed, rule: '[MQTT-1.5.4-1]' },
    ],
    [
      'closes on a topic containing U+0000 [MQTT-4.7.3-2]',
      publish5({ topic: [0x61, 0] }),
      { ...malformed, rule: '[MQTT-4.7.3-2]' },
    ],
    [
      'closes on a QoS 1 PUBLISH with packet identifier 0 [MQTT-2.2.1-3]',
      publish5({ qos: 1, id: 0 }),
      { ...protocol, rule: '[MQTT-2.2.1-3]' },
    ],
    ['closes on PUBLISH with QoS 3 [MQTT-3.3.1-4]', publish5({ qos: 3 }), { ...malformed, rule: '[MQTT-3.3.1-4]' }],
  ]
  for (const [name, bad, expected] of cases)
    test(name, () => {
      assertRefusedAfterConnect(bad, expected)
    })

  test('closes on any Topic Alias while topicAliasMaximum is 0, the default [MQTT-3.2.2-18]', () => {
    assertRefusedAfterConnect(
      publish5({ props: props(P.topicAlias(1)) }),
      { ...aliasInvalid, rule: '[MQTT-3.3.2-9]' },
      { limits: { allowMqtt5: true } },
    )
  })

  test('refuses topicAliasMaximum outside 0 to 65535', () => {
    assert.throws(() => new PacketGuard({ topicAliasMaximum: 65_536 }), RangeError)
    assert.throws(() => new PacketGuard({ topicAliasMaximum: -1 }), RangeError)
  })
})

// --- sizes ------------------------------------------------------------------------------

describe('PacketGuard MQTT 5: limits', () => {
  const limits = { allowMqtt5: true, topicAliasMaximum: 10, preConnectMaxBytes: 1024, maxPayloadBytes: 4096 }
  const auth = { limits, authenticateAt: CONNECT5.length }
  const tooLarge = (limit: 'preConnectMaxBytes' | 'maxPayloadBytes'): Expected => ({
    reason: 'packet-too-large',
    code: 0x95,
    limit,
  })

  test('passes a payload of exactly maxPayloadBytes next to properties', () => {
    assertPasses(bytes(CONNECT5, publish5({ qos: 1, props: props(P.user('k', 'v'.repeat(500))), payload: 4096 })), auth)
  })

  test('refuses a payload of maxPayloadBytes + 1 with 0x95, properties not counted as payload', () => {
    assertRefusedAfterConnect(
      publish5({ qos: 1, props: props(P.user('k', 'v'.repeat(500))), payload: 4097 }),
      tooLarge('maxPayloadBytes'),
      auth,
    )
  })

  test('refuses PUBLISH properties above preConnectMaxBytes as soon as their length is read', () => {
    const bad = publish5({ props: props(P.user('k', 'v'.repeat(1100))), payload: 1 })
    const v = assertRefusedAfterConnect(bad, tooLarge('preConnectMaxBytes'), auth)
    assert.equal(v.detail, 'PUBLISH properties above the limit')
    // decided from the header fields alone, before any property byte arrived
    const guard = new PacketGuard(limits)
    guard.feed(CONNECT5)
    guard.authenticated()
    const header = 1 + 2 + 2 + 15 + 2 // byte 1, remaining length, topic length and topic, property length
    assert.equal(guard.feed(bad.subarray(0, header - 1)).violation, undefined)
    assert.equal(guard.feed(bad.subarray(header - 1, header)).violation?.limit, 'preConnectMaxBytes')
  })

  test('refuses at the fixed header what cannot fit under the longest topic and properties', () => {
    const guard = new PacketGuard(limits)
    guard.feed(CONNECT5)
    guard.authenticated()
    const r = guard.feed(bytes([0x30], [0xff, 0xff, 0x7f]))
    assert.equal(r.violation?.limit, 'maxPayloadBytes')
    assert.equal(r.violation?.reasonCode, 0x95)
  })

  test('holds a pipelined PUBLISH before authentication to preConnectMaxBytes, with 0x95', () => {
    assertRefusedAfterConnect(publish5({ payload: 2000 }), tooLarge('preConnectMaxBytes'), { limits })
  })

  test('caps acknowledgement and DISCONNECT bodies at preConnectMaxBytes', () => {
    const big = props(P.reasonString('r'.repeat(1100)))
    assertRefusedAfterConnect(ack5(0x40, 1, 0, big), tooLarge('preConnectMaxBytes'), auth)
    assertRefusedAfterConnect(disconnect5(0, big), tooLarge('preConnectMaxBytes'), auth)
  })
})

// --- acknowledgements ---------------------------------------------------------------------

describe('PacketGuard MQTT 5: PUBACK, PUBREC, PUBREL, PUBCOMP', () => {
  test('passes remaining lengths 2, 3 and 4+ with their reason codes, Reason String and User Property (MQTT 5 §3.4.2)', () => {
    assertPasses(
      bytes(
        CONNECT5,
        ack5(0x40, 1),
        ack5(0x40, 2, 0x10),
        ack5(0x40, 3, 0x97, props()),
        ack5(0x50, 4, 0x80, props(P.reasonString('quota'), P.user('a', 'b'), P.user('a', 'c'))),
        ack5(0x62, 5, 0x92, props(P.reasonString('gone'))),
        ack5(0x70, 6, 0x00, props(P.user('k', 'v'))),
        gen({ cmd: 'puback', messageId: 7, reasonCode: 0x99, properties: { reasonString: 'bad payload' } }),
        gen({ cmd: 'pubcomp', messageId: 8, reasonCode: 0x92 }),
      ),
    )
  })

  const cases: [string, Buffer, Expected][] = [
    [
      'closes on PUBACK with PUBREL’s reason code 0x92 [MQTT-3.4.2-1]',
      ack5(0x40, 1, 0x92),
      { ...protocol, rule: '[MQTT-3.4.2-1]' },
    ],
    [
      'closes on PUBREC with the undefined reason code 0x01 [MQTT-3.5.2-1]',
      ack5(0x50, 1, 0x01),
      { ...protocol, rule: '[MQTT-3.5.2-1]' },
    ],
    [
      'closes on PUBREL with PUBACK’s reason code 0x10 [MQTT-3.6.2-1]',
      ack5(0x62, 1, 0x10),
      { ...protocol, rule: '[MQTT-3.6.2-1]' },
    ],
    [
      'closes on PUBCOMP with reason code 0x80 [MQTT-3.7.2-1]',
      ack5(0x70, 1, 0x80),
      { ...protocol, rule: '[MQTT-3.7.2-1]' },
    ],
    [
      'closes on PUBACK with a Topic Alias, a property it does not carry (MQTT 5 §2.2.2.2)',
      ack5(0x40, 1, 0, props(P.topicAlias(1))),
      malformed,
    ],
    [
      'closes on PUBACK with a duplicate Reason String (MQTT 5 §3.4.2.2.2)',
      ack5(0x40, 1, 0, props(P.reasonString('a'), P.reasonString('b'))),
      protocol,
    ],
    [
      'closes on PUBACK with bytes after its properties (MQTT 5 §3.4)',
      ack5(0x40, 1, 0, bytes(props(), [0])),
      malformed,
    ],
    [
      'closes on PUBACK whose property length runs past it (MQTT 5 §2.2.2.1)',
      ack5(0x40, 1, 0, [0x05, 0x1f]),
      malformed,
    ],
    ['closes on PUBACK with remaining length 1 (MQTT 5 §3.4.2)', packet(0x40, [0]), malformed],
    [
      'closes on PUBREL with a Reason String that is not well-formed UTF-8 [MQTT-1.5.4-1]',
      ack5(0x62, 1, 0, props(P.reasonString([0xfe]))),
      { ...malformed, rule: '[MQTT-1.5.4-1]' },
    ],
    [
      'closes on PUBACK of packet identifier 0 [MQTT-2.2.1-3]',
      ack5(0x40, 0, 0),
      { ...protocol, rule: '[MQTT-2.2.1-3]' },
    ],
    [
      'closes on PUBACK with reserved fixed-header flags [MQTT-2.1.3-1]',
      packet(0x41, [0, 1]),
      { ...malformed, rule: '[MQTT-2.1.3-1]' },
    ],
    [
      'closes on PUBREL with fixed-header flags 0000 [MQTT-3.6.1-1]',
      packet(0x60, [0, 1]),
      { ...malformed, rule: '[MQTT-3.6.1-1]' },
    ],
  ]
  for (const [name, bad, expected] of cases)
    test(name, () => {
      assertRefusedAfterConnect(bad, expected)
    })

  test('closes on an acknowledgement with reason code of a packet id the session never used [MQTT-2.2.1-5]', () => {
    const v = assertRefusedAfterConnect(
      ack5(0x40, 77, 0x10, props(P.reasonString('x'))),
      {
        reason: 'unknown-packet-id',
        rule: '[MQTT-2.2.1-5]',
        code: 0x82,
      },
      { acks: new AckTracker() },
    )
    assert.equal(v.packetId, 77)
  })
})

// --- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------

describe('PacketGuard MQTT 5: SUBSCRIBE and UNSUBSCRIBE', () => {
  test('passes every subscription option, shared subscriptions and a Subscription Identifier', () => {
    assertPasses(
      bytes(
        CONNECT5,
        subscribe5(
          1,
          props(P.subscriptionId(268_435_455), P.user('a', 'b')),
          ['a/+', 0x00],
          ['b/#', 0x01 | 0x04 | 0x08 | 0x20], // QoS 1, No Local, Retain As Published, Retain Handling 2
          ['$share/group/c/+', 0x02 | 0x10],
          ['$share/g/#', 0x00],
        ),
        gen({
          cmd: 'subscribe',
          messageId: 2,
          subscriptions: [{ topic: 'x/+', qos: 1, nl: true, rap: true, rh: 1 }],
          properties: { subscriptionIdentifier: 5, userProperties: { u: 'v' } },
        }),
        unsubscribe5(3, props(P.user('k', 'v')), 'a/+', '$share/group/c/+'),
        gen({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['x/+'] }),
      ),
    )
  })

  const cases: [string, Buffer, Expected][] = [
    [
      'closes on subscription options with reserved bit 6 [MQTT-3.8.3-5]',
      subscribe5(1, props(), ['a', 0x40]),
      { ...malformed, rule: '[MQTT-3.8.3-5]' },
    ],
    [
      'closes on subscription options with reserved bit 7 [MQTT-3.8.3-5]',
      subscribe5(1, props(), ['a', 0x81]),
      { ...malformed, rule: '[MQTT-3.8.3-5]' },
    ],
    ['closes on Retain Handling 3 (MQTT 5 §3.8.3.1)', subscribe5(1, props(), ['a', 0x30]), protocol],
    ['closes on Maximum QoS 3 (MQTT 5 §3.8.3.1)', subscribe5(1, props(), ['a', 0x03]), protocol],
    [
      'closes on No Local on a shared subscription [MQTT-3.8.3-4]',
      subscribe5(1, props(), ['$share/g/a', 0x04]),
      { ...protocol, rule: '[MQTT-3.8.3-4]' },
    ],
    [
      'closes on an empty ShareName [MQTT-4.8.2-1]',
      subscribe5(1, props(), ['$share//a', 0]),
      { ...protocol, rule: '[MQTT-4.8.2-1]' },
    ],
    [
      "closes on a ShareName with '+' [MQTT-4.8.2-2]",
      subscribe5(1, props(), ['$share/+/a', 0]),
      { ...protocol, rule: '[MQTT-4.8.2-2]' },
    ],
    [
      'closes on a shared subscription without a topic filter [MQTT-4.8.2-2]',
      subscribe5(1, props(), ['$share/g/', 0]),
      { ...protocol, rule: '[MQTT-4.8.2-2]' },
    ],
    [
      'closes on a shared subscription without a / after the ShareName [MQTT-4.8.2-2]',
      subscribe5(1, props(), ['$share/g', 0]),
      { ...protocol, rule: '[MQTT-4.8.2-2]' },
    ],
    [
      'closes on Subscription Identifier 0 (MQTT 5 §3.8.2.1.2)',
      subscribe5(1, props(P.subscriptionId(0)), ['a', 0]),
      protocol,
    ],
    [
      'closes on two Subscription Identifiers (MQTT 5 §3.8.2.1.2)',
      subscribe5(1, props(P.subscriptionId(1), P.subscriptionId(2)), ['a', 0]),
      protocol,
    ],
    [
      'closes on a Subscription Identifier longer than four bytes (MQTT 5 §1.5.5)',
      subscribe5(1, props(prop(0x0b, [0x81, 0x81, 0x81, 0x81, 0x01])), ['a', 0]),
      malformed,
    ],
    [
      'closes on a Reason String in SUBSCRIBE (MQTT 5 §2.2.2.2)',
      subscribe5(1, props(P.reasonString('r')), ['a', 0]),
      malformed,
    ],
    [
      'closes on SUBSCRIBE without a topic filter [MQTT-3.8.3-2]',
      subscribe5(1, props(P.user('a', 'b'))),
      { ...protocol, rule: '[MQTT-3.8.3-2]' },
    ],
    [
      "closes on the topic filter 'a#' [MQTT-4.7.1-1]",
      subscribe5(1, props(), ['a#', 0]),
      { ...protocol, rule: '[MQTT-4.7.1-1]' },
    ],
    [
      "closes on the topic filter 'a+/b' [MQTT-4.7.1-2]",
      subscribe5(1, props(), ['a+/b', 0]),
      { ...protocol, rule: '[MQTT-4.7.1-2]' },
    ],
    [
      'closes on SUBSCRIBE with packet identifier 0 [MQTT-2.2.1-3]',
      subscribe5(0, props(), ['a', 0]),
      { ...protocol, rule: '[MQTT-2.2.1-3]' },
    ],
    [
      'closes on SUBSCRIBE whose property length runs past it (MQTT 5 §2.2.2.1)',
      subscribe5(1, [0x40], ['a', 0]),
      malformed,
    ],
    [
      'closes on SUBSCRIBE with fixed-header flags 0000 [MQTT-3.8.1-1]',
      packet(0x80, u16(1), props(), field('a'), [0]),
      { ...malformed, rule: '[MQTT-3.8.1-1]' },
    ],
    [
      'closes on UNSUBSCRIBE without a topic filter [MQTT-3.10.2-2]',
      unsubscribe5(1, props()),
      { ...protocol, rule: '[MQTT-3.10.2-2]' },
    ],
    [
      'closes on a Subscription Identifier in UNSUBSCRIBE (MQTT 5 §2.2.2.2)',
      unsubscribe5(1, props(P.subscriptionId(1)), 'a'),
      malformed,
    ],
    [
      'closes on an UNSUBSCRIBE filter that is not well-formed UTF-8 [MQTT-1.5.4-1]',
      unsubscribe5(1, props(), [0xc3]),
      { ...malformed, rule: '[MQTT-1.5.4-1]' },
    ],
    [
      'closes on UNSUBSCRIBE without properties (an MQTT 3.1.1 UNSUBSCRIBE) (MQTT 5 §3.10.2)',
      packet(0xa2, u16(1), [0, 1, 0x61]),
      malformed,
    ],
  ]
  for (const [name, bad, expected] of cases)
    test(name, () => {
      assertRefusedAfterConnect(bad, expected)
    })
})

// --- DISCONNECT, AUTH, PINGREQ --------------------------------------------------------------

describe('PacketGuard MQTT 5: DISCONNECT, AUTH and PINGREQ', () => {
  test('passes DISCONNECT of length 0, with a reason code, and with properties (MQTT 5 §3.14.2)', () => {
    assertPasses(bytes(CONNECT5, [0xc0, 0], disconnect5()))
    assertPasses(bytes(CONNECT5, disconnect5(0x04)))
    assertPasses(
      bytes(CONNECT5, disconnect5(0x00, props(P.reasonString('bye'), P.user('a', 'b'), P.serverReference('x')))),
    )
    assertPasses(bytes(CONNECT5, gen({ cmd: 'disconnect', reasonCode: 0x98, properties: { reasonString: 'admin' } })))
    // Session Expiry may change on DISCONNECT when CONNECT set a non-zero one
    const c = connect5({ props: props(P.sessionExpiry(60)) })
    assertPasses(bytes(c, disconnect5(0, props(P.sessionExpiry(0)))))
    assertPasses(bytes(c, disconnect5(0, props(P.sessionExpiry(600)))))
  })

  const cases: [string, Buffer, Expected][] = [
    [
      'closes on DISCONNECT 0x8E, a reason code only a server sends [MQTT-3.14.2-1]',
      disconnect5(0x8e),
      { ...protocol, rule: '[MQTT-3.14.2-1]' },
    ],
    [
      'closes on DISCONNECT with the undefined reason code 0x01 [MQTT-3.14.2-1]',
      disconnect5(0x01),
      { ...protocol, rule: '[MQTT-3.14.2-1]' },
    ],
    [
      'closes on a non-zero Session Expiry Interval in DISCONNECT after 0 in CONNECT (MQTT 5 §3.14.2.2.2)',
      disconnect5(0, props(P.sessionExpiry(30))),
      protocol,
    ],
    ['closes on a Topic Alias in DISCONNECT (MQTT 5 §2.2.2.2)', disconnect5(0, props(P.topicAlias(1))), malformed],
    [
      'closes on DISCONNECT with bytes after its properties (MQTT 5 §3.14)',
      disconnect5(0, bytes(props(), [0])),
      malformed,
    ],
    [
      'closes on DISCONNECT with reserved fixed-header flags [MQTT-2.1.3-1]',
      packet(0xe2),
      { ...malformed, rule: '[MQTT-2.1.3-1]' },
    ],
    [
      'closes on AUTH: enhanced authentication was not negotiated [MQTT-4.12.0-7]',
      packet(0xf0, [0x19, 0]),
      { ...protocol, rule: '[MQTT-4.12.0-7]' },
    ],
    [
      'closes on AUTH with reserved fixed-header flags [MQTT-3.15.1-1]',
      packet(0xf1, [0]),
      { ...malformed, rule: '[MQTT-3.15.1-1]' },
    ],
    ['closes on PINGREQ with remaining length 1 (MQTT 5 §3.12)', packet(0xc0, [0]), malformed],
    ['closes on CONNACK, a packet only a server sends', packet(0x20, [0, 0, 0]), protocol],
  ]
  for (const [name, bad, expected] of cases)
    test(name, () => {
      assertRefusedAfterConnect(bad, expected)
    })

  test('refuses AUTH at its first byte, whatever length it announces', () => {
    const guard = new PacketGuard({ allowMqtt5: true })
    guard.feed(CONNECT5)
    const r = guard.feed(Buffer.from([0xf0]))
    assert.equal(r.pass, 0)
    assert.equal(r.violation?.rule, '[MQTT-4.12.0-7]')
  })
})

// --- streaming ---------------------------------------------------------------------------

/** mulberry32: a seeded generator, so a failing chunking can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe('PacketGuard MQTT 5: streaming', () => {
  const session = bytes(
    gen({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 5,
      clientId: 'stream-5',
      clean: true,
      keepalive: 30,
      properties: { sessionExpiryInterval: 60, topicAliasMaximum: 4 },
      will: { topic: 'w', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 5 } },
    }),
    gen({
      cmd: 'subscribe',
      messageId: 1,
      subscriptions: [{ topic: 'cmd/#', qos: 1, nl: true }],
      properties: { subscriptionIdentifier: 3 },
    }),
    gen({
      cmd: 'publish',
      topic: 'site/a',
      payload: Buffer.alloc(300, 1),
      qos: 0,
      retain: false,
      dup: false,
      properties: { topicAlias: 1 },
    }),
    gen({
      cmd: 'publish',
      topic: '',
      payload: Buffer.from('p'),
      qos: 1,
      messageId: 2,
      retain: true,
      dup: false,
      properties: { topicAlias: 1 },
    }),
    gen({
      cmd: 'publish',
      topic: 'site/c',
      payload: Buffer.alloc(20_000, 2),
      qos: 2,
      messageId: 3,
      retain: false,
      dup: false,
      properties: { userProperties: { a: 'b' }, correlationData: Buffer.from('id') },
    }),
    gen({ cmd: 'pubrel', messageId: 3, reasonCode: 0 }),
    gen({ cmd: 'puback', messageId: 9, reasonCode: 0x10 }),
    gen({ cmd: 'pingreq' }),
    gen({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['cmd/#'] }),
    gen({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } }),
  )

  test('passes a session fed one byte at a time byte-for-byte, and mqtt-packet parses the same packets', () => {
    const r = run(session, 1)
    assert.equal(r.violation, undefined, r.violation?.detail)
    assert.deepEqual(r.passed, session)
    const parser = mqttPacket.parser({ protocolVersion: 5 })
    const cmds: string[] = []
    parser.on('packet', (p) => cmds.push(p.cmd))
    parser.on('error', (err) => assert.fail(err))
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

  test('passes the session under 200 random chunkings', () => {
    const random = prng(5)
    for (let round = 0; round < 200; round++) {
      const guard = new PacketGuard({ allowMqtt5: true, topicAliasMaximum: 10 })
      let off = 0
      while (off < session.length) {
        const size = 1 + Math.floor(random() * (round % 2 === 0 ? 16 : 4096))
        const chunk = session.subarray(off, off + size)
        const r = guard.feed(chunk)
        assert.equal(r.violation, undefined, `round ${round} at ${off}: ${r.violation?.detail}`)
        assert.equal(r.pass, chunk.length)
        off += chunk.length
      }
    }
  })

  test('on 3000 seeded corruptions of the session: same verdict whole and byte by byte, and what passes parses', () => {
    const random = prng(55)
    for (let round = 0; round < 3000; round++) {
      const stream = Buffer.from(session.subarray(0, 100 + Math.floor(random() * 1500)))
      for (let f = 1 + Math.floor(random() * 3); f > 0; f--) {
        stream[Math.floor(random() * stream.length)] = Math.floor(random() * 256)
      }
      const whole = run(stream, Infinity)
      const split = run(stream, 1)
      assert.deepEqual(split.violation, whole.violation, `round ${round}`)
      assert.deepEqual(whole.passed, stream.subarray(0, whole.passed.length))
      assert.ok(split.passed.length >= whole.passed.length)
      if (whole.violation !== undefined) {
        assert.ok(split.passed.length < stream.length, `round ${round}: the invalid packet's last byte passed`)
        continue
      }
      const parser = mqttPacket.parser({ protocolVersion: 5 })
      parser.on('error', (err) => assert.fail(`round ${round}: ${err.message}`))
      parser.parse(whole.passed)
    }
  })

  test('passes nothing of the chunk that completes invalid PUBLISH properties begun earlier', () => {
    const guard = new PacketGuard(V5_LIMITS)
    guard.feed(CONNECT5)
    const bad = publish5({ props: props(P.user('k', 'v'), P.topicAlias(0)), payload: 100 })
    assert.equal(guard.feed(bad.subarray(0, 12)).pass, 12)
    const r = guard.feed(bytes(bad.subarray(12), [0xc0, 0]))
    assert.equal(r.pass, 0)
    assert.equal(r.violation?.rule, '[MQTT-3.3.2-8]')
    assert.equal(guard.feed(Buffer.from([0xc0, 0])).violation, r.violation, 'closed for good')
  })
})
