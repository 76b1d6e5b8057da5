// MQTT 5 on the local broker (aedes 2), with real clients against the real
// agent: mqtt.js 5, mosquitto_pub/sub -V mqttv5 and Python paho-mqtt MQTTv5.
// Reason codes on CONNACK/SUBACK/PUBACK, per-listener mqttVersions, topic
// aliases, subscription options (No Local, Retain Handling, Retain As
// Published), request/response, user properties and content type, and a
// 3.1.1 and a 5 client side by side. Sessions: mqtt5-session.test.ts.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt'
import { fileScope, type Scope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { startAgent, runCli, type RunningAgent } from '../../helpers/agent-process.js'
import { client, clientWithConnack, refusedConnect, mosquittoClient } from '../../helpers/mqtt-clients.js'
import { collectMessages, withTimeout } from '../../helpers/wait.js'

// Debian's python3 (python3-paho-mqtt), not whatever python3 comes first on PATH.
const PYTHON = process.env['EDGE_TEST_PYTHON'] ?? '/usr/bin/python3'
const V5 = { protocolVersion: 5 } as const

const scope = fileScope()
let agent: RunningAgent
/** Listener ports: all versions (default), ['3.1.1'] only, ['5'] only without anonymous clients. */
let anyPort: number
let v311Port: number
let v5Port: number
let wsPort: number

before(async () => {
  const dir = tmpDir(scope)
  const passwd = join(dir, 'passwd')
  const r = spawnSync('mosquitto_passwd', ['-c', '-b', passwd, 'alice', 'alice-pw'], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  agent = await startAgent(scope, {
    config: {
      broker: {
        listeners: [
          { protocol: 'mqtt', host: '127.0.0.1', port: 0 },
          { protocol: 'mqtt', host: '127.0.0.1', port: 0, mqttVersions: ['3.1.1'] },
          { protocol: 'mqtt', host: '127.0.0.1', port: 0, mqttVersions: ['5'], allowAnonymous: false },
          { protocol: 'ws', host: '127.0.0.1', port: 0 },
        ],
        auth: { passwordFile: passwd, maxFailedLogins: 1000 },
        acl: {
          anonymous: { publish: ['v5/#', 'mixed/#'], subscribe: ['v5/#', 'mixed/#'] },
          users: [{ name: 'alice', publish: ['alice/#'], subscribe: ['alice/#'] }],
        },
      },
    },
  })
  const started = agent.logs.find((l) => l.msg === 'agent started')
  const ports = (started?.['listeners'] as { port: number }[]).map((l) => l.port)
  ;[anyPort, v311Port, v5Port, wsPort] = ports as [number, number, number, number]
})

const url = (port: number): string => `mqtt://127.0.0.1:${port}`

/** The next message on `topic`, with its whole packet (MQTT 5 properties). */
function nextMessage(
  c: MqttClient,
  topic: string,
  ms = 10_000,
): Promise<{ topic: string; payload: Buffer; packet: IPublishPacket }> {
  return withTimeout(
    new Promise((resolve) => {
      const onMessage = (t: string, payload: Buffer, packet: IPublishPacket): void => {
        if (t !== topic) return
        c.off('message', onMessage)
        resolve({ topic: t, payload, packet })
      }
      c.on('message', onMessage)
    }),
    ms,
    `a message on ${topic}`,
  )
}

/** An mqtt.js MQTT 5 client and the CONNACK it got. */
async function v5Client(t: Scope, port: number, opts: IClientOptions = {}): Promise<[MqttClient, IConnackPacket]> {
  return clientWithConnack(t, url(port), { ...V5, ...opts })
}

test('an MQTT 5 CONNACK: reason code 0 and what the broker offers (topic aliases, packet size, receive maximum)', async (t) => {
  const [, connack] = await v5Client(t, anyPort, { clientId: 'v5-caps' })
  assert.equal(connack.reasonCode, 0)
  assert.equal(connack.properties?.topicAliasMaximum, 10)
  assert.ok((connack.properties?.maximumPacketSize ?? 0) > 0, 'maximum packet size advertised')
  assert.equal(connack.properties?.receiveMaximum, 100, 'limits.maxInflightPerClient')
  assert.equal(connack.properties?.sharedSubscriptionAvailable, false)
})

test("a listener with mqttVersions ['3.1.1'] refuses MQTT 5 with 0x84 and says which key to change", async () => {
  const err = await refusedConnect(url(v311Port), { ...V5, clientId: 'v5-on-311' })
  assert.equal(err.code, 0x84, err.message)
  const line = await agent.waitForLog(
    (l) => l['clientId'] === 'v5-on-311' || (l['mqttVersion'] === '5' && l['key'] !== undefined),
    5_000,
    'the refusal log line',
  )
  assert.equal(line['key'], 'broker.listeners[1].mqttVersions')
  assert.match(String(line['listener']), /^mqtt:\/\/127\.0\.0\.1:0$/)
  assert.match(line.msg, /mqttVersions/)
  // mosquitto_pub -V mqttv5 is refused too; 3.1.1 passes on the same listener
  const v5 = await mosquittoClient('mosquitto_pub', ['-p', String(v311Port), '-V', 'mqttv5', '-t', 'v5/x', '-m', 'x'])
  assert.notEqual(v5.code, 0)
  assert.match(v5.stderr, /protocol|version/i)
  const v311 = await client({ after: () => undefined }, url(v311Port), { protocolVersion: 4 })
  await v311.endAsync()
})

test("a listener with mqttVersions ['5'] refuses MQTT 3.1.1 with CONNACK 1 and logs the key", async () => {
  const err = await refusedConnect(url(v5Port), { protocolVersion: 4, clientId: 'v311-on-v5' })
  assert.equal(err.code, 1, err.message)
  const line = await agent.waitForLog((l) => l['clientId'] === 'v311-on-v5', 5_000, 'the refusal log line')
  assert.equal(line['key'], 'broker.listeners[2].mqttVersions')
  assert.equal(line['mqttVersion'], '3.1.1')
  assert.equal(line['returnCode'], 1)
})

test('MQTT 5 logins: 0x86 for a bad password, 0x87 for an anonymous client where anonymous is off', async (t) => {
  const bad = await refusedConnect(url(v5Port), { ...V5, username: 'alice', password: 'wrong' })
  assert.equal(bad.code, 0x86, bad.message)
  const anonymous = await refusedConnect(url(v5Port), { ...V5, clientId: 'anon-v5' })
  assert.equal(anonymous.code, 0x87, anonymous.message)
  const [, ok] = await v5Client(t, v5Port, { username: 'alice', password: 'alice-pw' })
  assert.equal(ok.reasonCode, 0)
})

test('MQTT 5 ACL: a denied filter gets 0x87 in SUBACK, a denied QoS 1 PUBLISH PUBACK 0x87, the connection stays', async (t) => {
  const [c] = await v5Client(t, anyPort, { clientId: 'acl-v5' })
  const granted = await c.subscribeAsync(['v5/acl/ok', 'secret/x'], { qos: 1 }).catch((err: unknown) => {
    const packet = (err as { packet?: { granted?: number[] } }).packet
    if (packet?.granted === undefined) throw err
    return packet.granted.map((qos) => ({ qos }))
  })
  assert.deepEqual(
    granted.map((g) => g.qos),
    [1, 0x87],
  )
  const puback = await c.publishAsync('secret/x', 'no', { qos: 1 }).then(
    (p) => (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0,
    (err: unknown) => (err as { code?: number }).code,
  )
  assert.equal(puback, 0x87)
  // still connected: an allowed publish goes through
  const got = nextMessage(c, 'v5/acl/ok')
  await c.publishAsync('v5/acl/ok', 'yes', { qos: 1 })
  assert.equal((await got).payload.toString(), 'yes')
})

test('inbound topic aliases: the first PUBLISH sets alias 1, the next ones use it with an empty topic', async (t) => {
  const [sub] = await v5Client(t, anyPort, { clientId: 'alias-sub' })
  const [pub] = await v5Client(t, anyPort, { clientId: 'alias-pub' })
  await sub.subscribeAsync('v5/alias/#', { qos: 1 })
  const got = collectMessages(sub, 3, (topic) => topic.startsWith('v5/alias/'), 10_000)
  await pub.publishAsync('v5/alias/t', 'one', { qos: 1, properties: { topicAlias: 1 } })
  await pub.publishAsync('', 'two', { qos: 1, properties: { topicAlias: 1 } })
  await pub.publishAsync('', 'three', { qos: 0, properties: { topicAlias: 1 } })
  const msgs = await got
  assert.deepEqual(
    msgs.map((m) => [m.topic, m.payload.toString()]),
    [
      ['v5/alias/t', 'one'],
      ['v5/alias/t', 'two'],
      ['v5/alias/t', 'three'],
    ],
  )
})

test('No Local: a client does not get its own messages back, others do', async (t) => {
  const [a] = await v5Client(t, anyPort, { clientId: 'nl-a' })
  const [b] = await v5Client(t, anyPort, { clientId: 'nl-b' })
  await a.subscribeAsync('v5/nl', { qos: 1, nl: true })
  const got = nextMessage(a, 'v5/nl')
  await a.publishAsync('v5/nl', 'own', { qos: 1 })
  await b.publishAsync('v5/nl', 'other', { qos: 1 })
  // Delivery is in order: had 'own' come back, it would arrive before 'other'.
  assert.equal((await got).payload.toString(), 'other')
})

test('Retain Handling 0/1/2 and Retain As Published', async (t) => {
  const [pub] = await v5Client(t, anyPort, { clientId: 'rh-pub' })
  await pub.publishAsync('v5/rh/t', 'kept', { qos: 1, retain: true })
  const receivedOnSubscribe = async (rh: 0 | 1 | 2, again: boolean): Promise<string[]> => {
    const [c] = await v5Client(t, anyPort, { clientId: `rh-${rh}-${again}` })
    const seen: string[] = []
    c.on('message', (topic, payload) => seen.push(`${topic}=${payload.toString()}`))
    await c.subscribeAsync('v5/rh/#', { qos: 1, rh })
    if (again) await c.subscribeAsync('v5/rh/#', { qos: 1, rh })
    // a marker published after the subscription(s): everything retained came before it
    const marker = nextMessage(c, 'v5/rh/marker')
    await pub.publishAsync('v5/rh/marker', 'm', { qos: 1 })
    await marker
    return seen.filter((s) => s.startsWith('v5/rh/t='))
  }
  assert.deepEqual(await receivedOnSubscribe(0, true), ['v5/rh/t=kept', 'v5/rh/t=kept'], 'rh 0: on every subscribe')
  assert.deepEqual(await receivedOnSubscribe(1, true), ['v5/rh/t=kept'], 'rh 1: only on a new subscription')
  assert.deepEqual(await receivedOnSubscribe(2, false), [], 'rh 2: never')

  const [rap] = await v5Client(t, anyPort, { clientId: 'rap-1' })
  const [norap] = await v5Client(t, anyPort, { clientId: 'rap-0' })
  await rap.subscribeAsync('v5/rap', { qos: 1, rap: true, rh: 2 })
  await norap.subscribeAsync('v5/rap', { qos: 1, rap: false, rh: 2 })
  const withFlag = nextMessage(rap, 'v5/rap')
  const withoutFlag = nextMessage(norap, 'v5/rap')
  await pub.publishAsync('v5/rap', 'live', { qos: 1, retain: true })
  assert.equal((await withFlag).packet.retain, true, 'Retain As Published keeps the flag')
  assert.equal((await withoutFlag).packet.retain, false, 'without it a live message has retain 0')
})

test('request/response between two MQTT 5 clients: response topic and correlation data arrive as sent', async (t) => {
  const [responder] = await v5Client(t, anyPort, { clientId: 'responder' })
  const [requester] = await v5Client(t, anyPort, { clientId: 'requester' })
  await responder.subscribeAsync('v5/req', { qos: 1 })
  await requester.subscribeAsync('v5/resp/requester', { qos: 1 })
  responder.on('message', (topic, payload, packet) => {
    if (topic !== 'v5/req') return
    const p = packet.properties ?? {}
    void responder.publish(p.responseTopic ?? 'v5/none', `re:${payload.toString()}`, {
      qos: 1,
      properties: { correlationData: p.correlationData ?? Buffer.alloc(0) },
    })
  })
  const answer = nextMessage(requester, 'v5/resp/requester')
  const correlation = Buffer.from([0x00, 0xff, 0x10, 0x80])
  await requester.publishAsync('v5/req', 'ping', {
    qos: 1,
    properties: { responseTopic: 'v5/resp/requester', correlationData: correlation },
  })
  const got = await answer
  assert.equal(got.payload.toString(), 're:ping')
  assert.deepEqual(got.packet.properties?.correlationData, correlation)
})

test('user properties, content type and payload format reach an MQTT 5 subscriber (mqtt.js and mosquitto_pub)', async (t) => {
  const [sub] = await v5Client(t, anyPort, { clientId: 'props-sub' })
  const [pub] = await v5Client(t, anyPort, { clientId: 'props-pub' })
  await sub.subscribeAsync('v5/props/#', { qos: 1 })
  const got = nextMessage(sub, 'v5/props/js')
  await pub.publishAsync('v5/props/js', '{"v":1}', {
    qos: 1,
    properties: {
      userProperties: { site: 'a', line: ['1', '2'] },
      contentType: 'application/json',
      payloadFormatIndicator: true,
    },
  })
  const p = (await got).packet.properties
  assert.deepEqual({ ...p?.userProperties }, { site: 'a', line: ['1', '2'] })
  assert.equal(p?.contentType, 'application/json')
  assert.equal(p?.payloadFormatIndicator, true)

  const fromCli = nextMessage(sub, 'v5/props/cli')
  const r = await mosquittoClient('mosquitto_pub', [
    ...['-p', String(anyPort), '-V', 'mqttv5', '-q', '1', '-t', 'v5/props/cli', '-m', 'hello'],
    ...['-D', 'publish', 'user-property', 'origin', 'mosquitto_pub', '-D', 'publish', 'content-type', 'text/plain'],
  ])
  assert.equal(r.code, 0, r.stderr)
  const q = (await fromCli).packet.properties
  assert.deepEqual({ ...q?.userProperties }, { origin: 'mosquitto_pub' })
  assert.equal(q?.contentType, 'text/plain')
})

test('mosquitto_sub -V mqttv5 receives what an MQTT 5 mqtt.js client publishes', async (t) => {
  const sub = mosquittoClient('mosquitto_sub', [
    ...['-p', String(anyPort), '-V', 'mqttv5', '-t', 'v5/cli/sub', '-q', '1', '-C', '1', '-W', '10'],
    ...['-F', '%t %p'],
  ])
  const [pub] = await v5Client(t, anyPort, { clientId: 'cli-pub' })
  // retained so that the order of subscribe and publish does not matter
  await pub.publishAsync('v5/cli/sub', 'to-cli', { qos: 1, retain: true })
  const got = await sub
  assert.equal(got.code, 0, got.stderr)
  assert.equal(got.stdout.trim(), 'v5/cli/sub to-cli')
})

test('Python paho-mqtt with MQTTv5: connect, subscribe, get user properties from mqtt.js', async (t) => {
  const script = `
import sys, json, time, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
out = {}
def on_connect(c, userdata, flags, rc, props=None):
    out['connack'] = int(getattr(rc, 'value', rc))
    c.subscribe('v5/paho', qos=1)
def on_subscribe(c, userdata, mid, granted, props=None):
    print('subscribed', flush=True)
def on_message(c, userdata, msg):
    up = getattr(msg.properties, 'UserProperty', [])
    out['msg'] = [msg.topic, msg.payload.decode(), [list(p) for p in up]]
    c.disconnect()
if hasattr(mqtt, 'CallbackAPIVersion'):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id='paho-v5', protocol=mqtt.MQTTv5)
else:
    c = mqtt.Client(client_id='paho-v5', protocol=mqtt.MQTTv5)
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.connect('127.0.0.1', int(sys.argv[1]), keepalive=30)
c.loop_forever()
print(json.dumps(out), flush=True)
`
  const proc = spawn(PYTHON, ['-c', script, String(anyPort)], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  })
  let stdout = ''
  let stderr = ''
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  const subscribed = new Promise<void>((resolve) => {
    proc.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c
      if (stdout.includes('subscribed')) resolve()
    })
  })
  await withTimeout(subscribed, 15_000, `paho subscribed (${stderr})`)
  const [pub] = await v5Client(t, anyPort, { clientId: 'to-paho' })
  await pub.publishAsync('v5/paho', 'for python', { qos: 1, properties: { userProperties: { k: 'v' } } })
  await withTimeout(once(proc, 'close'), 15_000, 'paho exit')
  const out = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { connack?: number; msg?: unknown }
  assert.equal(out.connack, 0, stderr)
  assert.deepEqual(out.msg, ['v5/paho', 'for python', [['k', 'v']]])
})

