// MQTT 5 properties of devices through the buffer and the bridge, against a
// real Mosquitto 2 upstream: the Bridge in-process with a real SqliteStore,
// fed through its capture (the entry the local broker's hook calls for every
// device PUBLISH), a TCP proxy to cut the upstream, and an mqtt.js MQTT 5
// client at Mosquitto to see what arrives.
//
// Glossary
//   upstream  Mosquitto on a free 127.0.0.1 port, reached through `proxy`
//   clock     Date.now() + an offset the test moves: the bridge and store's
//             notion of time (Mosquitto keeps its own, it is only sent intervals)
//   observer  an mqtt.js MQTT 5 client of Mosquitto, playing the site
//   local     what the bridge handed to the local broker's publish
import { before, describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import type { MqttClient, IClientPublishOptions } from 'mqtt'
import pino from 'pino'
import { SqliteStore } from '../../../src/buffer/index.js'
import { Bridge, type LocalMessage } from '../../../src/bridge/index.js'
import { USER_PROP_ID, USER_PROP_VIA } from '../../../src/bridge/drain.js'
import type { CapturedPublish } from '../../../src/bridge/capture.js'
import { fileScope } from '../../helpers/scope.js'
import { mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'
import { client } from '../../helpers/mqtt-clients.js'
import { startProxy, type TcpProxy } from '../../helpers/tcp-proxy.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { upstreamOptions } from '../../helpers/upstream-options.js'
import { waitFor, type ReceivedMessage } from '../../helpers/wait.js'

const missing = mosquittoMissing()
const scope = fileScope()
const silent = pino({ level: 'silent' })
let mosquitto: RunningMosquitto

/** 0x00 and bytes that are not UTF-8: must arrive exactly. */
const CORRELATION = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0x00])

before(async () => {
  if (missing !== undefined) return
  mosquitto = await startMosquitto(scope)
})

interface Harness {
  readonly bridge: Bridge
  readonly store: SqliteStore
  readonly proxy: TcpProxy
  readonly local: LocalMessage[]
  readonly clock: { (): number; advance(ms: number): void }
  capture(p: CapturedPublish): Promise<void>
}

