// The local broker with real clients (mqtt.js and Mosquitto's command line
// clients) against the real agent process.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect } from 'node:net'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client, mosquittoClient } from '../../helpers/mqtt-clients.js'
import { nextMessage, collectMessages, withTimeout } from '../../helpers/wait.js'

const scope = fileScope()
let shared: RunningAgent
// One agent for the whole file: the tests use distinct topics and client ids.
before(async () => {
  shared = await startAgent(scope, { ws: true })
})

for (const qos of [0, 1, 2] as const) {
  test(`delivers a QoS ${qos} publish to a QoS ${qos} subscriber`, async (t) => {
    const sub = await client(t, shared.mqttUrl)
    const pub = await client(t, shared.mqttUrl)
    await sub.subscribeAsync(`pubsub/qos${qos}`, { qos })
    const got = nextMessage(sub, `pubsub/qos${qos}`)
    await pub.publishAsync(`pubsub/qos${qos}`, `hello ${qos}`, { qos })
    const m = await got
    assert.equal(m.payload.toString(), `hello ${qos}`)
    assert.equal(m.qos, qos)
  })
}

test('matches + and # wildcards, and not what lies outside them', async (t) => {
  const sub = await client(t, shared.mqttUrl)
  const pub = await client(t, shared.mqttUrl)
  await sub.subscribeAsync(['wild/+/temp', 'wild/deep/#'], { qos: 1 })
  const got = collectMessages(sub, 3, (topic) => topic.startsWith('wild/'), 5_000)
  await pub.publishAsync('wild/a/temp', 'plus', { qos: 1 })
  await pub.publishAsync('wild/a/b/temp', 'must not match +', { qos: 1 })
  await pub.publishAsync('wild/deep', 'hash matches parent [MQTT-4.7.1-2]', { qos: 1 })
  await pub.publishAsync('wild/deep/x/y', 'hash', { qos: 1 })
  const topics = (await got).map((m) => m.topic)
  assert.deepEqual(topics.sort(), ['wild/a/temp', 'wild/deep', 'wild/deep/x/y'])
})

test('keeps a retained message for later subscribers and clears it with an empty payload', async (t) => {
  const pub = await client(t, shared.mqttUrl)
  await pub.publishAsync('retain/status', 'online', { qos: 1, retain: true })
  const late = await client(t, shared.mqttUrl)
  const got = nextMessage(late, 'retain/status')
  await late.subscribeAsync('retain/#', { qos: 1 })
  const m = await got
  assert.equal(m.payload.toString(), 'online')
  assert.equal(m.retain, true)

  await pub.publishAsync('retain/status', '', { qos: 1, retain: true })
  const later = await client(t, shared.mqttUrl)
  const granted = await later.subscribeAsync('retain/#', { qos: 1 })
  assert.equal(granted[0]?.qos, 1)
  // aedes sends retained messages right after SUBACK; a marker published
  // afterwards arrives behind any of them.
  const marker = nextMessage(later, 'retain/marker')
  await pub.publishAsync('retain/marker', 'm', { qos: 1 })
  let sawRetained = false
  later.on('message', (topic) => {
    if (topic === 'retain/status') sawRetained = true
  })
  await marker
  assert.equal(sawRetained, false, 'an empty retained payload clears the retained message [MQTT-3.3.1-10]')
})

test('publishes the will of a client that disconnects without DISCONNECT [MQTT-3.1.2-8]', async (t) => {
  const watcher = await client(t, shared.mqttUrl)
  await watcher.subscribeAsync('will/device-7', { qos: 1 })
  const doomed = await client(t, shared.mqttUrl, {
    clientId: 'device-7',
    will: { topic: 'will/device-7', payload: Buffer.from('offline'), qos: 1, retain: false },
  })
  const got = nextMessage(watcher, 'will/device-7')
  doomed.stream.destroy() // abrupt: no DISCONNECT
  assert.equal((await got).payload.toString(), 'offline')
})

