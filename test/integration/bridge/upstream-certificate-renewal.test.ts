// A chained gateway keeps its own upstream client certificate current.
//
// Glossary:
//   L3      the upper agent: an mqtts listener (client certificates required)
//           and its local CA; its device lifetime is 40 s (tests only).
//   L2      the lower agent: one upstream to L3 over mqtts through a TCP proxy,
//           with a certificate `certs issue`d by L3 for L2's client id (40 s)
//           and renewCertificate enabled at half of the lifetime.
//   l2-gw   L2's identity at L3: certificate CN = MQTT client id = the {id}
//           of its topic space there (devices/l2-gw/#), so L2's rule remaps
//           sensors/# to devices/l2-gw/sensors/#.
//
// Timeline (from the issue of the first certificate, t = 0, notBefore t = -2 s):
// L2 renews at about t = 19 s (L3's window opens at 16 s), before the original
// expires at t = 40 s; past t = 40 s the proxy cuts the link, and L2 must
// connect again — which L3 allows only with the renewed certificate.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { startProxy } from '../../helpers/tcp-proxy.js'
import { nextMessage, waitFor } from '../../helpers/wait.js'
import { issueWithCli, opensslVerify } from '../certs/support.js'

const LIFETIME_SEC = 40

test(
  "L2 renews its upstream certificate from L3's CA before it expires, and reconnects with it after the original's notAfter",
  { timeout: 180_000 },
  async (t) => {
    const l3 = await startAgent(t, {
      mqtts: true,
      config: {
        site: { name: 'l3', level: 3 },
        certs: {
          allowShortLifetimes: true,
          backdateSec: 2,
          device: { lifetimeSec: LIFETIME_SEC, renewAfter: 0.4 },
          renewal: { minRequestIntervalSec: 1 },
        },
      },
    })
    const files = await issueWithCli(t, l3, 'l2-gw', ['--lifetime', `${LIFETIME_SEC}s`])
    const original = new X509Certificate(readFileSync(files.crt))
    const originalKey = readFileSync(files.key, 'utf8')
    const originalNotAfter = Date.parse(original.validTo)
    if (l3.mqttsPort === undefined) throw new Error('L3 has no mqtts listener')
    const proxy = await startProxy(t, l3.mqttsPort)

    const l2 = await startAgent(t, {
      config: {
        site: { name: 'l2', level: 2 },
        upstreams: [
          {
            name: 'l3',
            url: `mqtts://127.0.0.1:${proxy.port}`,
            protocolVersion: 4, // aedes at L3 speaks MQTT 3.1.1
            clientId: 'l2-gw',
            caFile: files.ca,
            certFile: files.crt,
            keyFile: files.key,
            loopDetection: false, // $edge-agent/identity is outside a device's space at L3
            status: { topic: 'devices/l2-gw/status' }, // so is the default status topic (and its Will)
            reconnect: { minMs: 200, maxMs: 2000, probeIntervalMs: 200 },
            renewCertificate: { enabled: true, atFraction: 0.5, retryMinMs: 1000, retryMaxMs: 5000, timeoutMs: 10000 },
            rules: [{ topic: 'sensors/#', direction: 'out', qos: 1, remotePrefix: 'devices/l2-gw/' }],
          },
        ],
      },
    })
    await l2.waitForLog((l) => l.msg === 'upstream connected', 30_000, 'L2 connected to L3')

    const observer = await client(t, l3.mqttUrl)
    await observer.subscribeAsync('devices/l2-gw/sensors/#', { qos: 1 })
    const device = await client(t, l2.mqttUrl)
    const flows = async (payload: string): Promise<void> => {
      const got = nextMessage(observer, 'devices/l2-gw/sensors/t1', 30_000)
      await device.publishAsync('sensors/t1', payload, { qos: 1 })
      assert.equal((await got).payload.toString(), payload)
    }
    await flows('with the original certificate')

    // 1. Renewed before the original expires, by L3's CA, installed in place.
    const renewed = await l2.waitForLog(
      (l) => l.msg === 'upstream client certificate renewed',
      60_000,
      "L2's renewal log line",
    )
    assert.ok(Date.now() < originalNotAfter, 'renewed before the original notAfter')
    const installed = new X509Certificate(readFileSync(files.crt))
    assert.notEqual(installed.serialNumber, original.serialNumber)
    assert.equal(installed.subject, 'CN=l2-gw')
    assert.ok(Date.parse(installed.validTo) > originalNotAfter)
    assert.notEqual(readFileSync(files.key, 'utf8'), originalKey, 'a new key')
    assert.equal(existsSync(`${files.key}.pending`), false, 'the pending key is gone once its certificate is installed')
    assert.equal(String(renewed['serial']).replace(/^0+/, ''), installed.serialNumber.replace(/^0+/, ''))
    await opensslVerify(files.ca, files.crt)
    const status = (await l2.status()).upstreams[0]
    assert.ok(status.certificate.renewals >= 1)
    assert.equal(status.certificate.lastError, null)
    assert.ok(Date.parse(status.certificate.nextRenewalAt) > Date.now())
    // The technician's view shows it too.
    const shown = await runCli(['status', '--url', l2.adminUrl])
    assert.equal(shown.code, 0, shown.stderr)
    assert.match(shown.stdout, /certificate\s+\S+, serial [0-9A-Fa-f]+, expires in /)
    assert.match(shown.stdout, /renewal\s+\d+ done, next /)
    await flows('after the renewal')

    // 2. Past the original's notAfter: a new connection works (with the new files only).
    await waitFor(
      () => Date.now() > originalNotAfter + 1_000,
      (LIFETIME_SEC + 10) * 1000,
      "the original certificate's notAfter",
      250,
    )
    assert.ok(l2.proc.exitCode === null)
    const reconnected = l2.waitForLog(
      (l) => l.msg === 'upstream connected',
      30_000,
      'L2 to reconnect after the cut',
      false,
    )
    proxy.cut()
    await reconnected
    assert.ok(
      Date.parse(new X509Certificate(readFileSync(files.crt)).validTo) > Date.now(),
      'connected with an unexpired certificate',
    )
    await flows('after the original expired')
    const refused = ((await l3.status()).certs?.refusedHandshakes ?? {}) as Record<string, number>
    assert.equal(refused['expired'] ?? 0, 0, `L3 refused no expired handshake: ${JSON.stringify(refused)}`)
    for (const l of l2.logs.filter((x) => x['component'] === 'certificate-renewer')) {
      t.diagnostic(
        `L2 ${l.level} ${l.msg} ${JSON.stringify({ serial: l['serial'], notAfter: l['notAfter'], renewAt: l['renewAt'], time: l['time'] })}`,
      )
    }
    await l2.stop() // before the after-hooks remove the certificate directory it writes into
  },
)
