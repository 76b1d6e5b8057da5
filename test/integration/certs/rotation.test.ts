// The broker's own server certificate rotates on the real agent (accelerated:
// 20 s lifetime, rotated at half) while devices stay connected, and new
// connections see the new certificate (Node's TLS and `openssl s_client`).
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { once } from 'node:events'
import { X509Certificate } from 'node:crypto'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { collectMessages, withTimeout } from '../../helpers/wait.js'
import { deviceClient, issueWithCli, openssl, type DeviceFiles } from './support.js'

const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope, {
    mqtts: true,
    config: { certs: { allowShortLifetimes: true, backdateSec: 2, server: { lifetimeSec: 20, renewAfter: 0.5 } } },
  })
})

/** The serial of the certificate the broker presents to a new TLS connection. */
async function presentedSerial(files: DeviceFiles): Promise<string> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: agent.mqttsPort ?? 0,
    key: readFileSync(files.key),
    cert: readFileSync(files.crt),
    ca: readFileSync(files.ca),
  })
  try {
    await withTimeout(once(socket, 'secureConnect'), 5_000, 'a TLS handshake')
    return socket.getPeerX509Certificate()?.serialNumber.replace(/^0+/, '') ?? ''
  } finally {
    socket.destroy()
  }
}

test('the server certificate rotates while devices stay connected; new connections get the new one', async (t) => {
  const first = await agent.waitForLog(
    (l) => l.msg === 'server certificate rotated',
    5_000,
    'the first server certificate',
  )
  const d1 = await issueWithCli(t, agent, 'd1')
  const d2 = await issueWithCli(t, agent, 'd2')
  const devices = [await deviceClient(t, agent, d1), await deviceClient(t, agent, d2)]
  let drops = 0
  for (const c of devices) c.on('close', () => drops++)
  assert.equal(await presentedSerial(d1), first['serial'])

  const observer = await client(t, agent.mqttUrl)
  await observer.subscribeAsync('devices/+/beat', { qos: 1 })
  const beat = async (round: number): Promise<void> => {
    const got = collectMessages(observer, 2, (topic) => topic.endsWith('/beat'), 5_000)
    await devices[0]?.publishAsync('devices/d1/beat', String(round), { qos: 1 })
    await devices[1]?.publishAsync('devices/d2/beat', String(round), { qos: 1 })
    assert.deepEqual(
      (await got).map((m) => m.payload.toString()),
      [String(round), String(round)],
    )
  }
  await beat(0)

  let previous = first['serial'] as string
  for (let round = 1; round <= 2; round++) {
    const rotated = await agent.waitForLog(
      (l) => l.msg === 'server certificate rotated' && l['previous'] === previous,
      30_000,
      `server certificate rotation ${round}`,
    )
    const serial = rotated['serial'] as string
    assert.notEqual(serial, previous)
    assert.equal(drops, 0, 'no device was dropped')
    await beat(round) // the old sessions still carry traffic
    assert.equal(await presentedSerial(d1), serial, 'a new connection sees the new certificate')
    previous = serial
  }

  // OpenSSL sees it too, and it verifies against the CA bundle devices hold.
  const s = await openssl([
    's_client',
    '-connect',
    `127.0.0.1:${agent.mqttsPort ?? 0}`,
    '-cert',
    d1.crt,
    '-key',
    d1.key,
    '-CAfile',
    d1.ca,
    '-verify_return_error',
  ])
  assert.match(s.stdout, /Verify return code: 0 \(ok\)/)
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(s.stdout)?.[0] ?? ''
  const presented = new X509Certificate(pem).serialNumber.replace(/^0+/, '')
  const current = (await agent.status()).certs.server.serial as string
  assert.ok([previous, current].includes(presented), `${presented} is the current certificate`)
  assert.ok((await agent.status()).certs.server.rotations >= 3)
})
