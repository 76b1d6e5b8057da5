// Bad input from devices against the real agent: malformed bytes, oversized
// packets before and after CONNECT, what MQTT 3.1.1 forbids, and limits.
// Each case must close only the offending connection, while another client's
// traffic flows on, and must not grow the agent's memory.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import type { MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import {
  client,
  rawConnection,
  refusedConnect,
  connectPacket,
  publishPacket,
  packet,
  mqttString,
  remainingLength,
  CONNACK_ACCEPTED,
} from '../../helpers/mqtt-clients.js'
import { nextMessage, withTimeout, waitFor } from '../../helpers/wait.js'

const scope = fileScope()
let agent: RunningAgent
let watcher: MqttClient
let talker: MqttClient

before(async () => {
  agent = await startAgent(scope, {
    config: {
      broker: {
        limits: { maxPayloadBytes: 4096, preConnectMaxBytes: 65536, keepaliveMaxSec: 600, maxConnections: 50 },
      },
    },
  })
  watcher = await client(scope, agent.mqttUrl, { clientId: 'watcher' })
  talker = await client(scope, agent.mqttUrl, { clientId: 'talker' })
  await watcher.subscribeAsync('bystander/#', { qos: 1 })
})

let seq = 0
/** Proves that an unrelated client's QoS 1 traffic still flows. */
async function bystanderStillServed(): Promise<void> {
  const topic = `bystander/${++seq}`
  const got = nextMessage(watcher, topic)
  await talker.publishAsync(topic, 'ok', { qos: 1 })
  assert.equal((await got).payload.toString(), 'ok')
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) * 1024
}

interface Case {
  name: string
  /** Bytes sent after a valid CONNECT was accepted, or instead of it. */
  bytes: Buffer
  afterConnect: boolean
  /** CONNACK the broker must answer with before closing, if any. */
  connack?: number
  /** A value expected in the agent's log line for it. */
  logged?: Record<string, unknown>
}

