// MQTT 5 properties of devices through the bridge: the capture stores them
// with the device's expiry, the drain sends them with the remaining lifetime
// and drops what expired (a counted drop, also on a resend), and commands
// from the upstream reach the local publish with their properties.
//
// Glossary
//   server  the test's side of a duplexPair, playing the upstream packet by packet
//   clock   fakeClock injected into store, session and drain: expiry moves with it
import assert from 'node:assert/strict'
import { duplexPair, type Duplex } from 'node:stream'
import { describe, test, type TestContext } from 'node:test'
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet'
import { MemoryStore, type MessageProperties } from '../../../src/buffer/index.js'
import { Capture, type CapturedPublish } from '../../../src/bridge/capture.js'
import { Drain, USER_PROP_ID, USER_PROP_VIA } from '../../../src/bridge/drain.js'
import { EchoGuard } from '../../../src/bridge/echo-guard.js'
import { Inbound, type LocalMessage } from '../../../src/bridge/inbound.js'
import { MqttSession } from '../../../src/bridge/mqtt-session.js'
import { BridgeRule } from '../../../src/bridge/rule.js'
import type { UpstreamConnection } from '../../../src/bridge/upstream-connection.js'
import { type Clock, fakeClock, silentLogger } from '../../helpers/buffer-support.js'
import { waitFor } from '../../helpers/wait.js'

const CORRELATION = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x00])

/** Everything an MQTT 5 device may put on a PUBLISH, hop-by-hop properties included. */
const DEVICE_PROPERTIES: NonNullable<IPublishPacket['properties']> = {
  payloadFormatIndicator: true,
  contentType: 'application/json',
  responseTopic: 'plant/a/reply/dev-1',
  correlationData: CORRELATION,
  userProperties: { unit: '°C', tag: ['x', 'y', 'x'] },
  topicAlias: 3,
  subscriptionIdentifier: 9,
}

async function startedStore(t: TestContext, clock: Clock): Promise<MemoryStore> {
  const store = new MemoryStore({ now: clock })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  return store
}

describe('capture', () => {
  function capture(store: MemoryStore, clock: Clock, rule: Parameters<typeof BridgeRule.parse>[0]): Capture {
    return new Capture({
      queue: 'up',
      store,
      rules: [BridgeRule.parse(rule)],
      connected: () => false,
      drop: () => undefined,
      now: clock,
    })
  }
  const publish = (properties?: CapturedPublish['properties']): CapturedPublish => ({
    topic: 'site/sensors/t1',
    payload: Buffer.from('{"v":1}'),
    qos: 1,
    retain: false,
    ...(properties === undefined ? {} : { properties }),
  })

  test('stores the end-to-end properties unchanged under the remapped topic, never topic alias or subscription id', async (t) => {
    const clock = fakeClock()
    const store = await startedStore(t, clock)
    const c = capture(store, clock, {
      topic: 'sensors/#',
      direction: 'out',
      localPrefix: 'site/',
      remotePrefix: 'plant/a/',
    })
    await c.capture(publish(DEVICE_PROPERTIES))
    const [m] = await store.takeBatch('up', 10)
    assert.equal(m?.topic, 'plant/a/sensors/t1')
    const p = m?.properties as MessageProperties & Record<string, unknown>
    assert.deepEqual(Object.keys(p).sort(), [
      'contentType',
      'correlationData',
      'payloadFormatIndicator',
      'responseTopic',
      'userProperties',
    ])
    assert.equal(p.contentType, 'application/json')
    assert.equal(p.payloadFormatIndicator, true)
    assert.equal(p.responseTopic, 'plant/a/reply/dev-1', 'the response topic is not remapped')
    assert.equal(Buffer.from(p.correlationData ?? []).toString('hex'), CORRELATION.toString('hex'))
    assert.deepEqual({ ...p.userProperties }, { unit: '°C', tag: ['x', 'y', 'x'] })
  })

  test("the device's Message Expiry Interval and the rule's ttlSec: the earlier wins", async (t) => {
    const clock = fakeClock()
    const cases: Array<{ ttlSec: number; expiry: number | undefined; want: number | null }> = [
      { ttlSec: 60, expiry: 10, want: 10_000 },
      { ttlSec: 60, expiry: 600, want: 60_000 },
      { ttlSec: 0, expiry: 30, want: 30_000 },
      { ttlSec: 60, expiry: 0, want: 60_000 }, // 0 = no expiry, as Mosquitto reads it
      { ttlSec: 0, expiry: undefined, want: null },
    ]
    for (const { ttlSec, expiry, want } of cases) {
      const store = await startedStore(t, clock)
      const c = capture(store, clock, { topic: 'site/#', direction: 'out', ttlSec })
      await c.capture(publish(expiry === undefined ? { contentType: 'x' } : { messageExpiryInterval: expiry }))
      const [m] = await store.takeBatch('up', 10)
      assert.equal(m?.expiresAt, want === null ? null : clock() + want, `ttlSec ${ttlSec}, expiry ${String(expiry)}`)
      if (expiry !== undefined) assert.equal(m?.properties, undefined, 'the interval itself is not a stored property')
    }
  })

  test('a 3.1.1 device stores no properties', async (t) => {
    const clock = fakeClock()
    const store = await startedStore(t, clock)
    await capture(store, clock, { topic: 'site/#', direction: 'out', ttlSec: 0 }).capture(publish())
    const [m] = await store.takeBatch('up', 10)
    assert.equal(m?.properties, undefined)
    assert.equal(m?.expiresAt, null)
  })
})

