// Node-RED inside the real agent: flows deployed from a file by the CLI turn a
// device's raw payload into the site's JSON, with the edge nodes and with the
// standard mqtt nodes; the result reaches a real Mosquitto upstream through the
// bridge and waits in the buffer through an upstream outage.
//
// Glossary
//   upstream  Mosquitto on a free 127.0.0.1 port (the next Purdue level up)
//   agent     dist/agent/main.js with nodeRed.enabled and an `out` rule for site/#
//   device    an mqtt.js client of the agent's local broker
//   observer  a persistent-session client of the upstream
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { runCli, startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { collectMessages, nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'
import { mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'
import { edgeFlow, mqttFlow } from './flows.js'

const missing = mosquittoMissing()
const scope = fileScope()
let upstream: RunningMosquitto
let agent: RunningAgent
let observer: MqttClient

before(async () => {
  if (missing !== undefined) return
  upstream = await startMosquitto(scope)
  agent = await startAgent(scope, {
    startTimeoutMs: 60_000,
    config: {
      nodeRed: { enabled: true, host: '127.0.0.1', port: 0 },
      upstreams: [
        {
          name: 'site',
          url: upstream.url,
          keepaliveSec: 5,
          reconnect: { minMs: 200, maxMs: 1000, resetAfterMs: 2000, probeIntervalMs: 200 },
          rules: [{ topic: 'site/#', direction: 'out', qos: 1, remotePrefix: 'plant/' }],
        },
      ],
    },
  })
  await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, "'upstream connected'")
  // A persistent session: what the agent forwards while the observer is
  // reconnecting after an upstream restart waits for it in Mosquitto.
  observer = await withTimeout(
    mqtt.connectAsync(upstream.url, { clientId: 'nr-observer', clean: false, reconnectPeriod: 200 }),
    10_000,
    'observer connect',
  )
  observer.on('error', () => undefined)
  scope.after(() => observer.endAsync(true).catch(() => undefined))
  await observer.subscribeAsync('plant/#', { qos: 1 })
})

async function deploy(flows: unknown): Promise<void> {
  const file = join(agent.dir, `flows-${Date.now()}.json`)
  writeFileSync(file, JSON.stringify(flows))
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile], { timeoutMs: 60_000 })
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /deployed \d+ nodes/)
}

test(
  'a flow deployed by the CLI normalises a raw device payload with the edge nodes, up to Mosquitto',
  { skip: missing },
  async (t) => {
    const subscribed = agent.waitForLog(
      (l) => l.msg === 'edge in subscribed' && l['nodeId'] === 'edge-in-1',
      60_000,
      'edge in subscribed',
      false,
    )
    await deploy(edgeFlow())
    await subscribed
    const device = await client(t, agent.mqttUrl, { clientId: 'raw1' })
    const got = nextMessage(observer, 'plant/site/raw1/temperature', 15_000)
    await device.publishAsync('devices/raw1/raw', '215', { qos: 1 })
    const m = await got
    assert.deepEqual(JSON.parse(m.payload.toString()), { celsius: 21.5 })
    const s = await agent.status()
    assert.ok(s['nodeRed'].edge.published >= 1)
    // export gives back what was deployed
    const r = await runCli(['nodered', 'export', '--config', agent.configFile], { timeoutMs: 30_000 })
    assert.equal(r.code, 0, r.stderr)
    const ids = (JSON.parse(r.stdout) as { id: string }[]).map((n) => n.id).sort()
    assert.deepEqual(ids, ['edge-in-1', 'edge-out-1', 'fn-1', 'tab-edge'])
  },
)

test(
  "a flow's messages wait in the buffer through an upstream outage, like a device's",
  { skip: missing },
  async (t) => {
    const device = await client(t, agent.mqttUrl, { clientId: 'raw2' })
    await upstream.stop()
    await waitFor(
      async () => (await agent.status())['upstreams'][0].connected === false,
      15_000,
      'the bridge to notice the outage',
    )
    const N = 5
    for (let i = 0; i < N; i++) await device.publishAsync('devices/raw2/raw', String(200 + i), { qos: 1 })
    // edge out resolves only once the copy is committed: the count is exact.
    await waitFor(
      async () => (await agent.status())['upstreams'][0].backlog.depth === N,
      15_000,
      `${N} messages in the buffer`,
    )
    assert.equal((await agent.status())['buffer'].totals.appended >= N, true)
    const arrived = collectMessages(observer, N, (topic) => topic === 'plant/site/raw2/temperature', 30_000)
    await upstream.start()
    const msgs = await arrived
    assert.deepEqual(
      msgs.map((m) => (JSON.parse(m.payload.toString()) as { celsius: number }).celsius),
      [20, 20.1, 20.2, 20.3, 20.4],
    )
    await waitFor(async () => (await agent.status())['upstreams'][0].backlog.depth === 0, 15_000, 'the buffer to drain')
  },
)

test(
  'the same flow works with the standard mqtt in / mqtt out nodes against the local listener',
  { skip: missing },
  async (t) => {
    await deploy(mqttFlow(agent.mqttPort))
    const device = await client(t, agent.mqttUrl, { clientId: 'raw3' })
    const got = nextMessage(observer, 'plant/site/raw3/temperature', 60_000)
    // The mqtt nodes connect and subscribe on their own schedule (no event
    // reaches the test): publish until the first result arrives, bounded.
    let done = false
    void got.finally(() => (done = true)).catch(() => undefined)
    for (let i = 0; i < 60 && !done; i++) {
      await device.publishAsync('devices/raw3/raw', '215', { qos: 1 })
      await Promise.race([got.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))])
    }
    const m = await got
    assert.deepEqual(JSON.parse(m.payload.toString()), { celsius: 21.5 })
  },
)

test('deploy refuses a file that is not a flow array, and nothing changes', { skip: missing }, async () => {
  const file = join(agent.dir, 'not-flows.json')
  writeFileSync(file, JSON.stringify({ id: 'x', type: 'tab' }))
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile])
  assert.equal(r.code, 64)
  assert.match(r.stderr, /EDGE_ERR_NODERED_FLOWS_INVALID.*expected a JSON array/)
  writeFileSync(file, '[{"id":"a","type":"tab"},{"id":"a","type":"inject"}]')
  const dup = await runCli(['nodered', 'deploy', file, '--config', agent.configFile])
  assert.equal(dup.code, 64)
  assert.match(dup.stderr, /id a appears twice/)
  const r2 = await runCli(['nodered', 'export', '--config', agent.configFile])
  assert.ok(
    (JSON.parse(r2.stdout) as { id: string }[]).some((n) => n.id === 'mqtt-in-1'),
    'the last good flows still run',
  )
})