const zeroId = Buffer.from([0x00, 0x00])
const cases: Case[] = [
  {
    name: 'first packet not CONNECT [MQTT-3.1.0-1]',
    afterConnect: false,
    bytes: publishPacket('a/b', Buffer.from('x')),
  },
  { name: 'second CONNECT [MQTT-3.1.0-2]', afterConnect: true, bytes: connectPacket({ clientId: 'again' }) },
  { name: 'unknown protocol name [MQTT-3.1.2-1]', afterConnect: false, bytes: connectPacket({ protocolName: 'MQTX' }) },
  { name: 'reserved CONNECT flag set [MQTT-3.1.2-3]', afterConnect: false, bytes: connectPacket({ flags: 0x03 }) },
  {
    name: 'Will QoS 3 [MQTT-3.1.2-14]',
    afterConnect: false,
    bytes: connectPacket({ flags: 0x02 | 0x04 | 0x18, will: { topic: 'w', payload: Buffer.from('x') } }),
  },
  {
    name: 'password without user name [MQTT-3.1.2-22]',
    afterConnect: false,
    bytes: connectPacket({ flags: 0x02 | 0x40, password: Buffer.from('pw') }),
  },
  {
    name: 'empty client id with cleanSession=0 gets CONNACK 2 [MQTT-3.1.3-8]',
    afterConnect: false,
    bytes: connectPacket({ flags: 0x00, clientId: '' }),
    connack: 2,
  },
  {
    name: 'U+0000 in the client id [MQTT-1.5.3-2]',
    afterConnect: false,
    bytes: connectPacket({ clientId: 'dev\u0000ice' }),
  },
  {
    name: 'ill-formed UTF-8 in the client id [MQTT-1.5.3-1]',
    afterConnect: false,
    bytes: connectPacket({ clientId: Buffer.from([0x64, 0xc3, 0x28]) }),
  },
  {
    name: 'surrogate U+D800 in the user name [MQTT-1.5.3-1]',
    afterConnect: false,
    bytes: connectPacket({ username: Buffer.from([0xed, 0xa0, 0x80]) }),
  },
  {
    name: 'ill-formed UTF-8 in a topic [MQTT-1.5.3-1]',
    afterConnect: true,
    bytes: publishPacket(Buffer.from([0x61, 0xff]), Buffer.from('x')),
  },
  { name: 'U+0000 in a topic [MQTT-1.5.3-2]', afterConnect: true, bytes: publishPacket('a/\u0000', Buffer.from('x')) },
  {
    name: 'wildcard in a PUBLISH topic [MQTT-3.3.2-2]',
    afterConnect: true,
    bytes: publishPacket('a/+/b', Buffer.from('x')),
  },
  { name: 'empty PUBLISH topic [MQTT-4.7.3-1]', afterConnect: true, bytes: publishPacket('', Buffer.from('x')) },
  {
    name: 'PUBLISH QoS 3 [MQTT-3.3.1-4]',
    afterConnect: true,
    bytes: packet(0x36, Buffer.concat([mqttString('a'), zeroId, Buffer.from('x')])),
  },
  {
    name: 'QoS 1 PUBLISH with packet id 0 [MQTT-2.3.1-1]',
    afterConnect: true,
    bytes: publishPacket('a/b', Buffer.from('x'), 1, 0),
  },
  {
    name: 'DUP on a QoS 0 PUBLISH [MQTT-3.3.1-2]',
    afterConnect: true,
    bytes: publishPacket('a/b', Buffer.from('x'), 0, 0, 0x08),
  },
  {
    name: 'SUBSCRIBE with reserved flags 0000 [MQTT-3.8.1-1]',
    afterConnect: true,
    bytes: packet(0x80, Buffer.concat([Buffer.from([0, 1]), mqttString('a/#'), Buffer.from([1])])),
  },
  {
    name: 'SUBSCRIBE without a topic filter [MQTT-3.8.3-3]',
    afterConnect: true,
    bytes: packet(0x82, Buffer.from([0, 1])),
  },
  {
    name: 'SUBSCRIBE requesting QoS 3 [MQTT-3.8.3-4]',
    afterConnect: true,
    bytes: packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString('a/#'), Buffer.from([3])])),
  },
  {
    name: 'a packet only servers send (CONNACK) from a client',
    afterConnect: true,
    bytes: Buffer.from([0x20, 0x02, 0x00, 0x00]),
  },
  { name: 'reserved packet type 15', afterConnect: true, bytes: Buffer.from([0xf0, 0x00]) },
  { name: 'remaining length of 5 bytes', afterConnect: true, bytes: Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]) },
  { name: 'PUBACK with the wrong length', afterConnect: true, bytes: Buffer.from([0x40, 0x03, 0x00, 0x01, 0x00]) },
  {
    name: 'PUBLISH payload above broker.limits.maxPayloadBytes',
    afterConnect: true,
    bytes: publishPacket('big/one', Buffer.alloc(4097, 0x61), 1, 7),
    logged: { limit: 'maxPayloadBytes' },
  },
  {
    name: 'CONNECT larger than broker.limits.preConnectMaxBytes',
    afterConnect: false,
    bytes: connectPacket({ will: { topic: 'w', payload: Buffer.alloc(60_000) }, username: 'u'.repeat(10_000) }),
    logged: { limit: 'preConnectMaxBytes' },
  },
]

for (const c of cases) {
  test(`closes the connection on ${c.name}; other clients are unaffected`, async (t) => {
    const raw = await rawConnection(t, agent.mqttPort)
    if (c.afterConnect) {
      raw.socket.write(connectPacket({ clientId: `bad-${seq}` }))
      assert.deepEqual(await raw.waitForBytes(4), CONNACK_ACCEPTED)
    }
    const before = raw.received().length
    raw.socket.write(c.bytes)
    await withTimeout(raw.closed, 5_000, 'the broker to close the connection')
    const answer = raw.received().subarray(before)
    if (c.connack === undefined) {
      // No CONNACK or other answer to a violating packet: the connection just closes.
      assert.equal(answer.length, 0, `unexpected bytes ${answer.toString('hex')}`)
    } else {
      assert.deepEqual(answer, Buffer.from([0x20, 0x02, 0x00, c.connack]))
    }
    if (c.logged) {
      const want = c.logged
      await agent.waitForLog(
        (l) => Object.entries(want).every(([k, v]) => l[k] === v),
        5_000,
        `a log line naming ${JSON.stringify(want)}`,
      )
    }
    await bystanderStillServed()
  })
}

