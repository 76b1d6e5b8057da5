// A renewal reply lost on a live session: the device asks again on the same
// connection with the same key and gets the certificate already issued, not
// "too-early" against a certificate it never received (found by `npm run soak`,
// where such devices were refused every second until their certificate lapsed).
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { waitFor } from '../../helpers/wait.js'
import {
  PROTOCOL_VERSION,
  createCsr,
  generateKeyPair,
  importPrivateKey,
  renewOverMqtt,
  renewalTopics,
} from '../../../src/certs/index.js'
import { deviceClient, issueWithCli } from './support.js'

const LIFETIME_SEC = 60
const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope, {
    mqtts: true,
    config: {
      upstreams: [],
      certs: {
        allowShortLifetimes: true,
        backdateSec: 0,
        // Renewable 6 s after issue: the test need not wait for 2/3 of a lifetime.
        device: { lifetimeSec: LIFETIME_SEC, renewAfter: 0.1 },
        renewal: { minRequestIntervalSec: 0 },
      },
    },
  })
})

test('a device whose renewal reply was lost gets the same certificate again on the same session', async (t) => {
  const d1 = await issueWithCli(t, agent, 'd1')
  const original = new X509Certificate(readFileSync(d1.crt))
  const c = await deviceClient(t, agent, d1)
  const renewableAt = Date.parse(original.validFrom) + 0.1 * LIFETIME_SEC * 1000 + 1000
  await waitFor(() => Date.now() > renewableAt, 30_000, 'the renewal window to open')

  // The first request goes out with nobody subscribed to the reply topic: its reply is lost.
  const newKey = await generateKeyPair()
  const { request } = renewalTopics('devices/{id}/$certs', 'd1')
  const csr = await createCsr({ key: await importPrivateKey(newKey.privateKeyPem), cn: 'd1' })
  await c.publishAsync(request, JSON.stringify({ v: PROTOCOL_VERSION, requestId: 'lost', csr }), { qos: 1 })
  await waitFor(
    async () => (await agent.status()).certs?.renewal?.renewed === 1,
    20_000,
    'the agent to issue the first certificate',
  )

  // Same session, same key: the certificate issued for the lost reply comes back.
  const r = await renewOverMqtt({
    client: c,
    id: 'd1',
    caPem: readFileSync(d1.ca, 'utf8'),
    currentKeyPem: readFileSync(d1.key, 'utf8'),
    newKeyPem: newKey.privateKeyPem,
    timeoutMs: 10_000,
  })
  const s = await agent.status()
  assert.equal(s.certs.renewal.renewed, 1, 'no second certificate was issued')
  assert.equal(s.certs.renewal.resent, 1)
  assert.deepEqual(s.certs.renewal.refused, {})
  assert.equal(new X509Certificate(r.certPem).subject, 'CN=d1')
  assert.ok(Date.parse(r.notAfter) > Date.parse(original.validTo))
})
