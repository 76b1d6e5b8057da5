// Acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) over real TCP: one for a
// packet id the session never used closes the connection [MQTT-4.8.0-1]; the
// legitimate QoS 1/2 flows, both directions and across a persistent session's
// reconnect, keep working. (Packet id 0: protocol.test.ts.)
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
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
  type RawConnection,
} from '../../helpers/mqtt-clients.js'
import { nextMessage, withTimeout } from '../../helpers/wait.js'

const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope)
})

const PINGREQ = Buffer.from([0xc0, 0x00])
const PINGRESP = Buffer.from([0xd0, 0x00])

function ack(first: number, id: number): Buffer {
  return Buffer.from([first, 0x02, id >> 8, id & 0xff])
}

/** Resolves once bytes matching `bytes` arrived at or after `from`, with where they start. */
async function waitForSequence(c: RawConnection, bytes: Buffer, from = 0): Promise<number> {
  for (let n = from + bytes.length; ; n++) {
    const all = await c.waitForBytes(n, 10_000)
    const at = all.indexOf(bytes, from)
    if (at >= 0) return at
    n = all.length
  }
}

/** Connects `clientId` on a clean session, sends `bytes` and expects the broker to close without answering. */
async function closedAfterConnect(
  t: { after(fn: () => unknown): void },
  clientId: string,
  bytes: Buffer,
): Promise<void> {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connectPacket({ clientId }))
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
  c.socket.write(bytes)
  await withTimeout(c.closed, 5_000, 'the broker to close the connection')
  assert.equal(c.received().length, 4, 'nothing is answered')
}

for (const [name, first] of [
  ['PUBACK', 0x40],
  ['PUBREC', 0x50],
  ['PUBREL', 0x62],
  ['PUBCOMP', 0x70],
] as const) {
  test(`a ${name} for a packet id the session never used closes the connection without an answer [MQTT-4.8.0-1]`, async (t) => {
    await closedAfterConnect(t, `unknown-id-${name}`, ack(first, 4242))
    const line = await agent.waitForLog(
      (l) => l['reason'] === 'unknown-packet-id' && l['clientId'] === `unknown-id-${name}`,
      5_000,
      'the log line naming the client, packet type and id',
      true,
    )
    assert.equal(line['packetType'], first >> 4)
    assert.equal(line['packetId'], 4242)
    assert.equal(line['rule'], '[MQTT-4.8.0-1]')
  })
}

test('a PUBACK for a packet id next to the one the broker sent closes the connection [MQTT-4.8.0-1]', async (t) => {
  const c = await rawConnection(t, agent.mqttPort)
  c.socket.write(connectPacket({ clientId: 'wrong-id-reader' }))
  assert.deepEqual(await c.waitForBytes(4), CONNACK_ACCEPTED)
  c.socket.write(packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), mqttString('wrong/id'), Buffer.from([0x01])])))
  await c.waitForBytes(4 + 5)
  const pub = await client(t, agent.mqttUrl)
  await pub.publishAsync('wrong/id', 'x', { qos: 1 })
  // 0x32, length, topic (2 + 8), packet id, 'x'
  const all = await c.waitForBytes(9 + 2 + 2 + 8 + 2 + 1)
  const id = all.readUInt16BE(9 + 2 + 2 + 8)
  c.socket.write(ack(0x40, id === 65_535 ? 1 : id + 1))
  await withTimeout(c.closed, 5_000, 'the broker to close the connection')
})

test('legitimate QoS 1 and QoS 2 flows in both directions keep the connection open (MQTT 3.1.1 §4.3)', async (t) => {
  const a = await client(t, agent.mqttUrl, { clientId: 'flows-a' })
  let closed = false
  a.on('close', () => (closed = true))
  await a.subscribeAsync('flows/#', { qos: 2 })
  for (let round = 0; round < 3; round++) {
    for (const qos of [1, 2] as const) {
      const got = nextMessage(a, `flows/${qos}`)
      // a publishes (client to broker: PUBACK / PUBREC-PUBREL-PUBCOMP) and receives its own message back
      await a.publishAsync(`flows/${qos}`, `r${round}`, { qos })
      const m = await got
      assert.equal(m.payload.toString(), `r${round}`)
      assert.equal(m.qos, qos)
    }
  }
  assert.equal(closed, false)
  assert.equal(a.connected, true)
})

test('after a reconnect with a persistent session, the restored in-flight ids may be acknowledged [MQTT-4.4.0-1]', async (t) => {
  const first = await rawConnection(t, agent.mqttPort)
  first.socket.write(connectPacket({ clientId: 'persist-raw', flags: 0x00 }))
  await first.waitForBytes(4)
  first.socket.write(
    packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), mqttString('persist/raw'), Buffer.from([0x01])])),
  )
  await first.waitForBytes(4 + 5)
  const pub = await client(t, agent.mqttUrl)
  await pub.publishAsync('persist/raw', 'y', { qos: 1 })
  // 0x32, length, topic (2 + 11), packet id, 'y': received and never acknowledged
  const all = await first.waitForBytes(9 + 2 + 2 + 11 + 2 + 1)
  const id = all.readUInt16BE(9 + 2 + 2 + 11)
  first.socket.destroy()
  await first.closed

  const again = await rawConnection(t, agent.mqttPort)
  again.socket.write(connectPacket({ clientId: 'persist-raw', flags: 0x00 }))
  const connack = await again.waitForBytes(4)
  assert.equal(connack[3], 0x00)
  // the broker resends the message [MQTT-4.4.0-1]; acknowledge it, then ping to prove the connection lives
  await waitForSequence(again, Buffer.from('persist/raw'))
  again.socket.write(Buffer.concat([ack(0x40, id), PINGREQ]))
  await waitForSequence(again, PINGRESP, 4)
  assert.equal(again.socket.destroyed, false)
})