test('an oversized packet before CONNECT is cut off at its header and does not grow memory', async (t) => {
  const before = rssBytes(agent.pid)
  // Three sockets each announcing a 268 MB PUBLISH before CONNECT, then
  // streaming 8 MiB of it in 64 KiB chunks for as long as the socket lets them.
  const header = Buffer.concat([Buffer.from([0x30]), remainingLength(268_435_455)])
  const chunk = Buffer.alloc(65_536, 0x41)
  await Promise.all(
    [1, 2, 3].map(async () => {
      const raw = await rawConnection(t, agent.mqttPort)
      raw.socket.write(header)
      for (let i = 0; i < 128 && !raw.socket.destroyed; i++) {
        if (!raw.socket.write(chunk)) {
          await Promise.race([new Promise((r) => raw.socket.once('drain', r)), raw.closed])
        }
      }
      await withTimeout(raw.closed, 5_000, 'the oversized connection to close')
    }),
  )
  await bystanderStillServed()
  const grown = rssBytes(agent.pid) - before
  assert.ok(grown < 8 * 1048576, `RSS grew by ${(grown / 1048576).toFixed(1)} MiB`)
})

test('an oversized PUBLISH after CONNECT is refused once its topic is read, before its payload is buffered', async (t) => {
  const before = rssBytes(agent.pid)
  const raw = await rawConnection(t, agent.mqttPort)
  raw.socket.write(connectPacket({ clientId: 'big-sender' }))
  await raw.waitForBytes(4)
  const topic = mqttString('big/two')
  raw.socket.write(Buffer.concat([Buffer.from([0x32]), remainingLength(200_000_000), topic, Buffer.from([0, 1])]))
  for (let i = 0; i < 64 && !raw.socket.destroyed; i++) raw.socket.write(Buffer.alloc(65_536))
  await withTimeout(raw.closed, 5_000, 'the connection to close')
  await bystanderStillServed()
  assert.ok(rssBytes(agent.pid) - before < 8 * 1048576)
})

test('random garbage on many connections never takes the broker down', async (t) => {
  // Deterministic pseudo-random bytes, so a failure can be replayed.
  let state = 0x2545f491
  const rand = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 4294967296
  }
  for (let round = 0; round < 40; round++) {
    const raw = await rawConnection(t, agent.mqttPort)
    if (round % 2 === 0) {
      raw.socket.write(connectPacket({ clientId: `fuzz-${round}` }))
      await raw.waitForBytes(4)
    }
    const junk = Buffer.alloc(1 + Math.floor(rand() * 300))
    for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(rand() * 256)
    raw.socket.write(junk)
    raw.socket.end()
    await withTimeout(raw.closed, 5_000, `fuzz round ${round} to close`)
  }
  await bystanderStillServed()
})

test('refuses connections beyond broker.limits.maxConnections with CONNACK 3 and logs the limit', async (t) => {
  const small = await startAgent(t, { config: { broker: { limits: { maxConnections: 2 } } } })
  await client(t, small.mqttUrl, { clientId: 'one' })
  await client(t, small.mqttUrl, { clientId: 'two' })
  const err = await refusedConnect(small.mqttUrl, { clientId: 'three' })
  assert.equal(err.code, 3, err.message)
  const line = await small.waitForLog((l) => l['limit'] === 'maxConnections', 5_000, 'the maxConnections log line')
  assert.equal(line.msg, 'connection refused by limit')
  assert.equal(line['clientId'], 'three')
})

test('refuses a keepalive above broker.limits.keepaliveMaxSec with CONNACK 2, logging the limit', async () => {
  const tooLong = await refusedConnect(agent.mqttUrl, { clientId: 'sleepy', keepalive: 3600 })
  assert.equal(tooLong.code, 2)
  await agent.waitForLog(
    (l) => l['limit'] === 'keepaliveMaxSec' && l['clientId'] === 'sleepy',
    5_000,
    'the keepaliveMaxSec log line',
  )
})

test('counts refusals by reason in /status', async () => {
  const status = await agent.status()
  const refused = status['broker']['refused'] as Record<string, number>
  assert.ok((refused['maxPayloadBytes'] ?? 0) >= 1)
  assert.ok((refused['malformed'] ?? 0) >= 1)
  assert.ok((refused['protocol-violation'] ?? 0) >= 1)
  assert.ok((refused['keepaliveMaxSec'] ?? 0) >= 1)
  await waitFor(
    async () => (await agent.status())['broker']['clients'] === 2,
    5_000,
    'only the two well-behaved clients to remain',
  )
})
