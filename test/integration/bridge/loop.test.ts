// A loop-forming configuration between real agents: A forwards to B and B
// forwards back to A (and a three-agent cycle A → B → C → A). Each agent
// learns, from the identity the other publishes on its own broker, that the
// upstream is also below it, and refuses to forward; a device message goes
// nowhere instead of circulating.
//
// Glossary
//   A, B, C   real agents (dist/agent/main.js) on fixed free loopback ports,
//             each the others' upstream over MQTT 3.1.1 (aedes speaks only 3.1.1)
//   device    an mqtt.js client publishing at A
//   watchers  subscribers at every agent counting copies of the device message
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { freePort } from '../../helpers/mosquitto.js'
import type { Scope } from '../../helpers/scope.js'

async function ring(t: Scope, names: string[]): Promise<RunningAgent[]> {
  const ports = await Promise.all(names.map(() => freePort()))
  const agents: RunningAgent[] = []
  for (let i = 0; i < names.length; i++) {
    const next = (i + 1) % names.length
    agents.push(
      await startAgent(t, {
        config: {
          site: { name: names[i], level: 2 },
          broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: ports[i] }] },
          upstreams: [
            {
              name: `to-${names[next]}`,
              url: `mqtt://127.0.0.1:${ports[next]}`,
              protocolVersion: 4,
              reconnect: { minMs: 100, maxMs: 500, probeIntervalMs: 100 },
              rules: [{ topic: 'x/#', direction: 'out', qos: 1 }],
            },
          ],
        },
      }),
    )
  }
  return agents
}

async function expectRefusal(t: Scope, agents: RunningAgent[]): Promise<void> {
  // Every agent reports the loop.
  for (const a of agents) {
    await a.waitForLog((l) => l.msg.startsWith('forwarding loop detected'), 15_000, 'loop detection')
  }
  const copies = new Map<string, number>()
  for (const a of agents) {
    const w = await client(t, a.mqttUrl, { clientId: `watch-${a.pid}` })
    await w.subscribeAsync('x/#', { qos: 1 })
    w.on('message', () => copies.set(String(a.pid), (copies.get(String(a.pid)) ?? 0) + 1))
  }
  const first = agents[0] as RunningAgent
  const device = await client(t, first.mqttUrl, { clientId: 'loop-device' })
  await device.publishAsync('x/1', 'once', { qos: 1 })
  // Short, explicit "nothing more arrives" window: a loop would deliver copies within milliseconds.
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(copies.get(String(first.pid)), 1, 'the device message once at its own agent')
  for (const a of agents.slice(1))
    assert.equal(copies.get(String(a.pid)) ?? 0, 0, 'and never forwarded around the ring')
  for (const a of agents) {
    const s = await a.status()
    const u = s['upstreams'][0]
    assert.notEqual(u.loop, null, 'status shows the loop')
    assert.equal(u.connected, true, 'connected, but not forwarding')
    const metrics = await (await fetch(`${a.adminUrl}/metrics`)).text()
    assert.match(metrics, /^edge_agent_upstream_loop\{upstream="[^"]+"\} 1$/m)
  }
  // The message is kept, not dropped: fixing the config forwards it.
  assert.equal((await first.status())['upstreams'][0].backlog.depth, 1)
}

test('A forwarding to B and B back to A is refused, not looped', async (t) => {
  await expectRefusal(t, await ring(t, ['loop-a', 'loop-b']))
})

test('a three-agent cycle A → B → C → A is refused by every member', async (t) => {
  await expectRefusal(t, await ring(t, ['ring-a', 'ring-b', 'ring-c']))
})