test('MQTT 5 over WebSocket', async (t) => {
  const ws = mqtt.connect(`ws://127.0.0.1:${wsPort}/mqtt`, { reconnectPeriod: 0, connectTimeout: 5_000, ...V5 })
  ws.on('error', () => undefined)
  t.after(() => ws.endAsync(true).catch(() => undefined))
  const connack = await withTimeout(
    new Promise<IConnackPacket>((resolve) => ws.once('connect', resolve)),
    10_000,
    'MQTT 5 CONNACK over WebSocket',
  )
  assert.equal(connack.reasonCode, 0)
  const got = nextMessage(ws, 'v5/ws')
  await ws.subscribeAsync('v5/ws', { qos: 1 })
  await ws.publishAsync('v5/ws', 'over ws', { qos: 1, properties: { contentType: 'text/plain' } })
  const m = await got
  assert.equal(m.payload.toString(), 'over ws')
  assert.equal(m.packet.properties?.contentType, 'text/plain')
})

test('an MQTT 3.1.1 and an MQTT 5 client exchange messages both ways', async (t) => {
  const v311 = await client(t, url(anyPort), { protocolVersion: 4, clientId: 'mixed-311' })
  const [v5] = await v5Client(t, anyPort, { clientId: 'mixed-5' })
  await v311.subscribeAsync('mixed/to311', { qos: 1 })
  await v5.subscribeAsync('mixed/to5', { qos: 1 })
  const at311 = nextMessage(v311, 'mixed/to311')
  const at5 = nextMessage(v5, 'mixed/to5')
  await v5.publishAsync('mixed/to311', 'from 5', { qos: 1, properties: { userProperties: { x: 'y' } } })
  await v311.publishAsync('mixed/to5', 'from 3.1.1', { qos: 1 })
  assert.equal((await at311).payload.toString(), 'from 5')
  assert.equal((await at5).payload.toString(), 'from 3.1.1')
})

