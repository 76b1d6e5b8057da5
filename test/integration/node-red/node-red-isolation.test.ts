// Misbehaving flows do not take device traffic down: a function node that
// throws on every message and one that publishes in a tight loop run while a
// device does QoS 1 round trips through the same broker. Errors are logged
// with the node id (and limited); the flood is throttled and counted.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { waitFor } from '../../helpers/wait.js'
import { badFlows } from './flows.js'

const ROUND_TRIPS = 200

test('a throwing flow and a flooding flow leave device QoS 1 round trips under 100 ms (p90)', async (t) => {
  const agent = await startAgent(t, {
    startTimeoutMs: 60_000,
    config: {
      log: { level: 'info' },
      nodeRed: { enabled: true, host: '127.0.0.1', port: 0, maxPublishRatePerSec: 200 },
    },
  })
  const file = join(agent.dir, 'bad.json')
  writeFileSync(file, JSON.stringify(badFlows(20, 10)))
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile], { timeoutMs: 60_000 })
  assert.equal(r.code, 0, r.stderr)
  // The flood is on: edge out has published and been throttled.
  await waitFor(
    async () => {
      const e = (await agent.status())['nodeRed'].edge
      return e.published > 0 && e.throttled > 0
    },
    30_000,
    'the flood to be throttled',
  )

  const device = await client(t, agent.mqttUrl, { clientId: 'rtt-device' })
  const flooded = await client(t, agent.mqttUrl, { clientId: 'flood-watcher' })
  await flooded.subscribeAsync('flood/x', { qos: 0 })
  let floodSeen = 0
  flooded.on('message', () => floodSeen++)
  const times: number[] = []
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const t0 = performance.now()
    // devices/+/raw also feeds the second thrower: every device message makes it throw.
    await device.publishAsync('devices/rtt/raw', String(i), { qos: 1 })
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  const p95 = times[Math.floor(ROUND_TRIPS * 0.95)] as number
  const p50 = times[Math.floor(ROUND_TRIPS * 0.5)] as number
  t.diagnostic(
    `QoS 1 round trip during the flood: p50 ${p50.toFixed(1)} ms, p95 ${p95.toFixed(1)} ms, max ${(times.at(-1) as number).toFixed(1)} ms`,
  )
  const p90 = times[Math.floor(ROUND_TRIPS * 0.9)] as number
  assert.ok(p90 < 100, `p90 ${p90.toFixed(1)} ms`)
  assert.ok(floodSeen > 0, 'the flood reaches local subscribers (up to the rate)')

  // Errors logged with the node id, and limited per node.
  const errors = agent.logs.filter((l) => l.msg === 'node message' && l['nodeId'] === 'thrower-2')
  assert.ok(errors.length >= 1, 'the throwing node is named in the log')
  assert.match(
    String(errors[0]?.['text'] ?? (errors[0]?.['err'] as { message?: string } | undefined)?.message),
    /raw boom/,
  )
  assert.ok(errors.length <= 20, `at most a burst of lines per node (got ${errors.length})`)
  const s = await agent.status()
  assert.equal(s['agent'].state, 'running')
  assert.ok(s['nodeRed'].edge.throttled > 0)
  const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
  assert.match(metrics, /^edge_agent_nodered_throttled_total [1-9]\d*$/m)
})

test("a function node cannot reach the agent's internals", async (t) => {
  const agent = await startAgent(t, {
    startTimeoutMs: 60_000,
    config: { nodeRed: { enabled: true, host: '127.0.0.1', port: 0 } },
  })
  // The function node is no security sandbox (Node-RED's vm can be left
  // through any host object): what is checked is that nothing of the agent is
  // there to find, neither in its global context nor on the host's globalThis.
  const probe = `const host = Buffer.constructor.constructor('return globalThis')()
const seen = {
  globalKeys: global.keys(),
  settings: typeof RED.settings,
  hostGlobals: Object.getOwnPropertyNames(host),
}
msg.topic = 'site/probe'
msg.payload = seen
return msg`
  const flows = [
    { id: 'tab-p', type: 'tab', label: 'probe' },
    {
      id: 'inject-p',
      type: 'inject',
      z: 'tab-p',
      once: true,
      onceDelay: 0.1,
      repeat: '',
      props: [{ p: 'payload' }],
      payload: '',
      payloadType: 'date',
      wires: [['fn-p']],
    },
    { id: 'fn-p', type: 'function', z: 'tab-p', func: probe, outputs: 1, wires: [['out-p']] },
    { id: 'out-p', type: 'edge out', z: 'tab-p', topic: '', qos: '1', retain: 'true', wires: [] },
  ]
  const file = join(agent.dir, 'probe.json')
  writeFileSync(file, JSON.stringify(flows))
  const watcher = await client(t, agent.mqttUrl, { clientId: 'probe-watcher' })
  const got = new Promise<Record<string, unknown>>((resolve) =>
    watcher.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as Record<string, unknown>)),
  )
  await watcher.subscribeAsync('site/probe', { qos: 1 })
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile], { timeoutMs: 60_000 })
  assert.equal(r.code, 0, r.stderr)
  const seen = await got
  assert.deepEqual(seen['globalKeys'], [])
  assert.equal(seen['settings'], 'undefined')
  // What the agent's process has on globalThis beyond a bare `node`'s.
  const bare = spawnSync(
    process.execPath,
    ['-e', 'console.log(JSON.stringify(Object.getOwnPropertyNames(globalThis)))'],
    { encoding: 'utf8' },
  )
  const baseline = new Set(JSON.parse(bare.stdout) as string[])
  // tslib's helpers (__awaiter, ...) and regenerator's runtime are put there by libraries.
  const extra = (seen['hostGlobals'] as string[]).filter(
    (k) => !baseline.has(k) && !/^__[a-zA-Z]+$/.test(k) && k !== 'regeneratorRuntime',
  )
  assert.deepEqual(extra, [])
})