test('does not publish the will after a clean DISCONNECT [MQTT-3.1.2-10]', async (t) => {
  const watcher = await client(t, shared.mqttUrl)
  await watcher.subscribeAsync(['will/device-8', 'will/marker-8'], { qos: 1 })
  const polite = await client(t, shared.mqttUrl, {
    clientId: 'device-8',
    will: { topic: 'will/device-8', payload: Buffer.from('offline'), qos: 1, retain: false },
  })
  let sawWill = false
  watcher.on('message', (topic) => {
    if (topic === 'will/device-8') sawWill = true
  })
  await polite.endAsync()
  const marker = nextMessage(watcher, 'will/marker-8')
  const other = await client(t, shared.mqttUrl)
  await other.publishAsync('will/marker-8', 'after', { qos: 1 })
  await marker
  assert.equal(sawWill, false)
})

test('queues QoS 1 and 2 messages for an offline persistent session and delivers them on reconnect', async (t) => {
  const opts = { clientId: 'persistent-1', clean: false } as const
  const first = await client(t, shared.mqttUrl, opts)
  await first.subscribeAsync('session/p1/#', { qos: 2 })
  await first.endAsync()

  const pub = await client(t, shared.mqttUrl)
  await pub.publishAsync('session/p1/a', 'one', { qos: 1 })
  await pub.publishAsync('session/p1/b', 'two', { qos: 2 })
  await pub.publishAsync('session/p1/c', 'zero', { qos: 0 })

  // Listen before CONNACK so that nothing delivered right after it is missed.
  const { default: mqtt } = await import('mqtt')
  const again = mqtt.connect(shared.mqttUrl, { ...opts, reconnectPeriod: 0 })
  t.after(() => again.endAsync(true))
  const got = collectMessages(again, 2, (topic) => topic.startsWith('session/p1/'), 10_000)
  const connack = await withTimeout(
    new Promise<{ sessionPresent: boolean }>((r) => again.once('connect', r)),
    10_000,
    'reconnect',
  )
  assert.equal(connack.sessionPresent, true, 'session present [MQTT-3.2.2-2]')
  const msgs = await got
  assert.deepEqual(
    msgs.map((m) => [m.topic, m.payload.toString()]),
    [
      ['session/p1/a', 'one'],
      ['session/p1/b', 'two'],
    ],
  )
})

test('serves MQTT 3.1 and 3.1.1 clients side by side', async (t) => {
  const v31 = await client(t, shared.mqttUrl, { protocolVersion: 3, protocolId: 'MQIsdp', clientId: 'old-plc' })
  const v311 = await client(t, shared.mqttUrl, { protocolVersion: 4 })
  await v31.subscribeAsync('mixed/#', { qos: 1 })
  await v311.subscribeAsync('mixed/#', { qos: 1 })
  const at31 = nextMessage(v31, 'mixed/from311')
  const at311 = nextMessage(v311, 'mixed/from31')
  await v311.publishAsync('mixed/from311', 'x', { qos: 1 })
  await v31.publishAsync('mixed/from31', 'y', { qos: 1 })
  assert.equal((await at31).payload.toString(), 'x')
  assert.equal((await at311).payload.toString(), 'y')
})

test('accepts an MQTT 5 client on a listener with the default mqttVersions (refusals: mqtt5.test.ts)', async (t) => {
  const v5 = await client(t, shared.mqttUrl, { protocolVersion: 5, clientId: 'v5-device' })
  const got = nextMessage(v5, 'v5/echo')
  await v5.subscribeAsync('v5/echo', { qos: 1 })
  await v5.publishAsync('v5/echo', 'five', { qos: 1 })
  assert.equal((await got).payload.toString(), 'five')
})

