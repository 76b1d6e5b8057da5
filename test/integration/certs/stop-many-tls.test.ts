// SIGTERM with a few hundred TLS devices connected and renewal replies in
// flight: the agent exits 0, within its stop budget, with nothing at error
// level (found by `npm run soak`: with 200 TLS devices the local broker did not
// stop within 8 s and the stop exited 1).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import mqtt, { type MqttClient } from 'mqtt'
import { startAgent } from '../../helpers/agent-process.js'
import { withTimeout } from '../../helpers/wait.js'
import { PROTOCOL_VERSION, createCsr, generateKeyPair, renewalTopics } from '../../../src/certs/index.js'
import { forgeWithAgentCa, mqttsUrl, tlsOptions } from './support.js'

const DEVICES = 300

test(`SIGTERM with ${DEVICES} TLS devices connected and renewals in flight exits 0 with no error lines`, async (t) => {
  const agent = await startAgent(t, {
    mqtts: true,
    config: {
      upstreams: [],
      certs: {
        allowShortLifetimes: true,
        backdateSec: 0,
        device: { lifetimeSec: 60, renewAfter: 0.1 },
        renewal: { minRequestIntervalSec: 0 },
      },
    },
  })
  const now = Date.now()
  const clients: MqttClient[] = []
  t.after(() => Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined))))
  for (let i = 0; i < DEVICES; i += 25) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(25, DEVICES - i) }, async (_, j) => {
        const id = `dev-${i + j}`
        const files = await forgeWithAgentCa(t, agent, id, now - 30_000, now + 60_000)
        const c = await withTimeout(
          mqtt.connectAsync(mqttsUrl(agent), {
            clientId: id,
            protocolVersion: 4,
            reconnectPeriod: 0,
            connectTimeout: 30_000,
            ...tlsOptions(files),
          }),
          60_000,
          `${id} to connect`,
        )
        c.on('error', () => undefined)
        return c
      }),
    )
    clients.push(...batch)
  }
  assert.equal(clients.length, DEVICES)
  // Renewal requests from a third of the devices, not awaited: some replies
  // are in flight when the SIGTERM arrives.
  const key = await generateKeyPair()
  await Promise.all(
    clients.slice(0, DEVICES / 3).map(async (c, i) => {
      const id = `dev-${i}`
      const { request, reply } = renewalTopics('devices/{id}/$certs', id)
      await c.subscribeAsync(reply, { qos: 1 })
      c.publish(
        request,
        JSON.stringify({ v: PROTOCOL_VERSION, requestId: `r${i}`, csr: await createCsr({ key, cn: id }) }),
        { qos: 1 },
      )
    }),
  )
  // Devices in the middle of a handshake (TCP up, no ClientHello yet): a
  // listener waits for them up to connectTimeoutMs (10 s), longer than the
  // agent's stop budget.
  const stalled: Socket[] = []
  t.after(() => stalled.forEach((s) => s.destroy()))
  for (let i = 0; i < 5; i++) {
    const s = connect(agent.mqttsPort ?? 0, '127.0.0.1')
    s.on('error', () => undefined)
    stalled.push(s)
    await once(s, 'connect')
  }
  await agent.waitForLog((l) => l.msg === 'certificate renewed', 30_000, 'a first renewal')
  const { code, signal } = await agent.stop('SIGTERM', 30_000)
  assert.equal(signal, null)
  assert.equal(code, 0, JSON.stringify(agent.logs.filter((l) => l.level >= 40).slice(0, 5)))
  assert.deepEqual(
    agent.logs.filter((l) => l.level >= 50),
    [],
    'no error or fatal log lines',
  )
  assert.ok(agent.logs.some((l) => l.msg === 'agent stopped'))
})
