// Renewal over MQTT on the real agent with no upstream at all: a device renews
// its certificate several times on an accelerated lifetime (24 s; window at
// 2/3 = 16 s) without ever dropping its connection, each new certificate
// valid and chaining to the CA; then the reference client
// (`edge-agent device renew`) does the same from the command line.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, runCli, type RunningAgent } from '../../helpers/agent-process.js'
import { nextMessage } from '../../helpers/wait.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { RenewalRefusedError, renewOverMqtt, type RenewResult } from '../../../src/certs/index.js'
import { deviceClient, issueWithCli, mqttsUrl, opensslVerify, type DeviceFiles } from './support.js'

const LIFETIME_SEC = 24
const scope = fileScope()
let agent: RunningAgent

before(async () => {
  agent = await startAgent(scope, {
    mqtts: true,
    config: {
      upstreams: [], // offline: there is no upstream at all
      certs: {
        allowShortLifetimes: true,
        backdateSec: 2,
        device: { lifetimeSec: LIFETIME_SEC, renewAfter: 0.667 },
        renewal: { minRequestIntervalSec: 1 },
      },
    },
  })
})

/** Renews as a device does: when told "too early", waits the retryAfterSec the gateway gave, then asks again. */
async function renewWhenAllowed(opts: Parameters<typeof renewOverMqtt>[0], log: string[]): Promise<RenewResult> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return await renewOverMqtt(opts)
    } catch (err) {
      if (
        !(err instanceof RenewalRefusedError) ||
        err.retryAfterSec === undefined ||
        !['too-early', 'rate-limited'].includes(err.error)
      )
        throw err
      log.push(`${err.error} ${err.retryAfterSec}s`)
      await new Promise((r) => setTimeout(r, err.retryAfterSec! * 1000)) // the protocol's own back-off
    }
  }
  throw new Error('no renewal after 5 attempts')
}

test('a device renews over MQTT three times with no upstream, staying connected, each certificate chaining to the CA', async (t) => {
  const d1 = await issueWithCli(t, agent, 'd1')
  const original = new X509Certificate(readFileSync(d1.crt))
  const c = await deviceClient(t, agent, d1)
  let drops = 0
  c.on('close', () => drops++)
  c.on('offline', () => drops++)

  const refusals: string[] = []
  let keyPem = readFileSync(d1.key, 'utf8')
  let previousNotAfter = Date.parse(original.validTo)
  const dir = tmpDir(t)
  const started = Date.now()
  for (let round = 1; round <= 3; round++) {
    const r = await renewWhenAllowed(
      { client: c, id: 'd1', caPem: readFileSync(d1.ca, 'utf8'), currentKeyPem: keyPem, timeoutMs: 10_000 },
      refusals,
    )
    const file = join(dir, `d1-${round}.crt`)
    writeFileSync(file, r.certPem)
    await opensslVerify(d1.ca, file)
    const cert = new X509Certificate(r.certPem)
    assert.equal(cert.subject, 'CN=d1')
    assert.ok(Date.parse(cert.validTo) > previousNotAfter, 'each certificate outlives the previous one')
    assert.equal(
      Math.round((Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 1000),
      LIFETIME_SEC + 2,
      'lifetime + backdate',
    )
    assert.ok(r.keyRotated)
    keyPem = r.keyPem
    previousNotAfter = Date.parse(cert.validTo)
    t.diagnostic(
      `renewal ${round} at +${Math.round((Date.now() - started) / 1000)} s: serial ${r.serial}, notAfter ${r.notAfter}`,
    )
  }
  // The first attempt came before the window and was told when to return.
  assert.match(refusals[0] ?? '', /^too-early \d+s$/)

  // The connection outlived the certificate it was opened with, and still works.
  assert.ok(Date.now() > Date.parse(original.validTo), 'past the original notAfter')
  assert.equal(drops, 0, 'never disconnected')
  const echo = nextMessage(c, 'devices/d1/echo')
  await c.subscribeAsync('devices/d1/echo', { qos: 1 })
  await c.publishAsync('devices/d1/echo', 'still here', { qos: 1 })
  assert.equal((await echo).payload.toString(), 'still here')

  const s = await agent.status()
  assert.deepEqual(s.upstreams, [])
  assert.ok(s.certs.renewal.renewed >= 3)
  assert.equal(s.certs.clock.state, 'ok')
  const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
  assert.match(metrics, /edge_agent_certs_renewed_total [3-9]/)
})

test('the reference client `edge-agent device renew --wait` renews, verifies and installs the new pair', async (t) => {
  const d2: DeviceFiles = await issueWithCli(t, agent, 'd2')
  const oldSerial = new X509Certificate(readFileSync(d2.crt)).serialNumber
  const oldKey = readFileSync(d2.key, 'utf8')
  const r = await runCli(
    ['device', 'renew', '--cert', d2.crt, '--key', d2.key, '--ca', d2.ca, '--url', mqttsUrl(agent), '--wait'],
    { timeoutMs: 60_000 },
  )
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stderr, /"status":"waiting","error":"too-early"/)
  const summary = JSON.parse(r.stdout.trim()) as { id: string; status: string; serial: string; renewAfter: string }
  assert.equal(summary.status, 'renewed')
  const installed = new X509Certificate(readFileSync(d2.crt))
  assert.notEqual(installed.serialNumber, oldSerial)
  assert.notEqual(readFileSync(d2.key, 'utf8'), oldKey, 'a new key')
  await opensslVerify(d2.ca, d2.crt)
  // The installed pair works.
  const c = await deviceClient(t, agent, d2)
  assert.ok(c.connected)
})