// ---------------------------------------------------------------------------
// Drain over a real MqttSession, against a scripted upstream.

interface Upstream {
  next(ms?: number): Promise<Packet>
  send(p: Packet): void
  end(): void
}

function upstream(stream: Duplex, protocolVersion: 4 | 5): Upstream {
  const parser = mqttPacket.parser({ protocolVersion })
  const queue: Packet[] = []
  let wake: (() => void) | undefined
  parser.on('packet', (p: Packet) => {
    queue.push(p)
    wake?.()
  })
  stream.on('data', (b: Buffer) => parser.parse(b))
  stream.on('error', () => undefined)
  const arrival = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (queue.length > 0) return resolve(true)
      const timer = setTimeout(() => resolve(false), ms)
      wake = () => {
        clearTimeout(timer)
        wake = undefined
        resolve(true)
      }
    })
  return {
    async next(ms = 5_000) {
      if (!(await arrival(ms))) throw new Error(`no packet from the bridge within ${ms} ms`)
      return queue.shift() as Packet
    },
    send: (p) => mqttPacket.writeToStream(p, stream, { protocolVersion }),
    end: () => stream.end(),
  }
}

async function connect(session: MqttSession, version: 4 | 5, sessionPresent: boolean): Promise<Upstream> {
  const [client, srv] = duplexPair()
  const up = upstream(srv, version)
  const connected = session.connect(client)
  assert.equal((await up.next()).cmd, 'connect')
  up.send({ cmd: 'connack', sessionPresent, returnCode: 0, reasonCode: 0 })
  await connected
  return up
}

async function nextPublish(up: Upstream): Promise<IPublishPacket> {
  const p = await up.next()
  if (p.cmd !== 'publish') assert.fail(`expected PUBLISH, got ${p.cmd}`)
  return p
}

function setup(t: TestContext, version: 4 | 5, window: number) {
  const clock = fakeClock()
  const store = new MemoryStore({ now: clock })
  const session = new MqttSession({
    protocolVersion: version,
    clientId: 'bridge-1',
    keepaliveSec: 0,
    cleanStart: false,
    sessionExpirySec: 600,
    bridgeFlag: false,
    connectTimeoutMs: 5_000,
    maxInflight: window,
    onMessage: async () => undefined,
    logger: silentLogger(),
    now: clock,
  })
  const drain = new Drain({
    queue: 'up',
    store,
    conn: { session } as unknown as UpstreamConnection,
    version,
    agent: { id: 'agent-1', site: 'plant-a' },
    mayForward: () => true,
    bucket: undefined,
    echoRules: new Set(),
    echo: new EchoGuard({ windowMs: 30_000, maxEntries: 100, now: clock }),
    drop: () => undefined,
    logger: silentLogger(),
    now: clock,
  })
  store.on('appended', () => drain.kick())
  t.after(async () => {
    drain.stop()
    session.destroy()
    await store.stop()
  })
  return { clock, store, session, drain }
}

const append = (store: MemoryStore, topic: string, extra: Partial<Parameters<MemoryStore['append']>[0]> = {}) =>
  store.append({ queue: 'up', topic, payload: Buffer.from(topic), qos: 1, rule: 'r1', ...extra })