test('works with mosquitto_pub and mosquitto_sub (3.1 and 3.1.1); mosquitto_pub -V mqttv5 too', async () => {
  const port = String(shared.mqttPort)
  for (const version of ['mqttv31', 'mqttv311']) {
    const sub = mosquittoClient('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-V',
      version,
      '-t',
      `cli/${version}`,
      '-q',
      '1',
      '-C',
      '1',
      '-W',
      '10',
    ])
    // mosquitto_sub subscribes quickly, but not instantly: retain the message
    // so the order of the two processes does not matter.
    const pub = await mosquittoClient('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-V',
      version,
      '-t',
      `cli/${version}`,
      '-m',
      `via ${version}`,
      '-q',
      '1',
      '-r',
    ])
    assert.equal(pub.code, 0, pub.stderr)
    const got = await sub
    assert.equal(got.code, 0, got.stderr)
    assert.equal(got.stdout.trim(), `via ${version}`)
  }
  const v5 = await mosquittoClient('mosquitto_pub', [
    '-h',
    '127.0.0.1',
    '-p',
    port,
    '-V',
    'mqttv5',
    '-t',
    'cli/v5',
    '-m',
    'x',
  ])
  assert.equal(v5.code, 0, v5.stderr)
})

test('speaks MQTT over WebSocket on the ws listener', async (t) => {
  assert.ok(shared.wsPort)
  const ws = await client(t, `ws://127.0.0.1:${shared.wsPort}/mqtt`)
  const tcp = await client(t, shared.mqttUrl)
  await tcp.subscribeAsync('ws/hello', { qos: 1 })
  const got = nextMessage(tcp, 'ws/hello')
  await ws.publishAsync('ws/hello', 'from the browser side', { qos: 1 })
  assert.equal((await got).payload.toString(), 'from the browser side')
})

test('a plain HTTP request to the WebSocket listener gets 426, not a hang', async () => {
  const res = await fetch(`http://127.0.0.1:${shared.wsPort}/mqtt`)
  assert.equal(res.status, 426)
})

test("acknowledges and drops a publish into $SYS or the agent's $edge space [aedes#597], keeping the connection", async (t) => {
  const watcher = await client(t, shared.mqttUrl)
  await watcher.subscribeAsync(['$SYS/fake/#', '$edge/x/#'], { qos: 1 })
  const seen: string[] = []
  watcher.on('message', (topic) => seen.push(topic))
  const bad = await client(t, shared.mqttUrl, { clientId: 'sys-publisher' })
  await withTimeout(
    bad.publishAsync('$SYS/fake/new/clients', 'victim', { qos: 1 }),
    5_000,
    'the PUBACK of the $SYS publish',
  )
  await withTimeout(bad.publishAsync('$edge/x/y', 'victim', { qos: 1 }), 5_000, 'the PUBACK of the $edge publish')
  assert.equal(bad.connected, true)
  // a marker behind them on the same connection arrives; the dropped ones never do
  await watcher.subscribeAsync('sys/check', { qos: 1 })
  const got = nextMessage(watcher, 'sys/check')
  await bad.publishAsync('sys/check', 'still fine', { qos: 1 })
  assert.equal((await got).payload.toString(), 'still fine')
  assert.deepEqual(
    seen.filter((x) => x !== 'sys/check'),
    [],
  )
  const denied = (await shared.status())['broker']['denied'] as Record<string, number>
  assert.ok((denied['reservedTopic'] ?? 0) >= 2)
})

test('a publish to another $ topic (device SDK spaces such as $aws/things/...) is routed like any topic', async (t) => {
  const sub = await client(t, shared.mqttUrl)
  await sub.subscribeAsync('$aws/things/press-1/shadow/update', { qos: 1 })
  const got = nextMessage(sub, '$aws/things/press-1/shadow/update')
  const pub = await client(t, shared.mqttUrl)
  await pub.publishAsync('$aws/things/press-1/shadow/update', '{"state":{}}', { qos: 1 })
  assert.equal((await got).payload.toString(), '{"state":{}}')
})

test('raw TCP: a socket that connects and sends nothing is closed after connectTimeoutMs', async (t) => {
  const agent = await startAgent(t, { config: { broker: { limits: { connectTimeoutMs: 300 } } } })
  const s = netConnect({ host: '127.0.0.1', port: agent.mqttPort })
  s.on('error', () => undefined)
  t.after(() => s.destroy())
  await withTimeout(new Promise<void>((r) => s.once('close', () => r())), 5_000, 'the idle socket to be closed')
})
