// The real agent bridging to a real Mosquitto (Debian's) on loopback.
//
// Glossary
//   upstream  Mosquitto on a free 127.0.0.1 port: the next Purdue level up
//   agent     dist/agent/main.js with an `upstreams` entry pointing there
//   device    an mqtt.js client of the agent's local broker (MQTT 3.1.1)
//   observer  an mqtt.js client of the upstream (MQTT 5), playing the site
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import mqtt, { type MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { collectMessages, nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'
import { mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'
import { startProxy } from '../../helpers/tcp-proxy.js'

const missing = mosquittoMissing()
const scope = fileScope()
let upstream: RunningMosquitto
let agent: RunningAgent
let observer: MqttClient

const FAST_RECONNECT = { minMs: 200, maxMs: 1000, resetAfterMs: 2000, probeIntervalMs: 200 }

function upstreamConfig(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstreams: [
      {
        name: 'site',
        url,
        keepaliveSec: 5,
        reconnect: FAST_RECONNECT,
        rules: [
          { topic: 'devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: 'site-a/line-3/' },
          { topic: 'q/#', direction: 'out', qos: 2, remotePrefix: 'site-a/line-3/' },
          { topic: 'devices/+/cmd', direction: 'in', qos: 1, remotePrefix: 'site-a/line-3/' },
        ],
        ...extra,
      },
    ],
  }
}

before(async () => {
  if (missing !== undefined) return
  upstream = await startMosquitto(
    scope,
    process.env['EDGE_TEST_MOSQUITTO_DEBUG'] === '1' ? { tuning: ['log_type all'] } : {},
  )
  agent = await startAgent(scope, { config: upstreamConfig(upstream.url) })
  await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, "the agent's 'upstream connected'")
  observer = await client(scope, upstream.url, { protocolVersion: 5, clientId: 'observer' })
  await observer.subscribeAsync('site-a/#', { qos: 2 })
})

test('forwards matching topics upward with the prefix remapped, and nothing else', { skip: missing }, async (t) => {
  const device = await client(t, agent.mqttUrl, { clientId: 'dev-fwd' })
  const got = nextMessage(observer, 'site-a/line-3/devices/7/telemetry')
  const stray: string[] = []
  const onStray = (topic: string): void => {
    if (topic.includes('other')) stray.push(topic)
  }
  observer.on('message', onStray)
  t.after(() => observer.off('message', onStray))
  await device.publishAsync('other/7/telemetry', 'no', { qos: 1 })
  await device.publishAsync('devices/7/telemetry', '21.5', { qos: 1 })
  const m = await got
  assert.equal(m.payload.toString(), '21.5')
  // A later message on the same link arrived: an earlier stray one would have come first.
  assert.deepEqual(stray, [])
})

test('forwards QoS 0, 1 and 2 at the lower of the message QoS and the rule QoS', { skip: missing }, async (t) => {
  const device = await client(t, agent.mqttUrl, { clientId: 'dev-qos' })
  const q = collectMessages(observer, 3, (topic) => topic.startsWith('site-a/line-3/q/'), 10_000)
  await device.publishAsync('q/0', 'zero', { qos: 0 })
  await device.publishAsync('q/1', 'one', { qos: 1 })
  await device.publishAsync('q/2', 'two', { qos: 2 })
  const byTopic = Object.fromEntries((await q).map((m) => [m.topic, m.qos]))
  assert.deepEqual(byTopic, { 'site-a/line-3/q/0': 0, 'site-a/line-3/q/1': 1, 'site-a/line-3/q/2': 2 })
  const capped = nextMessage(observer, 'site-a/line-3/devices/2/telemetry')
  await device.publishAsync('devices/2/telemetry', 'x', { qos: 2 })
  assert.equal((await capped).qos, 1, 'rule QoS 1 caps a QoS 2 message')
})

test('a retained device message is retained upstream', { skip: missing }, async (t) => {
  const device = await client(t, agent.mqttUrl, { clientId: 'dev-retain' })
  const live = nextMessage(observer, 'site-a/line-3/devices/r1/telemetry')
  await device.publishAsync('devices/r1/telemetry', 'kept', { qos: 1, retain: true })
  await live
  const late = await client(t, upstream.url, { protocolVersion: 5, clientId: 'late-observer' })
  const retained = nextMessage(late, 'site-a/line-3/devices/r1/telemetry')
  await late.subscribeAsync('site-a/line-3/devices/r1/telemetry', { qos: 1 })
  const m = await retained
  assert.equal(m.payload.toString(), 'kept')
  assert.equal(m.retain, true)
})

test('an in rule delivers a command from the upstream to the device, remapped', { skip: missing }, async (t) => {
  const device = await client(t, agent.mqttUrl, { clientId: 'dev-cmd' })
  await device.subscribeAsync('devices/9/cmd', { qos: 1 })
  const cmd = nextMessage(device, 'devices/9/cmd')
  await observer.publishAsync('site-a/line-3/devices/9/cmd', 'open-valve', { qos: 1 })
  const m = await cmd
  assert.equal(m.payload.toString(), 'open-valve')
  // and the upstream message is not echoed upward again by any rule
  const status = await agent.status()
  assert.ok((status['upstreams'][0].totals.received as number) >= 1)
})

test(
  'status and /metrics show the upstream: connected, since when, in flight, backlog, rates, drops',
  { skip: missing },
  async () => {
    const s = await agent.status()
    const u = s['upstreams'][0]
    assert.equal(u.name, 'site')
    assert.equal(u.connected, true)
    assert.equal(u.protocolVersion, 5)
    assert.ok(!Number.isNaN(Date.parse(u.since)))
    assert.equal(typeof u.inflight, 'number')
    assert.ok(u.window >= 1)
    assert.equal(typeof u.backlog.depth, 'number')
    assert.equal(typeof u.rates.sentPerSec, 'number')
    assert.equal(typeof u.drops, 'object')
    const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
    assert.match(metrics, /^edge_agent_upstream_connected\{upstream="site"\} 1$/m)
    assert.match(metrics, /^edge_agent_upstream_backlog_messages\{upstream="site"\} \d+$/m)
    assert.match(metrics, /^edge_agent_upstream_messages_acked_total\{upstream="site"\} \d+$/m)
  },
)

test(
  'publishes a retained birth message on connect and the Will "offline" when the agent dies',
  { skip: missing },
  async (t) => {
    const watcher = await client(t, upstream.url, { protocolVersion: 5, clientId: 'status-watcher' })
    const birth = nextMessage(watcher, 'edge-agent/birth-site/status', 15_000)
    await watcher.subscribeAsync('edge-agent/birth-site/status', { qos: 1 })
    const a = await startAgent(t, {
      config: { site: { name: 'birth-site', level: 2 }, ...upstreamConfig(upstream.url, { clientId: 'birth-agent' }) },
    })
    const online = JSON.parse((await birth).payload.toString()) as Record<string, unknown>
    assert.equal(online['state'], 'online')
    assert.equal(online['site'], 'birth-site')
    const will = nextMessage(watcher, (topic) => topic === 'edge-agent/birth-site/status', 30_000)
    a.proc.kill('SIGKILL')
    const offline = await will
    assert.equal((JSON.parse(offline.payload.toString()) as Record<string, unknown>)['state'], 'offline')
  },
)

test('an MQTT 3.1.1 upstream works both ways', { skip: missing }, async (t) => {
  const a = await startAgent(t, {
    config: {
      site: { name: 'v311', level: 2 },
      ...upstreamConfig(upstream.url, { protocolVersion: 4, clientId: 'agent-v311' }),
    },
  })
  await a.waitForLog(
    (l) => l.msg === 'upstream connected' && l['protocolVersion'] === 4,
    15_000,
    'a 3.1.1 upstream connection',
  )
  const device = await client(t, a.mqttUrl, { clientId: 'dev-311' })
  await device.subscribeAsync('devices/31/cmd', { qos: 1 })
  const up = nextMessage(observer, 'site-a/line-3/devices/31/telemetry')
  await device.publishAsync('devices/31/telemetry', 'v4', { qos: 1 })
  assert.equal((await up).payload.toString(), 'v4')
  const down = nextMessage(device, 'devices/31/cmd')
  await observer.publishAsync('site-a/line-3/devices/31/cmd', 'stop', { qos: 1 })
  assert.equal((await down).payload.toString(), 'stop')
})

test('a link reset under load loses nothing and resends at most the in-flight window', { skip: missing }, async (t) => {
  const proxy = await startProxy(t, upstream.port)
  const a = await startAgent(t, {
    config: {
      site: { name: 'resets', level: 2 },
      ...upstreamConfig(proxy.url, { clientId: 'agent-resets', inflight: 20 }),
    },
  })
  await a.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'upstream connected')
  const watcher = await client(t, upstream.url, { protocolVersion: 5, clientId: 'reset-watcher' })
  await watcher.subscribeAsync('site-a/line-3/devices/reset/telemetry', { qos: 1 })
  const total = 600
  const seen = new Map<number, number>()
  const all = new Promise<void>((resolve) => {
    watcher.on('message', (topic, payload) => {
      if (topic !== 'site-a/line-3/devices/reset/telemetry') return
      const n = Number(payload.toString())
      seen.set(n, (seen.get(n) ?? 0) + 1)
      if (seen.size === total) resolve()
    })
  })
  const device = await client(t, a.mqttUrl, { clientId: 'dev-reset' })
  const resets = 3
  let cuts = 0
  for (let i = 0; i < total; i++) {
    if (i > 0 && i % (total / (resets + 1)) === 0 && cuts < resets) {
      const back = a.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'reconnect after a cut', false)
      proxy.cut()
      cuts++
      // keep publishing while the bridge reconnects: those messages are buffered
      void back
    }
    await device.publishAsync('devices/reset/telemetry', String(i), { qos: 1 })
  }
  await withTimeout(all, 30_000, `all ${total} messages upstream (have ${seen.size})`)
  const duplicates = [...seen.values()].reduce((n, c) => n + c - 1, 0)
  assert.equal(seen.size, total, 'nothing lost')
  assert.ok(duplicates <= 20 * cuts, `duplicates ${duplicates} ≤ window 20 × ${cuts} resets`)
  t.diagnostic(`link resets ${cuts}, duplicates ${duplicates}`)
})

