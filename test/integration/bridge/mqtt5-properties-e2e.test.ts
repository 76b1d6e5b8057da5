// MQTT 5 devices end to end: a device speaking MQTT 5 to the real agent,
// bridged to a real Mosquitto 2, its properties arriving there unchanged, and
// commands coming down with theirs. A 3.1.1 device must still get commands
// that carry properties. Skipped only where Mosquitto is not installed.
//
// Glossary
//   upstream  Mosquitto on a free 127.0.0.1 port, reached through `proxy` (cut for outages)
//   agent     dist/agent/main.js bridging to it
//   device    an mqtt.js MQTT 5 client of the agent's local broker
//   site      an mqtt.js MQTT 5 client of Mosquitto
import { before, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import type { MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'
import { startProxy, type TcpProxy } from '../../helpers/tcp-proxy.js'
import { nextMessage, waitFor, type ReceivedMessage } from '../../helpers/wait.js'

const missing = mosquittoMissing()
const scope = fileScope()
let upstream: RunningMosquitto
let proxy: TcpProxy
let agent: RunningAgent
let site: MqttClient
const CORRELATION = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0x00])

before(async () => {
  if (missing !== undefined) return
  upstream = await startMosquitto(scope)
  proxy = await startProxy(scope, upstream.port)
  agent = await startAgent(scope, {
    config: {
      upstreams: [
        {
          name: 'site',
          url: proxy.url,
          keepaliveSec: 5,
          reconnect: { minMs: 200, maxMs: 1000, resetAfterMs: 2000, probeIntervalMs: 200 },
          rules: [
            { topic: 'devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: 'e2e/', ttlSec: 0 },
            { topic: 'devices/+/cmd', direction: 'in', qos: 1, remotePrefix: 'e2e/' },
          ],
        },
      ],
    },
  })
  await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, "the agent's 'upstream connected'")
  site = await client(scope, upstream.url, { protocolVersion: 5, clientId: 'site' })
  await site.subscribeAsync('e2e/#', { qos: 1 })
})

function recorder(c: MqttClient): Array<ReceivedMessage & { properties: Record<string, unknown> | undefined }> {
  const got: Array<ReceivedMessage & { properties: Record<string, unknown> | undefined }> = []
  c.on('message', (topic, payload, packet) => {
    got.push({ topic, payload, qos: packet.qos, retain: packet.retain, properties: packet.properties })
  })
  return got
}

async function device(t: TestContext, clientId: string): Promise<MqttClient> {
  return client(t, agent.mqttUrl, { protocolVersion: 5, clientId })
}

test("a device's properties arrive at the upstream unchanged", { skip: missing }, async (t) => {
  const dev = await device(t, 'dev-props')
  const got = nextMessage(site, 'e2e/devices/1/telemetry')
  const packets: Record<string, unknown>[] = []
  const onMessage = (topic: string, _p: Buffer, packet: { properties?: Record<string, unknown> }): void => {
    if (topic === 'e2e/devices/1/telemetry') packets.push(packet.properties ?? {})
  }
  site.on('message', onMessage)
  t.after(() => site.off('message', onMessage))
  await dev.publishAsync('devices/1/telemetry', '{"t":21.5}', {
    qos: 1,
    properties: {
      payloadFormatIndicator: true,
      contentType: 'application/json',
      responseTopic: 'e2e/replies/dev-props',
      correlationData: CORRELATION,
      userProperties: { unit: '°C', tag: ['x', 'y', 'x'] },
    },
  })
  await got
  const p = packets[0] ?? {}
  assert.equal(p['payloadFormatIndicator'], true)
  assert.equal(p['contentType'], 'application/json')
  assert.equal(p['responseTopic'], 'e2e/replies/dev-props')
  assert.equal((p['correlationData'] as Buffer).toString('hex'), CORRELATION.toString('hex'))
  const user = p['userProperties'] as Record<string, unknown>
  assert.equal(user['unit'], '°C')
  assert.deepEqual(user['tag'], ['x', 'y', 'x'])
  assert.ok(user['edge-agent-via'] !== undefined && user['edge-agent-id'] !== undefined, 'ours added')
})