describe('drain', () => {
  test('MQTT 5: the device properties go upstream unchanged with ours and the remaining lifetime in whole seconds', async (t) => {
    const { clock, store, session, drain } = setup(t, 5, 10)
    await store.start(AbortSignal.timeout(5000))
    await append(store, 'a', {
      expiresAt: clock() + 60_000,
      properties: {
        contentType: 'application/json',
        payloadFormatIndicator: true,
        responseTopic: 'plant/a/reply/dev-1',
        correlationData: CORRELATION,
        userProperties: { unit: '°C', tag: ['x', 'y', 'x'] },
      },
    })
    await append(store, 'plain')
    clock.advance(10_500)
    const up = await connect(session, 5, false)
    drain.kick()
    const a = await nextPublish(up)
    const p = a.properties ?? {}
    assert.equal(a.topic, 'a')
    assert.equal(p.messageExpiryInterval, 50, '49.5 s left, rounded up')
    assert.equal(p.contentType, 'application/json')
    assert.equal(p.payloadFormatIndicator, true)
    assert.equal(p.responseTopic, 'plant/a/reply/dev-1')
    assert.equal(p.correlationData?.toString('hex'), CORRELATION.toString('hex'))
    assert.deepEqual(
      { ...p.userProperties },
      { unit: '°C', tag: ['x', 'y', 'x'], [USER_PROP_VIA]: 'agent-1', [USER_PROP_ID]: `plant-a/${String(1)}` },
    )
    const plain = await nextPublish(up)
    assert.equal(plain.topic, 'plain')
    assert.deepEqual(Object.keys(plain.properties ?? {}), ['userProperties'], 'no expiry, no device properties')
  })

  test('MQTT 5: a via from an agent below is kept and ours added', async (t) => {
    const { store, session, drain } = setup(t, 5, 10)
    await store.start(AbortSignal.timeout(5000))
    await append(store, 'a', { properties: { userProperties: { [USER_PROP_VIA]: 'agent-below' } } })
    const up = await connect(session, 5, false)
    drain.kick()
    const a = await nextPublish(up)
    assert.deepEqual(a.properties?.userProperties?.[USER_PROP_VIA], ['agent-below', 'agent-1'])
  })

  for (const version of [5, 4] as const) {
    test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a row that expired while read ahead is not sent, a counted drop 'expired'`, async (t) => {
      // Window 1: 'first' is in flight, 'short' waits read ahead until its PUBACK.
      const { clock, store, session } = setup(t, version, 1)
      await store.start(AbortSignal.timeout(5000))
      const up = await connect(session, version, false)
      await append(store, 'first')
      await append(store, 'short', {
        expiresAt: clock() + 5_000,
        properties: { contentType: 'text/plain' },
      })
      const first = await nextPublish(up)
      if (version === 4) assert.equal(first.properties, undefined, 'no properties over 3.1.1')
      await waitFor(() => store.stats().totals.inFlight === 2, 5_000, 'the second row read ahead')
      clock.advance(5_000)
      up.send({ cmd: 'puback', messageId: first.messageId ?? 0 })
      await waitFor(() => store.stats().drops.byReason.expired === 1, 5_000, 'the expired row dropped')
      assert.deepEqual(store.stats().drops.byRule['r1'], { expired: 1 })
      assert.equal(store.stats().totals.messages, 0)
      await append(store, 'after')
      assert.equal((await nextPublish(up)).topic, 'after', 'the expired row was never sent')
    })
  }

  test('a message in flight across an outage is not sent again once expired; one still alive goes with what is left', async (t) => {
    const { clock, store, session, drain } = setup(t, 5, 10)
    await store.start(AbortSignal.timeout(5000))
    const up1 = await connect(session, 5, false)
    await append(store, 'short', { expiresAt: clock() + 5_000 })
    await append(store, 'long', { expiresAt: clock() + 60_000 })
    drain.kick()
    assert.equal((await nextPublish(up1)).properties?.messageExpiryInterval, 5)
    assert.equal((await nextPublish(up1)).properties?.messageExpiryInterval, 60)
    const closed = new Promise((r) => session.once('close', r))
    up1.end()
    await closed
    clock.advance(6_000)
    const up2 = await connect(session, 5, true)
    const resent = await nextPublish(up2)
    assert.equal(resent.topic, 'long')
    assert.equal(resent.dup, true)
    assert.equal(resent.properties?.messageExpiryInterval, 54)
    await waitFor(() => store.stats().drops.byReason.expired === 1, 5_000, 'the expired in-flight row dropped')
    up2.send({ cmd: 'puback', messageId: resent.messageId ?? 0 })
    await waitFor(() => store.stats().totals.messages === 0, 5_000, 'the live row acknowledged')
    await append(store, 'after')
    assert.equal((await nextPublish(up2)).topic, 'after', 'the expired row was never sent')
  })
})

describe('inbound', () => {
  test('the upstream properties reach the local publish, without topic alias or subscription identifier', async () => {
    const delivered: LocalMessage[] = []
    const inbound = new Inbound({
      rules: [BridgeRule.parse({ topic: 'cmd/#', direction: 'in', remotePrefix: 'plant/a/' })],
      agentId: 'agent-1',
      version: 5,
      echo: new EchoGuard({ windowMs: 30_000, maxEntries: 100, now: Date.now }),
      publishLocal: async (m) => {
        delivered.push(m)
      },
      drop: () => undefined,
      logger: silentLogger(),
    })
    const { topicAlias: _a, subscriptionIdentifier: _s, ...endToEnd } = DEVICE_PROPERTIES
    await inbound.deliver({
      topic: 'plant/a/cmd/valve',
      payload: Buffer.from('open'),
      qos: 1,
      retain: false,
      userProperties: DEVICE_PROPERTIES.userProperties,
      properties: { ...DEVICE_PROPERTIES, messageExpiryInterval: 30 },
    })
    await inbound.deliver({ topic: 'plant/a/cmd/plain', payload: Buffer.from('x'), qos: 1, retain: false })
    assert.equal(delivered[0]?.topic, 'cmd/valve')
    assert.deepEqual(delivered[0]?.properties, { ...endToEnd, messageExpiryInterval: 30 })
    assert.equal(delivered[1]?.properties, undefined)
  })
})
