// The gateway certificate against a real ACME server: Debian's pebble, with
// pebble-challtestsrv resolving every name to 127.0.0.1. The agent's own
// responders serve http-01 and tls-alpn-01; dns-01 goes through a hook
// script that sets the TXT record in challtestsrv. No mock of acme-client.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import * as acme from 'acme-client'
import pino from 'pino'
import {
  AcmeIssuer,
  Dns01HookResponder,
  GatewayCertificate,
  Http01Responder,
  TlsAlpn01Responder,
  type ChallengeResponder,
  type GatewayMaterial,
} from '../../../src/certs/acme/index.js'
import { fileScope, type Scope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { freePort } from '../../helpers/mosquitto.js'
import { pebbleMissing, startPebble, type RunningPebble } from '../../helpers/pebble.js'
import { waitFor, withTimeout } from '../../helpers/wait.js'

const skip = pebbleMissing()
const log = pino({ level: process.env['EDGE_TEST_LOG'] ?? 'silent' })
const scope = fileScope()

let pebble: RunningPebble
let httpPort: number
let tlsPort: number

function gateway(
  t: Scope,
  o: {
    responder: ChallengeResponder
    identifiers: string[]
    maxIntervalMs?: number
    retryMaxMs?: number
    trustFile?: string
    count?: { now: number; max: number; total: number }
  },
): GatewayCertificate {
  const dir = tmpDir(t, 'edge-agent-acme-')
  const issuer = new AcmeIssuer({
    directoryUrl: pebble.directoryUrl,
    email: 'ot@example.test',
    caFile: pebble.httpsCaFile,
    dir,
    responder: o.responder,
    logger: log,
    requestTimeoutMs: 10_000,
  })
  const count = o.count
  const g = new GatewayCertificate({
    dir,
    source: {
      issue: async (req) => {
        if (count !== undefined) {
          count.now++
          count.total++
          count.max = Math.max(count.max, count.now)
        }
        try {
          return await issuer.issue(req)
        } finally {
          if (count !== undefined) count.now--
        }
      },
    },
    identifiers: o.identifiers,
    renewAt: 0.667,
    maxIntervalMs: o.maxIntervalMs ?? 0,
    retryMinMs: 200,
    retryMaxMs: o.retryMaxMs ?? 2_000,
    rotateKey: true,
    warnBeforeMs: 7 * 86_400_000,
    trustFile: o.trustFile,
    logger: log,
  })
  t.after(() => g.stop())
  return g
}

function promoted(g: GatewayCertificate, ms = 60_000): Promise<GatewayMaterial> {
  return withTimeout(
    new Promise<GatewayMaterial>((resolve) => g.once('promoted', resolve)),
    ms,
    'a certificate to be promoted',
  )
}

function assertFor(m: GatewayMaterial, names: string[], rootPem: string): void {
  const leaf = new X509Certificate(m.cert)
  for (const n of names) assert.equal(leaf.checkHost(n, { subject: 'never' }), n)
  const chain = m.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  const top = new X509Certificate(chain[chain.length - 1] as string)
  assert.ok(top.verify(new X509Certificate(rootPem).publicKey), "the chain leads to pebble's root")
  assert.ok(leaf.checkPrivateKey(createPrivateKey(m.key)))
}

describe('gateway certificate from pebble', { skip, timeout: 180_000 }, () => {
  before(async () => {
    httpPort = await freePort()
    tlsPort = await freePort()
    pebble = await startPebble(scope, { httpPort, tlsPort })
  })

  it('is issued with http-01 served by the agent, key and account 0600 in the state directory', async (t) => {
    const http = new Http01Responder({ host: '127.0.0.1', port: httpPort })
    const g = gateway(t, { responder: http, identifiers: ['gw-http.edge.test'] })
    const first = promoted(g)
    await g.start(AbortSignal.timeout(10_000))
    const m = await first
    assertFor(m, ['gw-http.edge.test'], await pebble.root())
    assert.equal(statSync(g.file).mode & 0o777, 0o600)
    assert.equal(statSync(join(g.file, '..', 'account.key')).mode & 0o777, 0o600)
    assert.match(readFileSync(join(g.file, '..', 'account.json'), 'utf8'), /"url": "https:\/\/127\.0\.0\.1/)
    assert.equal(http.port, undefined, 'the challenge server runs only while an order is pending')
    assert.equal(g.status().state, 'valid')
  })

  it('is issued with tls-alpn-01 served by the agent', async (t) => {
    const g = gateway(t, {
      responder: new TlsAlpn01Responder({ host: '127.0.0.1', port: tlsPort }),
      identifiers: ['gw-alpn.edge.test'],
    })
    const first = promoted(g)
    await g.start(AbortSignal.timeout(10_000))
    assertFor(await first, ['gw-alpn.edge.test'], await pebble.root())
  })

  it('is issued with dns-01 through the hook command (present, then cleanup)', async (t) => {
    const dir = tmpDir(t)
    const hook = join(dir, 'dns-hook')
    const calls = join(dir, 'calls')
    // The hook an operator would write for their DNS server; here it sets the TXT record in challtestsrv.
    writeFileSync(
      hook,
      [
        `#!${process.execPath}`,
        'const [action, name, value] = process.argv.slice(2)',
        `require('node:fs').appendFileSync(${JSON.stringify(calls)}, action + ' ' + name + '\\n')`,
        `const url = ${JSON.stringify(pebble.challtestsrvUrl)} + (action === 'present' ? '/set-txt' : '/clear-txt')`,
        "const body = JSON.stringify(action === 'present' ? { host: name + '.', value } : { host: name + '.' })",
        "fetch(url, { method: 'POST', body }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(2))",
        '',
      ].join('\n'),
    )
    chmodSync(hook, 0o755)
    const g = gateway(t, {
      responder: new Dns01HookResponder({ command: hook, timeoutMs: 10_000 }),
      identifiers: ['gw-dns.edge.test', 'alt-dns.edge.test'],
    })
    const first = promoted(g)
    await g.start(AbortSignal.timeout(10_000))
    assertFor(await first, ['gw-dns.edge.test', 'alt-dns.edge.test'], await pebble.root())
    const lines = readFileSync(calls, 'utf8').trim().split('\n').sort()
    assert.deepEqual(lines, [
      'cleanup _acme-challenge.alt-dns.edge.test',
      'cleanup _acme-challenge.gw-dns.edge.test',
      'present _acme-challenge.alt-dns.edge.test',
      'present _acme-challenge.gw-dns.edge.test',
    ])
  })

  it('a dns-01 hook that fails is a clear error and a retry, never a promotion', async (t) => {
    const dir = tmpDir(t)
    const hook = join(dir, 'dns-hook')
    writeFileSync(hook, '#!/bin/sh\necho "no such zone" >&2\nexit 3\n')
    chmodSync(hook, 0o755)
    const g = gateway(t, {
      responder: new Dns01HookResponder({ command: hook, timeoutMs: 10_000 }),
      identifiers: ['gw-bad.edge.test'],
    })
    await g.start(AbortSignal.timeout(10_000))
    const st = await waitFor(() => (g.status().failures >= 2 ? g.status() : undefined), 60_000, 'two failed attempts')
    assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_CHALLENGE_FAILED')
    assert.match(st.lastError?.message ?? '', /exit 3: no such zone/)
    assert.equal(st.state, 'none')
  })

  it('renews three times in a row on an accelerated schedule, with a new key each time', async (t) => {
    const g = gateway(t, {
      responder: new Http01Responder({ host: '127.0.0.1', port: httpPort }),
      identifiers: ['gw-renew.edge.test'],
      maxIntervalMs: 1_500,
    })
    const seen: GatewayMaterial[] = []
    const four = withTimeout(
      new Promise<void>((resolve) => {
        g.on('promoted', (m) => {
          seen.push(m)
          if (seen.length === 4) resolve()
        })
      }),
      120_000,
      'first issuance and three renewals',
    )
    await g.start(AbortSignal.timeout(10_000))
    await four
    assert.equal(new Set(seen.map((m) => m.summary.serial)).size, 4)
    assert.equal(new Set(seen.map((m) => m.key)).size, 4, 'a new key at every renewal')
    assert.equal(g.status().renewals, 4)
  })

  it('keeps the current certificate while pebble is down, one attempt at a time, and renews within the backoff bound once it is back', async (t) => {
    const count = { now: 0, max: 0, total: 0 }
    const g = gateway(t, {
      responder: new Http01Responder({ host: '127.0.0.1', port: httpPort }),
      identifiers: ['gw-outage.edge.test'],
      retryMaxMs: 2_000,
      count,
    })
    const first = promoted(g)
    await g.start(AbortSignal.timeout(10_000))
    const current = await first
    await pebble.stop()
    try {
      // Forced renewals while the CA is down: each fails, the certificate stays.
      const results = await Promise.all([g.renewNow(), g.renewNow(), g.renewNow()])
      assert.deepEqual(results, [false, false, false])
      await waitFor(() => g.status().failures >= 3, 30_000, 'failed retries while pebble is down')
      const st = g.status()
      assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_UNREACHABLE')
      assert.equal(g.material()?.summary.serial, current.summary.serial)
      assert.equal(st.state, 'valid')
    } finally {
      await pebble.start()
    }
    const back = Date.now()
    const next = await promoted(g, 30_000)
    // Backoff is capped at retryMaxMs (2 s): the renewal follows within a few attempts' time.
    assert.ok(Date.now() - back < 20_000, 'renewed within the backoff bound')
    assert.notEqual(next.summary.serial, current.summary.serial)
    assert.equal(count.max, 1, 'never more than one attempt in flight')
    assert.equal(g.status().failures, 0)
  })

  it('says unreachable for a closed port and not-ACME for a directory that is not one', async (t) => {
    const closed = await freePort()
    const dir = tmpDir(t)
    const unreachable = new AcmeIssuer({
      directoryUrl: `https://127.0.0.1:${closed}/dir`,
      email: '',
      dir,
      responder: new Http01Responder({ host: '127.0.0.1', port: httpPort }),
      logger: log,
      requestTimeoutMs: 5_000,
    })
    await assert.rejects(unreachable.issue({ keyPem: '', identifiers: ['x.edge.test'] }), {
      code: 'EDGE_ERR_ACME_UNREACHABLE',
    })
    const srv = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":"world"}'),
    )
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    t.after(() => new Promise<void>((r) => srv.close(() => r())))
    const port = (srv.address() as { port: number }).port
    const notAcme = new AcmeIssuer({
      directoryUrl: `http://127.0.0.1:${port}/dir`,
      email: '',
      dir,
      responder: new Http01Responder({ host: '127.0.0.1', port: httpPort }),
      logger: log,
      requestTimeoutMs: 5_000,
    })
    await assert.rejects(notAcme.issue({ keyPem: '', identifiers: ['x.edge.test'] }), {
      code: 'EDGE_ERR_ACME_NOT_ACME',
    })
  })

  it('external account binding: a wrong HMAC key is a refusal with a clear code, the right one issues', async (t) => {
    const eabHttp = await freePort()
    const key = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W'
    const eabPebble = await startPebble(t, { httpPort: eabHttp, tlsPort: await freePort(), eab: { 'kid-1': key } })
    const dir = tmpDir(t)
    writeFileSync(join(dir, 'good.key'), `${key}\n`)
    writeFileSync(join(dir, 'bad.key'), 'b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH\n')
    const issuer = (hmacKeyFile: string, state: string) =>
      new AcmeIssuer({
        directoryUrl: eabPebble.directoryUrl,
        email: '',
        caFile: eabPebble.httpsCaFile,
        eab: { kid: 'kid-1', hmacKeyFile },
        dir: state,
        responder: new Http01Responder({ host: '127.0.0.1', port: eabHttp }),
        logger: log,
        requestTimeoutMs: 10_000,
      })
    const keyPem = (await acme.crypto.createPrivateEcdsaKey('P-256')).toString()
    await assert.rejects(
      issuer(join(dir, 'bad.key'), tmpDir(t)).issue({ keyPem, identifiers: ['gw-eab.edge.test'] }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'EDGE_ERR_ACME_REFUSED')
        assert.match(err.message, /account registration refused/)
        return true
      },
    )
    const chain = await issuer(join(dir, 'good.key'), tmpDir(t)).issue({ keyPem, identifiers: ['gw-eab.edge.test'] })
    assert.equal(new X509Certificate(chain).checkHost('gw-eab.edge.test', { subject: 'never' }), 'gw-eab.edge.test')
  })

  it('refuses a certificate that does not chain to the configured trust, and keeps none', async (t) => {
    const other = pebble.httpsCaFile // some CA that is not pebble's
    const g = gateway(t, {
      responder: new Http01Responder({ host: '127.0.0.1', port: httpPort }),
      identifiers: ['gw-trust.edge.test'],
      trustFile: other,
    })
    await g.start(AbortSignal.timeout(10_000))
    const st = await waitFor(() => (g.status().failures >= 1 ? g.status() : undefined), 60_000, 'a refused certificate')
    assert.equal(st.lastError?.code, 'EDGE_ERR_ACME_CERT_INVALID')
    assert.match(st.lastError?.message ?? '', /does not lead to a configured CA/)
    assert.equal(g.material(), undefined)
  })
})