test(
  'while buffered during an outage, an expired message is not sent and a live one goes with what is left',
  { skip: missing },
  async (t) => {
    const dev = await device(t, 'dev-expiry')
    const got = recorder(site)
    proxy.block()
    await waitFor(async () => (await agent.status())['upstreams'][0].connected === false, 15_000, 'the outage seen')
    const before = (await agent.status())['upstreams'][0].drops['expired'] ?? 0
    const sentAt = Date.now()
    await dev.publishAsync('devices/2/telemetry', 'short', { qos: 1, properties: { messageExpiryInterval: 2 } })
    await dev.publishAsync('devices/3/telemetry', 'long', { qos: 1, properties: { messageExpiryInterval: 600 } })
    // Expiry is wall-clock time in the agent: let the short one's lifetime pass.
    await waitFor(() => Date.now() > sentAt + 3_000, 10_000, "the short message's lifetime to pass")
    proxy.unblock()
    await waitFor(() => got.some((m) => m.topic === 'e2e/devices/3/telemetry'), 20_000, 'the live message upstream')
    assert.deepEqual(
      got.map((m) => m.topic).filter((x) => x.startsWith('e2e/devices/2') || x.startsWith('e2e/devices/3')),
      ['e2e/devices/3/telemetry'],
    )
    const expiry = got.find((m) => m.topic === 'e2e/devices/3/telemetry')?.properties?.['messageExpiryInterval']
    assert.ok(typeof expiry === 'number' && expiry < 600 && expiry > 500, `remaining lifetime, got ${String(expiry)}`)
    await waitFor(
      async () => ((await agent.status())['upstreams'][0].drops['expired'] ?? 0) === before + 1,
      10_000,
      'the expired message counted',
    )
  },
)

test('a command from the upstream reaches an MQTT 5 device with its properties', { skip: missing }, async (t) => {
  const dev = await device(t, 'dev-cmd')
  await dev.subscribeAsync('devices/9/cmd', { qos: 1 })
  const got = recorder(dev)
  await waitFor(
    async () => {
      await site.publishAsync('e2e/devices/9/cmd', 'open', {
        qos: 1,
        properties: {
          contentType: 'text/plain',
          responseTopic: 'e2e/acks/9',
          correlationData: CORRELATION,
          userProperties: { operator: 'j.doe' },
        },
      })
      return got.length > 0
    },
    15_000,
    'the command at the device',
    300,
  )
  const p = got[0]?.properties ?? {}
  assert.equal(got[0]?.payload.toString(), 'open')
  assert.equal(p['contentType'], 'text/plain')
  assert.equal(p['responseTopic'], 'e2e/acks/9')
  assert.equal((p['correlationData'] as Buffer).toString('hex'), CORRELATION.toString('hex'))
  assert.equal((p['userProperties'] as Record<string, unknown>)['operator'], 'j.doe')
})

test('a command with properties still reaches an MQTT 3.1.1 device, without them', { skip: missing }, async (t) => {
  const dev = await client(t, agent.mqttUrl, { clientId: 'dev-cmd-v4' })
  await dev.subscribeAsync('devices/8/cmd', { qos: 1 })
  const got = recorder(dev)
  await waitFor(
    async () => {
      await site.publishAsync('e2e/devices/8/cmd', 'close', {
        qos: 1,
        properties: {
          contentType: 'text/plain',
          correlationData: CORRELATION,
          userProperties: { operator: 'j.doe' },
          messageExpiryInterval: 60,
        },
      })
      return got.length > 0
    },
    15_000,
    'the command at the 3.1.1 device',
    300,
  )
  assert.equal(got[0]?.topic, 'devices/8/cmd')
  assert.equal(got[0]?.payload.toString(), 'close')
  assert.equal(got[0]?.properties, undefined)
})

test(
  'a device using a topic alias is captured under the real topic; the alias stays on its connection',
  { skip: missing },
  async (t) => {
    const dev = await device(t, 'dev-alias')
    const got = recorder(site)
    await dev.publishAsync('devices/4/telemetry', 'first', { qos: 1, properties: { topicAlias: 1 } })
    await dev.publishAsync('', 'second', { qos: 1, properties: { topicAlias: 1, contentType: 'text/plain' } })
    await waitFor(() => got.filter((m) => m.topic === 'e2e/devices/4/telemetry').length >= 2, 15_000, 'both upstream')
    const mine = got.filter((m) => m.topic === 'e2e/devices/4/telemetry')
    assert.deepEqual(
      mine.map((m) => m.payload.toString()),
      ['first', 'second'],
    )
    assert.equal(mine[1]?.properties?.['contentType'], 'text/plain')
    for (const m of mine) assert.equal(m.properties?.['topicAlias'], undefined)
  },
)
