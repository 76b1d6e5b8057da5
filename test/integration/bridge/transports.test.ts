// Upstream transports other than plain TCP, against Debian's Mosquitto:
// mqtts with a private CA and a client certificate (mutual TLS), and MQTT
// over WebSocket. Certificates are made with the openssl CLI in a temp dir.
//
// Glossary
//   upstream  Mosquitto with three listeners: plain (observer), TLS with
//             require_certificate, WebSocket
//   agent     the real agent, bridging over the TLS or WebSocket listener
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { nextMessage, waitFor } from '../../helpers/wait.js'
import { freePort, mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'

const run = promisify(execFile)
const skip = mosquittoMissing()
const scope = fileScope()
let upstream: RunningMosquitto
let observer: MqttClient
let tlsPort: number
let wsPort: number
let pki: { ca: string; clientCert: string; clientKey: string; otherCa: string }

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd, timeout: 30_000 })
}

/** A CA, a server certificate for 127.0.0.1, a client certificate, and an unrelated CA. */
async function makePki(dir: string): Promise<typeof pki & { serverCert: string; serverKey: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await openssl(
    ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=edge-test-ca'],
    dir,
  )
  await openssl(
    ['req', '-x509', ...ec, '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', '/CN=other-ca'],
    dir,
  )
  for (const [name, cn, san] of [
    ['server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    ['client', 'gateway-cell-2', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    await openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir)
    await run('sh', ['-c', `printf '%s\\n' '${san}' > ${name}.ext`], { cwd: dir })
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
      ],
      dir,
    )
  }
  return {
    ca: join(dir, 'ca.pem'),
    otherCa: join(dir, 'other.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
  }
}

before(async () => {
  if (skip !== undefined) return
  const dir = tmpDir(scope, 'edge-agent-pki-')
  const p = await makePki(dir)
  pki = p
  tlsPort = await freePort()
  wsPort = await freePort()
  upstream = await startMosquitto(scope, {
    extra: [
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${p.ca}`,
      `certfile ${p.serverCert}`,
      `keyfile ${p.serverKey}`,
      'require_certificate true',
      'use_identity_as_username true',
      `listener ${wsPort} 127.0.0.1`,
      'protocol websockets',
    ],
  })
  observer = await client(scope, upstream.url, { protocolVersion: 5, clientId: 'transport-observer' })
  await observer.subscribeAsync('up/#', { qos: 1 })
})

function bridgeTo(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstreams: [
      {
        name: 'up',
        url,
        reconnect: { minMs: 200, maxMs: 1000, probeIntervalMs: 200 },
        rules: [{ topic: 'data/#', direction: 'out', qos: 1, remotePrefix: 'up/' }],
        ...extra,
      },
    ],
  }
}

test('mqtts with a private CA and a client certificate (mutual TLS) carries the data', { skip }, async (t) => {
  const agent = await startAgent(t, {
    config: {
      site: { name: 'tls-site', level: 2 },
      ...bridgeTo(`mqtts://127.0.0.1:${tlsPort}`, { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey }),
    },
  })
  await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'a TLS upstream connection')
  const device = await client(t, agent.mqttUrl, { clientId: 'tls-dev' })
  const got = nextMessage(observer, 'up/data/tls')
  await device.publishAsync('data/tls', 'secure', { qos: 1 })
  assert.equal((await got).payload.toString(), 'secure')
})

test(
  'an upstream certificate from an untrusted CA is refused and retried with backoff, not a storm',
  { skip },
  async (t) => {
    const agent = await startAgent(t, {
      config: {
        site: { name: 'tls-bad', level: 2 },
        ...bridgeTo(`mqtts://127.0.0.1:${tlsPort}`, {
          caFile: pki.otherCa,
          certFile: pki.clientCert,
          keyFile: pki.clientKey,
        }),
      },
    })
    const refused = await agent.waitForLog(
      (l) => l.msg === 'upstream refused the connection',
      15_000,
      'the TLS refusal',
    )
    assert.equal(refused['kind'], 'rejected')
    const s = await waitFor(
      async () => {
        const st = await agent.status()
        return st['upstreams'][0].lastError !== null ? st : undefined
      },
      5_000,
      'the last error in status',
    )
    assert.equal(s['upstreams'][0].connected, false)
    // Probes must not turn a TLS refusal into rapid retries: attempts stay few.
    await new Promise((r) => setTimeout(r, 1_500))
    const attempts = (await agent.status())['upstreams'][0].totals.attempts as number
    assert.ok(attempts <= 5, `attempts within 1.5 s of backoff 200..1000 ms: ${attempts}`)
  },
)

test('MQTT over WebSocket carries the data', { skip }, async (t) => {
  const agent = await startAgent(t, {
    config: { site: { name: 'ws-site', level: 2 }, ...bridgeTo(`ws://127.0.0.1:${wsPort}`) },
  })
  await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'a WebSocket upstream connection')
  const device = await client(t, agent.mqttUrl, { clientId: 'ws-dev' })
  const got = nextMessage(observer, 'up/data/ws')
  await device.publishAsync('data/ws', 'framed', { qos: 1 })
  assert.equal((await got).payload.toString(), 'framed')
})
