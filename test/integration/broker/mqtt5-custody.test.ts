// Custody for an MQTT 5 device: a publish the buffer refuses must not get a
// PUBACK at all, not even a negative one (aedes 2 would answer 0x87 Not
// authorized, and the device would drop a message that was never stored).
// The connection closes instead; the device reconnects, resends, and every
// message arrives upstream once space returns (the 3.1.1 case is in
// test/integration/buffer/agent-durability.test.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { startMosquitto } from '../../helpers/mosquitto.js'
import { waitFor, withTimeout } from '../../helpers/wait.js'

test('MQTT 5, refuse policy: a full buffer withholds the PUBACK (no 0x87), every message arrives in the end', async (t) => {
  const upstream = await startMosquitto(t)
  await upstream.stop(true)
  const agent = await startAgent(t, {
    config: {
      buffer: { maxBytes: 12_000 },
      upstreams: [
        {
          name: 'site',
          url: upstream.url,
          protocolVersion: 4,
          reconnect: { minMs: 50, maxMs: 200 },
          rules: [
            { topic: 'devices/+/telemetry', direction: 'out', qos: 1, whenFull: 'refuse', remotePrefix: 'cell/' },
          ],
        },
      ],
    },
  })
  const device = mqtt.connect(agent.mqttUrl, {
    protocolVersion: 5,
    clientId: 'dev-r5',
    clean: false,
    properties: { sessionExpiryInterval: 600 },
    reconnectPeriod: 100,
  })
  t.after(() => device.endAsync(true))
  device.on('error', () => undefined)
  const negative: number[] = []
  device.on('packetreceive', (p) => {
    const code = (p as { cmd: string; reasonCode?: number }).reasonCode
    if (p.cmd === 'puback' && code !== undefined && code >= 0x80) negative.push(code)
  })
  await withTimeout(new Promise<void>((r) => device.once('connect', () => r())), 10_000, 'device connect')
  const N = 60
  const payload = (i: number) => `${String(i).padStart(3, '0')}:${'x'.repeat(400)}`
  const acks = Array.from({ length: N }, (_, i) =>
    device.publishAsync('devices/dev-r5/telemetry', payload(i), { qos: 1 }),
  )
  for (const a of acks) void a.catch(() => undefined)
  await waitFor(
    async () => ((await agent.status())['buffer']['drops']['byReason']['refused'] ?? 0) > 0,
    20_000,
    'a refusal',
  )

  await upstream.start()
  const watcher = await client(t, upstream.url, { clientId: 'l3-watcher-5' })
  const got = new Set<string>()
  watcher.on('message', (_topic, p: Buffer) => got.add(p.toString().slice(0, 3)))
  await watcher.subscribeAsync('cell/devices/dev-r5/telemetry', { qos: 1 })
  await withTimeout(Promise.all(acks), 60_000, 'every publish to be acknowledged in the end')
  await waitFor(() => got.size === N, 30_000, `all ${N} messages upstream (have ${got.size})`)
  assert.deepEqual(negative, [], 'no negative PUBACK was sent')
})
