// One ACL for every client and listener, with real clients: users and groups
// of the config, an imported Mosquitto acl_file, anonymous rules, SUBACK 0x80
// for a denied filter (mqtt.js and mosquitto_sub), a denied PUBLISH
// acknowledged and dropped, and on mqtts identity-as-username: two clients
// sharing one certificate, both held to the certificate's identity.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileScope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client, mosquittoClient } from '../../helpers/mqtt-clients.js'
import { nextMessage, withTimeout } from '../../helpers/wait.js'
import type { MqttClient } from 'mqtt'
import { deviceClient, issueWithCli } from '../certs/support.js'

/** SUBACK return codes per filter; mqtt.js rejects a SUBACK with any 0x80, with the packet attached. */
async function suback(c: MqttClient, filters: string | string[]): Promise<number[]> {
  try {
    return (await c.subscribeAsync(filters, { qos: 1 })).map((g) => g.qos)
  } catch (err) {
    const packet = (err as { packet?: { granted?: (number | { qos: number })[] } }).packet
    if (packet?.granted === undefined) throw err
    return packet.granted.map((g) => (typeof g === 'number' ? g : g.qos))
  }
}

const scope = fileScope()
let agent: RunningAgent
let url: string

before(async () => {
  const dir = tmpDir(scope)
  const passwd = join(dir, 'passwd')
  for (const [i, [u, p]] of [
    ['plc-1', 'plc-pw'],
    ['hmi-1', 'hmi-pw'],
    ['bob', 'bob-pw'],
  ].entries()) {
    const r = spawnSync('mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', passwd, u!, p!], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
  }
  const aclFile = join(dir, 'acl')
  writeFileSync(aclFile, '# imported from Mosquitto\nuser bob\ntopic readwrite bob/#\npattern write clients/%c/out\n')
  agent = await startAgent(scope, {
    mqtts: { useIdentityAsUsername: true },
    config: {
      certs: { allowShortLifetimes: true, backdateSec: 1 },
      broker: {
        auth: { passwordFile: passwd },
        acl: {
          file: aclFile,
          anonymous: { read: ['public/#', 'clients/#'] },
          users: [
            { name: 'plc-1', publish: ['plant/line1/#', 'public/#'], subscribe: ['plant/line1/cmd/#'] },
            { name: 'press-1', publish: ['plant/presses/press-1/#'] },
          ],
          groups: [{ name: 'hmis', members: ['hmi-*'], read: ['plant/#'], publish: ['plant/+/cmd/%u'] }],
        },
      },
      devices: { onDeniedPublish: 'drop' },
    },
  })
  url = agent.mqttUrl
})

test('a denied SUBSCRIBE filter gets 0x80 and the others their QoS (mqtt.js) [MQTT-3.9.3]', async (t) => {
  const plc = await client(t, url, { username: 'plc-1', password: 'plc-pw' })
  assert.deepEqual(await suback(plc, ['plant/line1/cmd/#', 'plant/line2/#', 'devices/#']), [1, 128, 128])
  const denied = (await agent.status())['broker']['denied'] as Record<string, number>
  assert.ok((denied['aclSubscribe'] ?? 0) >= 2)
})

test('mosquitto_sub -u/-P sees SUBACK 0x80 for a denied filter', async () => {
  const r = await mosquittoClient('mosquitto_sub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(agent.mqttPort),
    '-u',
    'plc-1',
    '-P',
    'plc-pw',
    '-t',
    'secret/#',
    '-d',
    '-W',
    '2',
  ])
  assert.match(r.stdout + r.stderr, /Subscribed \(mid: \d+\): 128/)
})

