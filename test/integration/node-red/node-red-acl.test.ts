// What a flow publishes through `edge out` passes the device ACL under the
// flow identity (nodeRed.identity), which a device group can name.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { nextMessage } from '../../helpers/wait.js'

test('edge out publishes as the flow identity: allowed where a device group grants it, refused elsewhere', async (t) => {
  const agent = await startAgent(t, {
    mqtts: true,
    startTimeoutMs: 60_000,
    config: {
      nodeRed: { enabled: true, host: '127.0.0.1', port: 0, identity: 'flows-1' },
      devices: { groups: [{ name: 'flows', members: ['flows-*'], publish: ['site/#'] }] },
    },
  })
  const inject = (id: string, topic: string, wire: string) => ({
    id,
    type: 'inject',
    z: 'tab-acl',
    once: true,
    onceDelay: 0.5,
    repeat: '',
    topic,
    props: [{ p: 'payload' }, { p: 'topic', vt: 'str' }],
    payload: 'x',
    payloadType: 'str',
    wires: [[wire]],
  })
  const flows = [
    { id: 'tab-acl', type: 'tab', label: 'acl' },
    inject('inj-ok', 'site/line-1/ok', 'out-ok'),
    inject('inj-denied', 'plant/secret', 'out-denied'),
    { id: 'out-ok', type: 'edge out', z: 'tab-acl', topic: '', qos: '1', retain: 'false', wires: [] },
    { id: 'out-denied', type: 'edge out', z: 'tab-acl', topic: '', qos: '1', retain: 'false', wires: [] },
  ]
  const file = join(agent.dir, 'acl.json')
  writeFileSync(file, JSON.stringify(flows))
  // A plain-listener client has no device ACL: it sees whatever is published.
  const watcher = await client(t, agent.mqttUrl, { clientId: 'acl-watcher' })
  await watcher.subscribeAsync(['site/#', 'plant/#'], { qos: 1 })
  const seen: string[] = []
  watcher.on('message', (topic) => seen.push(topic))
  const ok = nextMessage(watcher, 'site/line-1/ok', 60_000)
  const denied = agent.waitForLog(
    (l) => l.msg === 'node message' && l['nodeId'] === 'out-denied',
    60_000,
    'the denied publish logged with the node id',
    false,
  )
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile], { timeoutMs: 60_000 })
  assert.equal(r.code, 0, r.stderr)
  await ok
  const line = await denied
  assert.match(String(line['text']), /flow identity flows-1 may not publish to plant\/secret/)
  const s = await agent.status()
  assert.equal(s['nodeRed'].edge.failed, 1)
  assert.ok(!seen.includes('plant/secret'), 'the refused message was not published')
})
