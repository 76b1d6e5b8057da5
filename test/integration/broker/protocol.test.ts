// MQTT 3.1/3.1.1 details of the local broker over real TCP, each naming the
// normative statement or the Mosquitto behaviour it follows. ($ topics other
// than the agent's own: pubsub.test.ts.)
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import {
  client,
  connectPacket,
  mqttString,
  packet,
  publishPacket,
  rawConnection,
  CONNACK_ACCEPTED,
} from '../../helpers/mqtt-clients.js'
import { nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'

const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope)
})

/** Sends `bytes` after an accepted CONNECT (or instead of one) and expects the broker to close without answering. */
async function closedWithoutAnswer(
  t: { after(fn: () => unknown): void },
  connect: Buffer,
  then?: Buffer,
): Promise<void> {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connect)
  let before = 0
  if (then !== undefined) {
    assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
    before = 4
    c.socket.write(then)
  }
  await withTimeout(c.closed, 5_000, 'the broker to close the connection')
  assert.equal(c.received().length, before, 'nothing is answered')
}

test('keepalive 0 is accepted by default [MQTT-3.1.2-10: 0 turns the keep alive mechanism off] (as Mosquitto)', async (t) => {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connectPacket({ clientId: 'ka-zero', keepalive: 0 }))
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
})

for (const [what, cp] of [
  ['U+0001 in a client id', connectPacket({ clientId: 'dev\u0001ice' })],
  ['U+001F in a user name', connectPacket({ clientId: 'cc-user', username: 'us\u001fer' })],
  [
    'U+007F in a Will topic',
    connectPacket({ clientId: 'cc-will', will: { topic: 'will/\u007f', payload: Buffer.from('x') } }),
  ],
  ['U+0085 (C1) in a client id', connectPacket({ clientId: 'dev\u0085ice' })],
] as const) {
  test(`closes the connection for ${what}, without a CONNACK (MQTT 3.1.1 §1.5.3, as Mosquitto 2.0.20)`, async (t) => {
    await closedWithoutAnswer(t, cp)
  })
}

test('closes the connection for a control character in a PUBLISH topic or a SUBSCRIBE filter (§1.5.3)', async (t) => {
  await closedWithoutAnswer(
    t,
    connectPacket({ clientId: 'cc-pub' }),
    publishPacket('a/\u0007/b', Buffer.from('x'), 1, 1),
  )
  const sub = packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), mqttString('a/\u009f/#'), Buffer.from([0x01])]))
  await closedWithoutAnswer(t, connectPacket({ clientId: 'cc-sub' }), sub)
})

test('accepts an MQTT 3.1 (MQIsdp) CONNECT with flags 3.1.1 reserves, as Mosquitto does, and serves it', async (t) => {
  const c = await rawConnection(t, agent.mqttPort)
  // bit 0 set, Will QoS 1 and Will Retain without a Will: refused by 3.1.1 [MQTT-3.1.2-3, -13, -15], not by 3.1
  c.socket.write(
    connectPacket({ protocolName: 'MQIsdp', level: 3, flags: 0x02 | 0x01 | 0x08 | 0x20, clientId: 'mqtt31-flags' }),
  )
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
  const watcher = await client(t, agent.mqttUrl)
  await watcher.subscribeAsync('v31/flags', { qos: 0 })
  const got = nextMessage(watcher, 'v31/flags')
  c.socket.write(publishPacket('v31/flags', Buffer.from('from 3.1'), 0))
  assert.equal((await got).payload.toString(), 'from 3.1')
})

test('the same flags in an MQTT 3.1.1 CONNECT close the connection [MQTT-3.1.2-3]', async (t) => {
  await closedWithoutAnswer(t, connectPacket({ flags: 0x02 | 0x01, clientId: 'mqtt311-flags' }))
})

test('accepts an MQTT 3.1 client id longer than 23 bytes up to maxClientIdBytes (as Mosquitto)', async (t) => {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connectPacket({ protocolName: 'MQIsdp', level: 3, clientId: 'plc-gateway-line-1-cell-4-station-12' }))
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
})

for (const [name, first] of [
  ['PUBACK', 0x40],
  ['PUBREC', 0x50],
  ['PUBREL', 0x62],
  ['PUBCOMP', 0x70],
] as const) {
  test(`a ${name} for packet id 0, which no session uses, closes the connection without an answer [MQTT-2.3.1-1]`, async (t) => {
    await closedWithoutAnswer(t, connectPacket({ clientId: `ack0-${name}` }), Buffer.from([first, 0x02, 0x00, 0x00]))
  })
}

test('packet ids of messages the broker sends start at 1 and increase per session [MQTT-2.3.1-2]', async (t) => {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connectPacket({ clientId: 'ids-reader' }))
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
  c.socket.write(packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), mqttString('ids/#'), Buffer.from([0x01])])))
  await c.waitForBytes(4 + 5) // SUBACK 90 03 00 01 01
  const pub = await client(t, agent.mqttUrl)
  for (let i = 0; i < 3; i++) await pub.publishAsync(`ids/${i}`, 'x', { qos: 1 })
  // three QoS 1 PUBLISHes: 0x32, length, topic (2 + 5 bytes), packet id, payload 'x'
  const each = 2 + 2 + 5 + 2 + 1
  const all = await c.waitForBytes(9 + 3 * each)
  const ids: number[] = []
  for (let at = 9; at < all.length; at += each) {
    assert.equal(all[at], 0x32)
    ids.push(all.readUInt16BE(at + 2 + 2 + 5))
  }
  assert.deepEqual(ids, [1, 2, 3])
})

test('retained messages beyond broker.limits.maxRetainedMessages are delivered but not kept, and counted', async (t) => {
  const small = await startAgent(t, { config: { broker: { limits: { maxRetainedMessages: 2 } } } })
  const pub = await client(t, small.mqttUrl)
  for (const i of [1, 2, 3]) await pub.publishAsync(`keep/${i}`, `v${i}`, { qos: 1, retain: true })
  // an update of a kept topic still fits
  await pub.publishAsync('keep/1', 'v1b', { qos: 1, retain: true })
  const late = await client(t, small.mqttUrl)
  const seen = new Map<string, string>()
  late.on('message', (topic, payload) => seen.set(topic, payload.toString()))
  await late.subscribeAsync(['keep/#', 'keep-marker'], { qos: 1 })
  // The retained replay follows the SUBACK on its own schedule: wait for the
  // two kept messages, then a marker, so that a wrongly kept keep/3 (replayed
  // with them) would have arrived as well.
  await waitFor(() => seen.has('keep/1') && seen.has('keep/2'), 10_000, 'the retained replay of keep/1 and keep/2')
  const marker = nextMessage(late, 'keep-marker')
  await pub.publishAsync('keep-marker', 'm', { qos: 1 })
  await marker
  seen.delete('keep-marker')
  assert.deepEqual([...seen].sort(), [
    ['keep/1', 'v1b'],
    ['keep/2', 'v2'],
  ])
  assert.equal((await small.status())['broker']['denied']['retainedLimit'], 1)
})
