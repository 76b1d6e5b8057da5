// The gateway's ACME certificate as the client certificate of a bridge to a
// real Mosquitto that requires client certificates chaining to pebble's
// root. The agent runs as a process (dist/agent/main.js); pebble and
// pebble-challtestsrv as in acme-issuance.test.ts.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import { normalizeSerial } from '../../../src/certs/index.js'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { freePort, mosquittoMissing, startMosquitto, type RunningMosquitto } from '../../helpers/mosquitto.js'
import { makeTestTls, pebbleMissing, startPebble, type RunningPebble } from '../../helpers/pebble.js'
import { fileScope, type Scope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { waitFor } from '../../helpers/wait.js'

const skip = pebbleMissing() ?? mosquittoMissing()
const scope = fileScope()

let pebble: RunningPebble
let httpPort: number
let tlsPort: number
let serverTls: ReturnType<typeof makeTestTls>

/**
 * Mosquitto with a plain listener (the test's observer) and an mqtts one requiring client certificates from
 * `clientCaFile`.
 */
async function upstream(t: Scope, clientCaFile: string): Promise<RunningMosquitto & { tlsPort: number }> {
  const port = await freePort()
  const m = await startMosquitto(t, {
    extra: [
      `listener ${port} 127.0.0.1`,
      `cafile ${clientCaFile}`,
      `certfile ${serverTls.certFile}`,
      `keyfile ${serverTls.keyFile}`,
      'require_certificate true',
    ],
  })
  return { ...m, tlsPort: port }
}

function acmeConfig(o: { directoryUrl?: string; maxIntervalSec?: number } = {}): Record<string, unknown> {
  return {
    directoryUrl: o.directoryUrl ?? pebble.directoryUrl,
    caFile: pebble.httpsCaFile,
    identifiers: ['gw.edge.test'],
    challenge: 'http-01',
    http01: { host: '127.0.0.1', port: httpPort },
    maxIntervalSec: o.maxIntervalSec ?? 0,
    retryMinMs: 500,
    retryMaxMs: 3000,
  }
}

function bridgeTo(m: { tlsPort: number }): Record<string, unknown> {
  return {
    name: 'plant',
    url: `mqtts://127.0.0.1:${m.tlsPort}`,
    caFile: serverTls.caFile,
    clientCertificate: 'acme',
    reconnect: { minMs: 200, maxMs: 2000, probeIntervalMs: 200 },
    rules: [{ topic: 'data/#', direction: 'out', qos: 1 }],
  }
}

/** Sequence numbers received at the upstream, in arrival order. */
async function observe(t: Scope, m: RunningMosquitto): Promise<number[]> {
  const seen: number[] = []
  const obs = await client(t, m.url, { clean: true })
  obs.on('message', (_topic, payload) => seen.push(Number(payload.toString())))
  await obs.subscribeAsync('data/#', { qos: 1 })
  return seen
}

function assertInOrderNoLoss(seen: readonly number[], n: number, inflight: number): void {
  const unique = [...new Set(seen)]
  assert.deepEqual(
    unique,
    Array.from({ length: n }, (_, i) => i),
    'every message arrived, in order',
  )
  assert.ok(
    seen.length - unique.length <= inflight * 4,
    `duplicates (${seen.length - unique.length}) stay within the in-flight window per swap`,
  )
}

describe('gateway ACME certificate used by an upstream', { skip, timeout: 200_000 }, () => {
  before(async () => {
    httpPort = await freePort()
    tlsPort = await freePort()
    pebble = await startPebble(scope, { httpPort, tlsPort })
    serverTls = makeTestTls(tmpDir(scope, 'edge-agent-acme-up-'), 'upstream')
  })

  it('keeps delivering to Mosquitto across three certificate swaps, nothing lost, order kept', async (t) => {
    const dir = tmpDir(t)
    const rootFile = join(dir, 'pebble-root.pem')
    writeFileSync(rootFile, await pebble.root())
    const m = await upstream(t, rootFile)
    const seen = await observe(t, m)
    const agent = await startAgent(t, {
      config: { certs: { acme: acmeConfig({ maxIntervalSec: 4 }) }, upstreams: [bridgeTo(m)] },
    })
    await agent.waitForLog(
      (l) => l.msg === 'upstream connected',
      60_000,
      'the bridge connected with the first certificate',
    )
    const device = await client(t, agent.mqttUrl)
    let sent = 0
    let serials = new Set<string>()
    const deadline = Date.now() + 90_000
    // Publish steadily until three more certificates have been promoted (bounded in count and time).
    while (sent < 10_000 && Date.now() < deadline) {
      await device.publishAsync('data/seq', String(sent++), { qos: 1 })
      if (sent % 20 === 0) {
        const st = await agent.status()
        const g = st['gatewayCertificate'] as { serial: string | null; renewals: number }
        if (g.serial !== null) serials.add(g.serial)
        if (g.renewals >= 4) break
        await new Promise((r) => setTimeout(r, 50)) // pacing of the load loop, not a synchronisation
      }
    }
    const st = await agent.status()
    assert.ok(
      (st['gatewayCertificate'] as { renewals: number }).renewals >= 4,
      `three swaps after the first issuance within ${sent} messages`,
    )
    await waitFor(() => new Set(seen).size >= sent, 60_000, `all ${sent} messages at the upstream`)
    assertInOrderNoLoss(seen, sent, 100)
    // The last swap's reconnect may still be under way when its promotion shows in status.
    const up = await waitFor(
      async () => {
        const u = (await agent.status())['upstreams'][0] as {
          totals: { connects: number }
          held: string | null
          connected: boolean
        }
        return u.totals.connects >= 4 && u.connected ? u : undefined
      },
      30_000,
      'a reconnect with each new certificate',
    )
    assert.equal(up.held, null)
    serials = new Set([...serials, (st['gatewayCertificate'] as { serial: string }).serial])
    assert.ok(serials.size >= 3)
    // Renewals go on every few seconds here: the listed serial is the one current before or after the listing.
    const serialNow = async (): Promise<string> =>
      ((await agent.status())['gatewayCertificate'] as { serial: string }).serial
    const before = await serialNow()
    const list = await runCli(['certs', 'list', '--config', agent.configFile])
    const after = await serialNow()
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, /gateway certificate \(certs\.acme\):/)
    assert.match(list.stdout, /issuer +CN=Pebble Intermediate CA/)
    assert.match(list.stdout, new RegExp(`serial +(${before}|${after})`))
    const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
    assert.match(metrics, /^edge_agent_gateway_certificate_expiry_days \d+$/m)
    assert.match(metrics, /^edge_agent_gateway_certificate_renewals_total ([4-9]|\d{2,})$/m)
  })

  it('does not promote a certificate the upstream refuses; the old one keeps working and status says why', async (t) => {
    const dir = tmpDir(t)
    const rootFile = join(dir, 'pebble-root.pem')
    writeFileSync(rootFile, await pebble.root())
    const m = await upstream(t, rootFile)
    const agent = await startAgent(t, { config: { certs: { acme: acmeConfig() }, upstreams: [bridgeTo(m)] } })
    await agent.waitForLog(
      (l) => l.msg === 'upstream connected',
      60_000,
      'the bridge connected with the first certificate',
    )
    const first = ((await agent.status())['gatewayCertificate'] as { serial: string }).serial
    // The CA is rekeyed (pebble makes a new root at every start); Mosquitto still trusts only the old root.
    await pebble.stop()
    await pebble.start()
    const cli = await runCli(
      ['certs', 'renew-gateway', '--config', agent.configFile, '--url', agent.adminUrl, '--json'],
      { timeoutMs: 120_000 },
    )
    assert.equal(cli.code, 1, 'a renewal that was not promoted exits 1')
    const out = JSON.parse(cli.stdout) as {
      promoted: boolean
      serial: string
      lastError: { code: string; message: string } | null
    }
    assert.equal(out.promoted, false)
    assert.equal(out.serial, first)
    assert.equal(out.lastError?.code, 'EDGE_ERR_ACME_UPSTREAM_REFUSED')
    assert.match(out.lastError?.message ?? '', /upstream plant/)
    await agent.waitForLog(
      (l) =>
        l.msg === 'gateway certificate renewal failed; keeping the current certificate' &&
        l['code'] === 'EDGE_ERR_ACME_UPSTREAM_REFUSED',
      10_000,
      'the refusal in the log',
      true,
    )
    // The old certificate keeps working, also for a fresh connection.
    const reconnected = agent.waitForLog(
      (l) => l.msg === 'upstream connected',
      30_000,
      'reconnected with the old certificate',
    )
    await m.restart()
    await reconnected
    const seen = await observe(t, m)
    const device = await client(t, agent.mqttUrl)
    for (let i = 0; i < 20; i++) await device.publishAsync('data/seq', String(i), { qos: 1 })
    await waitFor(() => new Set(seen).size >= 20, 30_000, 'messages with the old certificate')
    const st = (await agent.status())['gatewayCertificate'] as {
      serial: string
      lastError: { code: string } | null
      lastTest: { upstream: string; ok: boolean }[]
    }
    assert.equal(st.serial, first)
    assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_UPSTREAM_REFUSED')
    assert.deepEqual(
      st.lastTest.map((x) => [x.upstream, x.ok]),
      [['plant', false]],
    )
  })

  it('an mqtts listener serves the gateway certificate and swaps it in place on renewal', async (t) => {
    const root = await pebble.root()
    const agent = await startAgent(t, {
      mqtts: { requireClientCert: false, serverCertificate: 'acme' } as { requireClientCert: boolean },
      config: { certs: { acme: acmeConfig() } },
    })
    const port = agent.mqttsPort as number
    const first = await waitFor(
      async () => ((await agent.status())['gatewayCertificate'] as { serial: string | null }).serial,
      60_000,
      'the first issuance',
    )
    // The listener may have started with the local CA's certificate if the order finished after it: wait for the swap.
    const served = async (): Promise<{ serial: string; socket: TLSSocket }> => {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: root, servername: 'gw.edge.test' })
      t.after(() => socket.destroy())
      const ready = once(socket, 'secureConnect')
      socket.on('error', () => undefined) // the broker closes a connection that sends no CONNECT; only the handshake matters here
      await ready
      return { serial: normalizeSerial(socket.getPeerX509Certificate()?.serialNumber ?? ''), socket }
    }
    await waitFor(async () => (await served()).serial === first, 30_000, 'the listener serving the gateway certificate')
    const old = await served()
    const cli = await runCli(['certs', 'renew-gateway', '--config', agent.configFile, '--url', agent.adminUrl], {
      timeoutMs: 120_000,
    })
    assert.equal(cli.code, 0, cli.stderr)
    assert.match(cli.stdout, /^renewed: serial /)
    const second = ((await agent.status())['gatewayCertificate'] as { serial: string }).serial
    assert.notEqual(second, first)
    assert.equal((await served()).serial, second, 'new handshakes get the renewed certificate')
    assert.equal(old.socket.destroyed, false, 'a connection made before the swap stays open')
  })

  it('config validate refuses what run would refuse for certs.acme (exit 78), and run exits 78 too', async (t) => {
    const dir = tmpDir(t)
    const file = join(dir, 'site.yaml')
    writeFileSync(
      file,
      `dataDir: ${join(dir, 'data')}\ncerts:\n  acme:\n    directoryUrl: ${pebble.directoryUrl}\n    identifiers: [gw.edge.test]\n    challenge: dns-01\n`,
    )
    const validate = await runCli(['config', 'validate', '--config', file])
    assert.equal(validate.code, 78)
    assert.match(validate.stderr + validate.stdout, /certs\.acme\.dns01\.command/)
    const run = await runCli(['run', '--config', file])
    assert.equal(run.code, 78)
  })

  it('an expired certificate holds the upstream without a restart loop, and buffering continues', async (t) => {
    const dir = tmpDir(t)
    const rootFile = join(dir, 'pebble-root.pem')
    writeFileSync(rootFile, await pebble.root())
    const m = await upstream(t, rootFile)
    const agentDir = tmpDir(t)
    mkdirSync(join(agentDir, 'data', 'acme'), { recursive: true, mode: 0o700 })
    writeFileSync(join(agentDir, 'data', 'acme', 'gateway.pem'), await expiredPair('gw.edge.test'), { mode: 0o600 })
    // A CA that cannot be reached: no renewal comes to the rescue.
    const closed = await freePort()
    const agent = await startAgent(t, {
      dir: agentDir,
      config: {
        certs: { acme: acmeConfig({ directoryUrl: `https://127.0.0.1:${closed}/dir` }) },
        upstreams: [bridgeTo(m)],
      },
    })
    const device = await client(t, agent.mqttUrl)
    for (let i = 0; i < 25; i++) await device.publishAsync('data/seq', String(i), { qos: 1 })
    const st = await waitFor(
      async () => {
        const s = await agent.status()
        const g = s['gatewayCertificate'] as { failures: number }
        return g.failures >= 2 ? s : undefined
      },
      30_000,
      'renewal attempts failing',
    )
    const g = st['gatewayCertificate'] as { state: string; lastError: { code: string } }
    const up = st['upstreams'][0] as {
      held: string | null
      connected: boolean
      backlog: { depth: number }
      totals: { attempts: number }
    }
    assert.equal(g.state, 'expired')
    assert.equal(g.lastError.code, 'EDGE_ERR_ACME_UNREACHABLE')
    assert.match(up.held ?? '', /EDGE_ERR_ACME_EXPIRED/)
    assert.equal(up.connected, false)
    assert.equal(up.totals.attempts, 0, 'no handshake attempts with an expired certificate')
    assert.equal(up.backlog.depth, 25, 'messages are buffered')
    assert.equal(agent.proc.exitCode, null, 'the agent keeps running')
    await agent.waitForLog(
      (l) => l.msg === 'gateway certificate expired' && l['code'] === 'EDGE_ERR_ACME_EXPIRED',
      5_000,
      'the expiry in the log',
      true,
    )
  })
})

async function expiredPair(name: string): Promise<string> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 3 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
    signingAlgorithm: alg,
    keys,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])],
  })
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64')
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)?.join('\n')}\n-----END PRIVATE KEY-----\n`
  return `${keyPem}${cert.toString('pem')}\n`
}