test('config validate refuses bad mqttVersions with exit 78 and the key path', async (t) => {
  const dir = tmpDir(t)
  for (const bad of [['4'], [], ['5', '5'], '5']) {
    const file = join(dir, 'bad.yaml')
    writeFileSync(
      file,
      JSON.stringify({
        site: { name: 's', level: 2 },
        broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: 1883, mqttVersions: bad }] },
      }),
    )
    const r = await runCli(['config', 'validate', '--config', file])
    assert.equal(r.code, 78, `${JSON.stringify(bad)}: ${r.stdout}${r.stderr}`)
    assert.match(r.stderr + r.stdout, /broker\.listeners\[0\]\.mqttVersions|broker\/listeners\/0\/mqttVersions/)
  }
})

test("Maximum Packet Size both ways: the broker skips what exceeds the client's, and refuses what exceeds its own", async (t) => {
  // The client announces 512 bytes [MQTT-3.1.2-24]: a larger message is not sent to it,
  // as if it had been [MQTT-3.1.2-25].
  const [small] = await v5Client(t, anyPort, { clientId: 'mps-small', properties: { maximumPacketSize: 512 } })
  const [big] = await v5Client(t, anyPort, { clientId: 'mps-big' })
  await small.subscribeAsync('v5/mps/#', { qos: 1 })
  await big.subscribeAsync('v5/mps/#', { qos: 1 })
  const toSmall: string[] = []
  small.on('message', (topic) => toSmall.push(topic))
  const bigGotLarge = nextMessage(big, 'v5/mps/large')
  const smallGotTail = nextMessage(small, 'v5/mps/tail')
  await big.publishAsync('v5/mps/large', Buffer.alloc(2_000, 0x61), { qos: 1 })
  await big.publishAsync('v5/mps/tail', 'fits', { qos: 1 })
  assert.equal((await bigGotLarge).payload.length, 2_000, 'a client without a maximum gets it')
  await smallGotTail
  // In-order delivery: had the large message gone to the small client, it would have come before the tail.
  assert.deepEqual(toSmall, ['v5/mps/tail'])
  assert.equal(small.connected, true, 'the small client stays connected')
  const status = (await agent.status()) as { broker: { denied: Record<string, number> } }
  assert.ok((status.broker.denied['client-maximum-packet-size'] ?? 0) >= 1, JSON.stringify(status.broker.denied))

  // The other way: a PUBLISH above the broker's limit is refused with DISCONNECT 0x95 (Packet too large).
  const [sender] = await v5Client(t, anyPort, { clientId: 'mps-sender' })
  const disconnect = withTimeout(
    new Promise<{ reasonCode?: number }>((resolve) => sender.once('disconnect', resolve)),
    10_000,
    'DISCONNECT from the broker',
  )
  sender.publish('v5/mps/huge', Buffer.alloc(300_000, 0x62), { qos: 0 })
  assert.equal((await disconnect).reasonCode, 0x95)
})