async function harness(t: TestContext, protocolVersion: 4 | 5, name: string): Promise<Harness> {
  let offset = 0
  const clock = Object.assign(() => Date.now() + offset, {
    advance: (ms: number) => {
      offset += ms
    },
  })
  const proxy = await startProxy(t, mosquitto.port)
  const store = new SqliteStore({
    dataDir: tmpDir(t, 'edge-v5props-'),
    logger: silent,
    now: clock,
    minFreeBytes: 0,
    batchWindowMs: 1,
  })
  await store.start(AbortSignal.timeout(10_000))
  const local: LocalMessage[] = []
  const bridge = new Bridge({
    upstream: upstreamOptions({
      name: 'site',
      url: proxy.url,
      protocolVersion,
      clientId: `bridge-${name}`,
      // Long enough that moving the clock never looks like a dead link.
      keepaliveSec: 120,
      reconnect: { minMs: 50, maxMs: 300, resetAfterMs: 1000, probeIntervalMs: 50 },
      rules: [
        { topic: 'devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: `${name}/`, ttlSec: 0 },
        { topic: 'cmd/#', direction: 'in', qos: 1, remotePrefix: `${name}/` },
        { topic: 'reply/#', direction: 'in', qos: 1, remotePrefix: `${name}/` },
      ],
    }),
    agent: { id: `agent-${name}`, site: 'cell-2', level: 2, version: 'test' },
    store,
    publishLocal: async (m) => {
      local.push(m)
    },
    logger: silent,
    identityWaitMs: 50,
    stopGraceMs: 500,
    now: clock,
  })
  t.after(async () => {
    await bridge.stop()
    await store.stop()
  })
  const connected = new Promise((r) => bridge.once('connected', r))
  await bridge.start(new AbortController().signal)
  await connected
  return {
    bridge,
    store,
    proxy,
    local,
    clock,
    capture: async (p) => {
      await bridge.capture(p)
    },
  }
}

const DEVICE = {
  payloadFormatIndicator: true,
  contentType: 'application/json; charset=utf-8',
  responseTopic: 'reply-space/dev-7',
  correlationData: CORRELATION,
  userProperties: { unit: '°C', tag: ['x', 'y', 'x'], line: '3' },
  // Hop-by-hop: must never reach the upstream.
  topicAlias: 4,
  subscriptionIdentifier: 11,
}

function telemetry(properties: CapturedPublish['properties'], n = 7): CapturedPublish {
  return { topic: `devices/${n}/telemetry`, payload: Buffer.from('{"t":21.5}'), qos: 1, retain: false, properties }
}

async function observer(t: TestContext, filter: string, id: string): Promise<MqttClient> {
  const c = await client(t, mosquitto.url, { protocolVersion: 5, clientId: id })
  await c.subscribeAsync(filter, { qos: 1 })
  return c
}

/** Messages of `filter` in arrival order, with their properties (nextMessage drops the packet). */
function recorder(c: MqttClient): Array<ReceivedMessage & { properties: Record<string, unknown> | undefined }> {
  const got: Array<ReceivedMessage & { properties: Record<string, unknown> | undefined }> = []
  c.on('message', (topic, payload, packet) => {
    got.push({ topic, payload, qos: packet.qos, retain: packet.retain, properties: packet.properties })
  })
  return got
}

describe('MQTT 5 properties through the buffer and the bridge (real Mosquitto)', { skip: missing }, () => {
  test('a message with every property, stored during an outage, arrives unchanged with the remaining expiry', async (t) => {
    const h = await harness(t, 5, 'v5all')
    const obs = await observer(t, 'v5all/#', 'obs-v5all')
    const got = recorder(obs)
    h.proxy.block()
    await waitFor(() => !h.bridge.status().connected, 10_000, 'the bridge to see the outage')
    await h.capture(telemetry({ ...DEVICE, messageExpiryInterval: 3600 }))
    assert.equal(h.store.stats().totals.messages, 1, 'stored while the upstream is away')
    h.clock.advance(100_000)
    h.proxy.unblock()
    await waitFor(() => got.length >= 1, 15_000, 'the message at Mosquitto')
    const m = got[0]
    assert.equal(m?.topic, 'v5all/devices/7/telemetry')
    assert.equal(m?.payload.toString(), '{"t":21.5}')
    const p = m?.properties ?? {}
    assert.equal(p['payloadFormatIndicator'], true)
    assert.equal(p['contentType'], 'application/json; charset=utf-8')
    assert.equal(p['responseTopic'], 'reply-space/dev-7')
    assert.equal((p['correlationData'] as Buffer).toString('hex'), CORRELATION.toString('hex'))
    const user = { ...(p['userProperties'] as Record<string, unknown>) }
    assert.equal(user[USER_PROP_VIA], 'agent-v5all')
    assert.match(String(user[USER_PROP_ID]), /^cell-2\/\d+$/)
    delete user[USER_PROP_VIA]
    delete user[USER_PROP_ID]
    assert.deepEqual(user, { unit: '°C', tag: ['x', 'y', 'x'], line: '3' })
    const expiry = p['messageExpiryInterval'] as number
    assert.ok(expiry <= 3500 && expiry > 3400, `remaining lifetime (3600 s less the 100 s spent stored), got ${expiry}`)
    assert.equal(p['topicAlias'], undefined)
    assert.equal(p['subscriptionIdentifier'], undefined)
  })

  test('a message that expired while stored is not delivered, and is counted as an expired drop', async (t) => {
    const h = await harness(t, 5, 'v5exp')
    const obs = await observer(t, 'v5exp/#', 'obs-v5exp')
    const got = recorder(obs)
    h.proxy.block()
    await waitFor(() => !h.bridge.status().connected, 10_000, 'the bridge to see the outage')
    await h.capture(telemetry({ messageExpiryInterval: 5, contentType: 'text/plain' }, 1))
    await h.capture(telemetry({ messageExpiryInterval: 60 }, 2))
    h.clock.advance(10_000)
    h.proxy.unblock()
    await waitFor(() => got.length >= 1, 15_000, 'the message still alive at Mosquitto')
    // Same rule, same priority: the expired one, captured first, would have come first.
    assert.deepEqual(
      got.map((m) => m.topic),
      ['v5exp/devices/2/telemetry'],
    )
    assert.ok((got[0]?.properties?.['messageExpiryInterval'] as number) <= 50)
    // The store counts a drop when its delete commits.
    await waitFor(() => h.store.stats().drops.byReason.expired === 1, 10_000, 'the expired drop counted')
    assert.equal(h.bridge.status().drops['expired'], 1, 'the bridge reports the drop')
  })

  test('over MQTT 3.1.1 the properties are dropped, and expiry still applies here', async (t) => {
    const h = await harness(t, 4, 'v4')
    const obs = await observer(t, 'v4/#', 'obs-v4')
    const got = recorder(obs)
    h.proxy.block()
    await waitFor(() => !h.bridge.status().connected, 10_000, 'the bridge to see the outage')
    await h.capture(telemetry({ ...DEVICE, messageExpiryInterval: 5 }, 1))
    await h.capture(telemetry({ ...DEVICE, messageExpiryInterval: 600 }, 2))
    h.clock.advance(10_000)
    h.proxy.unblock()
    await waitFor(() => got.length >= 1, 15_000, 'the message still alive at Mosquitto')
    assert.deepEqual(
      got.map((m) => m.topic),
      ['v4/devices/2/telemetry'],
    )
    const p = got[0]?.properties ?? {}
    for (const key of ['contentType', 'responseTopic', 'correlationData', 'userProperties', 'messageExpiryInterval'])
      assert.equal(p[key], undefined, `${key} not carried over 3.1.1`)
    await waitFor(() => h.store.stats().drops.byReason.expired === 1, 10_000, 'the expired drop counted')
  })

  test('a command from the upstream reaches the local publish with its properties', async (t) => {
    const h = await harness(t, 5, 'v5cmd')
    const site = await client(t, mosquitto.url, { protocolVersion: 5, clientId: 'site-v5cmd' })
    await waitFor(() => h.bridge.status().connected, 10_000, 'the bridge connected')
    const opts: IClientPublishOptions = {
      qos: 1,
      properties: {
        contentType: 'application/json',
        payloadFormatIndicator: true,
        responseTopic: 'v5cmd/acks/valve-3',
        correlationData: CORRELATION,
        userProperties: { operator: 'j.doe', reason: ['maintenance', 'scheduled'] },
        messageExpiryInterval: 300,
      },
    }
    // The bridge's subscription may still be on its way: send until one arrives.
    await waitFor(
      async () => {
        await site.publishAsync('v5cmd/cmd/valve-3', '{"open":true}', opts)
        return h.local.length > 0
      },
      15_000,
      'the command delivered locally',
      200,
    )
    const m = h.local[0]
    assert.equal(m?.topic, 'cmd/valve-3')
    const p = m?.properties
    assert.equal(p?.contentType, 'application/json')
    assert.equal(p?.payloadFormatIndicator, true)
    assert.equal(p?.responseTopic, 'v5cmd/acks/valve-3')
    assert.equal(p?.correlationData?.toString('hex'), CORRELATION.toString('hex'))
    assert.deepEqual({ ...p?.userProperties }, { operator: 'j.doe', reason: ['maintenance', 'scheduled'] })
    assert.ok((p?.messageExpiryInterval ?? 0) > 0 && (p?.messageExpiryInterval ?? 0) <= 300)
  })

  test('request/response across the bridge: the response to a device request comes back by an in rule', async (t) => {
    const h = await harness(t, 5, 'v5rr')
    const responder = await observer(t, 'v5rr/devices/+/telemetry', 'responder-v5rr')
    // The responder answers to the Response Topic with the Correlation Data, as MQTT 5 asks.
    responder.on('message', (_topic, _payload, packet) => {
      const rt = packet.properties?.responseTopic
      const correlationData = packet.properties?.correlationData
      if (rt === undefined || correlationData === undefined) return
      // A callback, not publishAsync: the test may end (and close the responder) before Mosquitto's PUBACK
      // for this reply arrives, and that must not become an unhandled rejection.
      responder.publish(rt, 'ack', { qos: 1, properties: { correlationData } }, () => undefined)
    })
    await waitFor(() => h.bridge.status().connected, 10_000, 'the bridge connected')
    // The device names the upstream topic of its reply (the in rule's remote prefix + topic).
    // Until the bridge's subscription is in place a response has no subscriber: ask until one comes back.
    await waitFor(
      async () => {
        await h.capture(telemetry({ responseTopic: 'v5rr/reply/dev-7', correlationData: CORRELATION }))
        return h.local.length > 0
      },
      15_000,
      'the response delivered locally',
      300,
    )
    assert.equal(h.local[0]?.topic, 'reply/dev-7')
    assert.equal(h.local[0]?.payload.toString(), 'ack')
    assert.equal(h.local[0]?.properties?.correlationData?.toString('hex'), CORRELATION.toString('hex'))
  })
})
