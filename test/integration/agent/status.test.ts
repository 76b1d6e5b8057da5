// `edge-agent status`, /status, /healthz and /metrics show live numbers.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startAgent, runCli } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { collectMessages, waitFor } from '../../helpers/wait.js'

function metricValue(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

test('status, /status and /metrics show live client and message counts', async (t) => {
  const agent = await startAgent(t)
  const health = await fetch(`${agent.adminUrl}/healthz`)
  assert.equal(health.status, 200)
  assert.deepEqual(await health.json(), { status: 'ok', state: 'running' })

  const sub = await client(t, agent.mqttUrl, { clientId: 'sub' })
  const pub = await client(t, agent.mqttUrl, { clientId: 'pub' })
  await client(t, agent.mqttUrl, { clientId: 'idle' })
  await sub.subscribeAsync('count/#', { qos: 1 })
  const got = collectMessages(sub, 25, (topic) => topic.startsWith('count/'), 10_000)
  for (let i = 0; i < 25; i++) await pub.publishAsync(`count/${i}`, 'x', { qos: 1 })
  await got

  const status = await waitFor(
    async () => {
      const s = await agent.status()
      return s['broker']['messagesDelivered'] >= 25 ? s : undefined
    },
    5_000,
    'delivery counters to reach 25',
  )
  assert.equal(status['broker']['clients'], 3)
  assert.equal(status['broker']['messagesReceived'], 25)
  assert.equal(status['agent']['state'], 'running')
  assert.ok(status['process']['rssBytes'] > 0)

  const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
  assert.equal(metricValue(metrics, 'edge_agent_broker_clients'), 3)
  assert.equal(metricValue(metrics, 'edge_agent_broker_messages_received_total'), 25)
  assert.equal(metricValue(metrics, 'edge_agent_broker_messages_delivered_total'), 25)
  assert.equal(metricValue(metrics, 'edge_agent_up'), 1)
  assert.match(metrics, /^# TYPE edge_agent_broker_messages_received_total counter$/m)
  assert.match(metrics, /^edge_agent_info\{version="[^"]+",site="test-site",level="2"\} 1$/m)
  // The fsync histogram counts the same fsyncs as the counter, from the same snapshot.
  assert.match(metrics, /^# TYPE edge_agent_buffer_wal_fsync_duration_seconds histogram$/m)
  const fsyncs = metricValue(metrics, 'edge_agent_buffer_wal_fsyncs_total')
  assert.equal(typeof fsyncs, 'number')
  assert.equal(metricValue(metrics, 'edge_agent_buffer_wal_fsync_duration_seconds_count'), fsyncs)
  assert.match(
    metrics,
    new RegExp(`^edge_agent_buffer_wal_fsync_duration_seconds_bucket\\{le="\\+Inf"\\} ${fsyncs}$`, 'm'),
  )

  const human = await runCli(['status', '--url', agent.adminUrl])
  assert.equal(human.code, 0, human.stderr)
  assert.match(human.stdout, /site test-site \(Purdue level 2\)\s+running/)
  assert.match(human.stdout, /clients connected\s+3/)
  assert.match(human.stdout, /messages received\s+25 /)
  assert.match(human.stdout, new RegExp(`mqtt\\s+127\\.0\\.0\\.1:${agent.mqttPort}`))
  assert.match(human.stdout, /state\s+ok, durability full/)

  const json = await runCli(['status', '--url', agent.adminUrl, '--json'])
  assert.equal(json.code, 0)
  assert.equal((JSON.parse(json.stdout) as { broker: { clients: number } }).broker.clients, 3)
})

test('the admin endpoint answers 404 with the list of endpoints and refuses writes', async (t) => {
  const agent = await startAgent(t)
  const res = await fetch(`${agent.adminUrl}/nope`)
  assert.equal(res.status, 404)
  assert.deepEqual(((await res.json()) as { endpoints: string[] }).endpoints, ['/healthz', '/status', '/metrics'])
  assert.equal((await fetch(`${agent.adminUrl}/status`, { method: 'POST' })).status, 405)
})
