// What aedes 2.0.0-beta.1 lost of aedes 1.2, on the real agent
// (src/local-broker/inbound-window.ts, local-broker.ts, hooks.ts):
// limits.maxInflightPerClient closes a client that leaves too many QoS 2
// messages unreleased; two PUBRELs for one id in one read (aedes 2 rejects the
// second delete inside `.finally()`, an unhandled rejection) and client ids or
// filters named after Object's prototype (GHSA-52qw-whmv-87c5) leave the agent
// running.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { CONNACK_ACCEPTED, client, connectPacket, publishPacket, rawConnection } from '../../helpers/mqtt-clients.js'
import { nextMessage, withTimeout } from '../../helpers/wait.js'

const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope, { config: { broker: { limits: { maxInflightPerClient: 3 } } } })
})

const pubrel = (id: number): Buffer => Buffer.from([0x62, 2, id >> 8, id & 0xff])
const PUBREC = 4

test('limits.maxInflightPerClient: the 4th unreleased QoS 2 message closes the connection, released ones do not count', async (t) => {
  const raw = await rawConnection(t, agent.mqttPort)
  raw.socket.write(connectPacket({ clientId: 'qos2-window' }))
  await raw.waitForBytes(CONNACK_ACCEPTED.length)
  for (const id of [1, 2, 3]) raw.socket.write(publishPacket('q2/w', Buffer.from('x'), 2, id))
  await raw.waitForBytes(CONNACK_ACCEPTED.length + 3 * PUBREC)
  // released: its slot is free again
  raw.socket.write(pubrel(1))
  await raw.waitForBytes(CONNACK_ACCEPTED.length + 4 * PUBREC) // PUBCOMP
  raw.socket.write(publishPacket('q2/w', Buffer.from('x'), 2, 4))
  await raw.waitForBytes(CONNACK_ACCEPTED.length + 5 * PUBREC)
  assert.equal(raw.socket.destroyed, false, 'three unreleased: still connected')
  raw.socket.write(publishPacket('q2/w', Buffer.from('x'), 2, 5))
  await withTimeout(raw.closed, 10_000, 'the connection to close')
  assert.equal(raw.received().length, CONNACK_ACCEPTED.length + 5 * PUBREC, 'no PUBREC for the 4th unreleased')
})

test('two PUBRELs for one id in one read: two PUBCOMPs, and the agent keeps running', async (t) => {
  const raw = await rawConnection(t, agent.mqttPort)
  raw.socket.write(connectPacket({ clientId: 'double-pubrel' }))
  await raw.waitForBytes(CONNACK_ACCEPTED.length)
  raw.socket.write(publishPacket('q2/d', Buffer.from('x'), 2, 7))
  await raw.waitForBytes(CONNACK_ACCEPTED.length + PUBREC)
  raw.socket.write(Buffer.concat([pubrel(7), pubrel(7)]))
  const got = await raw.waitForBytes(CONNACK_ACCEPTED.length + 3 * PUBREC)
  assert.deepEqual(got.subarray(CONNACK_ACCEPTED.length + PUBREC), Buffer.from([0x70, 2, 0, 7, 0x70, 2, 0, 7]))
  const status = await agent.status()
  assert.ok(status, 'the agent answers')
  assert.equal(agent.proc.exitCode, null, 'the agent is still running')
})

test("client ids and filters named 'constructor', '__proto__', 'toString' (3.1.1 and 5) work and the agent runs on", async (t) => {
  for (const protocolVersion of [4, 5] as const) {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const c = await client(t, agent.mqttUrl, { protocolVersion, clientId: name })
      const got = nextMessage(c, name)
      await c.subscribeAsync(name, { qos: 1 })
      await c.publishAsync(name, 'x', { qos: 1 })
      assert.equal((await got).payload.toString(), 'x')
      await c.unsubscribeAsync(name)
      await c.endAsync()
    }
  }
  assert.equal(agent.proc.exitCode, null, 'the agent is still running')
})