test('an acknowledgement of a restored id pipelined behind a persistent CONNECT is accepted [MQTT-4.4.0-1]', async (t) => {
  const first = await rawConnection(t, agent.mqttPort)
  first.socket.write(connectPacket({ clientId: 'persist-pipelined', flags: 0x00 }))
  await first.waitForBytes(4)
  first.socket.write(
    packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), mqttString('persist/pipe'), Buffer.from([0x01])])),
  )
  await first.waitForBytes(4 + 5)
  const pub = await client(t, agent.mqttUrl)
  await pub.publishAsync('persist/pipe', 'z', { qos: 1 })
  const all = await first.waitForBytes(9 + 2 + 2 + 12 + 2 + 1)
  const id = all.readUInt16BE(9 + 2 + 2 + 12)
  first.socket.destroy()
  await first.closed

  const again = await rawConnection(t, agent.mqttPort)
  // the PUBACK arrives before the broker has answered, let alone resent anything
  again.socket.write(
    Buffer.concat([connectPacket({ clientId: 'persist-pipelined', flags: 0x00 }), ack(0x40, id), PINGREQ]),
  )
  await waitForSequence(again, PINGRESP, 4)
  assert.equal(again.socket.destroyed, false)
})

test('a PUBREL resent after a reconnect with a persistent session gets its PUBCOMP [MQTT-4.3.3-2] [MQTT-4.4.0-1]', async (t) => {
  const first = await rawConnection(t, agent.mqttPort)
  first.socket.write(connectPacket({ clientId: 'persist-pubrel', flags: 0x00 }))
  await first.waitForBytes(4)
  first.socket.write(publishPacket('persist/pubrel', Buffer.from('q2'), 2, 77))
  assert.deepEqual((await first.waitForBytes(8)).subarray(4), ack(0x50, 77), 'PUBREC')
  first.socket.write(ack(0x62, 77))
  assert.deepEqual((await first.waitForBytes(12)).subarray(8), ack(0x70, 77), 'PUBCOMP')
  first.socket.destroy()
  await first.closed

  // as if that PUBCOMP had been lost: the client resends its PUBREL
  const again = await rawConnection(t, agent.mqttPort)
  again.socket.write(connectPacket({ clientId: 'persist-pubrel', flags: 0x00 }))
  await again.waitForBytes(4)
  again.socket.write(ack(0x62, 77))
  assert.deepEqual((await again.waitForBytes(8)).subarray(4), ack(0x70, 77))
  assert.equal(again.socket.destroyed, false)
})

test('on a clean session, a PUBREL for an id whose exchange ended on an earlier connection closes it [MQTT-4.8.0-1]', async (t) => {
  const first = await rawConnection(t, agent.mqttPort)
  first.socket.write(connectPacket({ clientId: 'clean-pubrel' }))
  await first.waitForBytes(4)
  first.socket.write(publishPacket('clean/pubrel', Buffer.from('q2'), 2, 78))
  await first.waitForBytes(8)
  first.socket.write(ack(0x62, 78))
  await first.waitForBytes(12)
  first.socket.destroy()
  await first.closed
  await closedAfterConnect(t, 'clean-pubrel', ack(0x62, 78))
})

test('QoS 1 and 2 messages queued for an offline persistent session are delivered and acknowledged', async (t) => {
  const sub = await client(t, agent.mqttUrl, { clientId: 'persist-js', clean: false })
  await sub.subscribeAsync('persist/js/#', { qos: 2 })
  await sub.endAsync()
  const pub = await client(t, agent.mqttUrl)
  await pub.publishAsync('persist/js/1', 'one', { qos: 1 })
  await pub.publishAsync('persist/js/2', 'two', { qos: 2 })
  const back = mqtt.connect(agent.mqttUrl, {
    clientId: 'persist-js',
    clean: false,
    reconnectPeriod: 0,
    manualConnect: true,
  })
  back.on('error', () => undefined)
  t.after(() => back.endAsync(true).catch(() => undefined))
  const got: string[] = []
  const both = new Promise<void>((resolve) =>
    back.on('message', (_topic, payload) => {
      got.push(payload.toString())
      if (got.length === 2) resolve()
    }),
  )
  back.connect()
  await withTimeout(both, 10_000, 'the queued messages')
  assert.deepEqual(got.sort(), ['one', 'two'])
  // the acknowledgements went through: a new exchange still works on the same connection
  const next = nextMessage(back, 'persist/js/3')
  await pub.publishAsync('persist/js/3', 'three', { qos: 2 })
  assert.equal((await next).payload.toString(), 'three')
  assert.equal(back.connected, true)
})

test('refusals of unknown packet ids are counted in /status', async () => {
  const status = await agent.status()
  const refused = status['broker']['refused'] as Record<string, number>
  assert.ok((refused['unknown-packet-id'] ?? 0) >= 4, JSON.stringify(refused))
})
