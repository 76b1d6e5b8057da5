// MQTT 5 devices on the mqtts listener: the certificate identity holds as for
// MQTT 3.1.1 (client id = certificate identity, device ACL), with MQTT 5
// reason codes for what is refused.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import type { MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { nextMessage } from '../../helpers/wait.js'
import { deviceClient, issueWithCli, refused, tlsOptions, type DeviceFiles } from '../certs/support.js'

const scope = fileScope()
let agent: RunningAgent
let dev: DeviceFiles

before(async () => {
  agent = await startAgent(scope, { mqtts: true, config: { certs: { allowShortLifetimes: true, backdateSec: 1 } } })
  dev = await issueWithCli(scope, agent, 'dev5')
})

async function subscribeCodes(c: MqttClient, filter: string): Promise<number[]> {
  try {
    return (await c.subscribeAsync(filter, { qos: 1 })).map((g) => g.qos)
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (granted === undefined) throw err
    return granted
  }
}

test('an MQTT 5 device connects with its certificate and works inside its own space only', async (t) => {
  const observer = await client(t, agent.mqttUrl)
  const d = await deviceClient(t, agent, dev, { protocolVersion: 5 })
  await d.subscribeAsync('devices/dev5/#', { qos: 1 })
  const got = nextMessage(d, 'devices/dev5/cmd')
  await observer.publishAsync('devices/dev5/cmd', 'go', { qos: 1 })
  assert.equal((await got).payload.toString(), 'go')
  assert.deepEqual(await subscribeCodes(d, 'devices/other/#'), [0x87], 'another device space: SUBACK 0x87')
})

test("an MQTT 5 client id that is not the certificate's identity gets CONNACK 0x85", async () => {
  const err = await refused(agent, { ...tlsOptions(dev), protocolVersion: 5, clientId: 'not-dev5' })
  assert.equal(err.code, 0x85, err.message)
})