test(
  'reconnects within a second of the upstream coming back, and delivers what was buffered meanwhile',
  { skip: missing },
  async (t) => {
    const topic = 'site-a/line-3/devices/outage/telemetry'
    // A persistent observer session: Mosquitto queues for it across its own restart.
    const before = await client(t, upstream.url, { clientId: 'outage-observer', clean: false })
    await before.subscribeAsync(topic, { qos: 1 })
    await before.endAsync()
    const lost = agent.waitForLog(
      (l) => l.msg === 'upstream connection lost',
      15_000,
      'upstream connection lost',
      false,
    )
    await upstream.stop()
    await lost
    const device = await client(t, agent.mqttUrl, { clientId: 'dev-outage' })
    for (let i = 0; i < 50; i++) await device.publishAsync('devices/outage/telemetry', String(i), { qos: 1 })
    await waitFor(
      async () => (await agent.status())['upstreams'][0].backlog.depth >= 50,
      5_000,
      'the 50 messages in the buffer',
    )
    const reconnected = agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'reconnect', false)
    await upstream.start()
    const upAt = Date.now()
    await reconnected
    const took = Date.now() - upAt
    t.diagnostic(`reconnected ${took} ms after the upstream was running`)
    assert.ok(took <= 1_000, `reconnect took ${took} ms`)
    // Listen before CONNACK: the queued messages arrive right after it.
    const after = mqtt.connect(upstream.url, { clientId: 'outage-observer', clean: false, reconnectPeriod: 0 })
    after.on('error', () => undefined)
    const got = await collectMessages(after, 50, (x) => x === topic, 15_000).catch(async (err: unknown) => {
      throw new Error(
        `${String(err)}; agent: ${JSON.stringify((await agent.status())['upstreams'][0].totals)}\n${upstream.log().slice(-3000)}`,
      )
    })
    const values = got.map((m) => Number(m.payload.toString()))
    assert.deepEqual(
      values,
      Array.from({ length: 50 }, (_, i) => i),
      'all of them, in order',
    )
    await after.endAsync()

    // Again at once: a connection that was up only briefly must not fall back to a long backoff.
    const lostAgain = agent.waitForLog((l) => l.msg === 'upstream connection lost', 15_000, 'the second loss', false)
    await upstream.stop(true)
    await lostAgain
    const backAgain = agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'the second reconnect', false)
    await upstream.start()
    const upAgainAt = Date.now()
    await backAgain
    const tookAgain = Date.now() - upAgainAt
    t.diagnostic(`after a short-lived connection: reconnected ${tookAgain} ms after the upstream was running`)
    assert.ok(tookAgain <= 1_000, `second reconnect took ${tookAgain} ms`)
  },
)