test('a denied PUBLISH is acknowledged and dropped; allowed ones reach a group member reading with #', async (t) => {
  const hmi = await client(t, url, { username: 'hmi-1', password: 'hmi-pw' })
  assert.deepEqual(await suback(hmi, '#'), [1], "'#' overlaps the group's read rule: allowed, deliveries filtered")
  const seen: string[] = []
  hmi.on('message', (topic) => seen.push(topic))
  const plc = await client(t, url, { username: 'plc-1', password: 'plc-pw' })
  await withTimeout(plc.publishAsync('plant/line2/temp', 'not mine', { qos: 1 }), 5_000, 'PUBACK of a denied publish')
  assert.equal(plc.connected, true)
  const got = nextMessage(hmi, 'plant/line1/temp')
  await plc.publishAsync('plant/line1/temp', '21.5', { qos: 1 })
  assert.equal((await got).payload.toString(), '21.5')
  // hmi reads plant/# only: a public topic published by plc-1 is not delivered to it
  const marker = nextMessage(hmi, 'plant/line1/marker')
  await plc.publishAsync('public/notice', 'x', { qos: 1 })
  await plc.publishAsync('plant/line1/marker', 'm', { qos: 1 })
  await marker
  assert.deepEqual(
    seen.filter((s) => s !== 'plant/line1/temp' && s !== 'plant/line1/marker'),
    [],
  )
  // the group's %u template: hmi-1 may command as itself only
  const cmd = nextMessage(hmi, 'plant/line1/cmd/hmi-1')
  await hmi.publishAsync('plant/line1/cmd/hmi-2', 'spoof', { qos: 1 })
  await hmi.publishAsync('plant/line1/cmd/hmi-1', 'go', { qos: 1 })
  assert.equal((await cmd).payload.toString(), 'go')
  assert.ok(!seen.includes('plant/line1/cmd/hmi-2'))
})

test('rules imported from a Mosquitto acl_file apply (user bob, pattern with %c); anonymous clients get theirs', async (t) => {
  const bob = await client(t, url, { username: 'bob', password: 'bob-pw', clientId: 'bob-c' })
  assert.deepEqual(await suback(bob, ['bob/#', 'plant/#']), [1, 128])
  const got = nextMessage(bob, 'bob/x')
  await bob.publishAsync('bob/x', 'y', { qos: 1 })
  assert.equal((await got).payload.toString(), 'y')

  const anon = await client(t, url, { clientId: 'anon-c' })
  assert.deepEqual(await suback(anon, ['public/#', 'plant/#']), [1, 128])
  const notice = nextMessage(anon, 'public/notice2')
  const plc = await client(t, url, { username: 'plc-1', password: 'plc-pw' })
  await plc.publishAsync('public/notice2', 'hello', { qos: 1 })
  assert.equal((await notice).payload.toString(), 'hello')
  // the acl_file pattern lets a client write clients/<its client id>/out, and no other's
  const reader = await client(t, url, { clientId: 'anon-reader' })
  await reader.subscribeAsync('clients/#', { qos: 1 })
  const seen: string[] = []
  reader.on('message', (topic) => seen.push(topic))
  const got2 = nextMessage(reader, 'clients/anon-c/out')
  await anon.publishAsync('clients/other/out', 'spoof', { qos: 1 })
  await anon.publishAsync('clients/anon-c/out', 'ok', { qos: 1 })
  assert.equal((await got2).payload.toString(), 'ok')
  assert.deepEqual(seen, ['clients/anon-c/out'])
})

test('mqtts useIdentityAsUsername: two clients share one certificate, both held to its identity', async (t) => {
  const press = await issueWithCli(t, agent, 'press-1')
  const a = await deviceClient(t, agent, press, { clientId: 'press-1-telemetry' })
  const b = await deviceClient(t, agent, press, { clientId: 'press-1-commands' })
  assert.equal(a.connected && b.connected, true)
  const got = nextMessage(b, 'devices/press-1/temp')
  await b.subscribeAsync('devices/press-1/#', { qos: 1 })
  await a.publishAsync('devices/press-1/temp', '80', { qos: 1 })
  assert.equal((await got).payload.toString(), '80')
  // the client ACL grants press-1 (by its certificate identity) one more space
  const hmi = await client(t, url, { username: 'hmi-1', password: 'hmi-pw' })
  await hmi.subscribeAsync('plant/#', { qos: 1 })
  const extra = nextMessage(hmi, 'plant/presses/press-1/state')
  await a.publishAsync('plant/presses/press-1/state', 'run', { qos: 1 })
  assert.equal((await extra).payload.toString(), 'run')
  // outside both: acknowledged and dropped (devices.onDeniedPublish: drop), the session stays
  assert.deepEqual(await suback(b, 'devices/press-2/#'), [128])
  await withTimeout(
    a.publishAsync('devices/press-2/temp', 'spoof', { qos: 1 }),
    5_000,
    'PUBACK of a denied device publish',
  )
  assert.equal(a.connected, true)
  const status = await agent.status()
  assert.ok((status['broker']['denied']['aclPublish'] ?? 0) >= 1)
})
