// `edge-agent doctor` on a healthy gateway passes; on a broken one it names
// each problem with a fix and exits with the worst result.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { freePort, mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'

const missing = mosquittoMissing()

interface Report {
  worst: string
  checks: { check: string; status: string; detail: string; fix?: string }[]
}

/** A client certificate that expired in 2020 (openssl ca takes explicit dates). */
function expiredCertificate(dir: string): { cert: string; key: string } {
  const ca = join(dir, 'oldca')
  mkdirSync(ca)
  writeFileSync(join(ca, 'index.txt'), '')
  writeFileSync(join(ca, 'serial'), '01\n')
  writeFileSync(
    join(ca, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${ca}/index.txt\nnew_certs_dir = ${ca}\nserial = ${ca}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n`,
  )
  const key = join(dir, 'client.key')
  const csr = join(ca, 'client.csr')
  const cert = join(dir, 'client.crt')
  execFileSync(
    'openssl',
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      '/CN=gw-1',
    ],
    { stdio: 'ignore' },
  )
  execFileSync(
    'openssl',
    [
      'ca',
      '-batch',
      '-config',
      join(ca, 'ca.cnf'),
      '-selfsign',
      '-keyfile',
      key,
      '-in',
      csr,
      '-out',
      cert,
      '-startdate',
      '20200101000000Z',
      '-enddate',
      '20200201000000Z',
    ],
    { stdio: 'ignore' },
  )
  return { cert, key }
}

test(
  'doctor reports an expired certificate, a full disk, an unreachable upstream, a key with the wrong mode and a port in use',
  { timeout: 90_000 },
  async (t) => {
    const dir = tmpDir(t)
    const { cert, key } = expiredCertificate(dir)
    chmodSync(key, 0o644)
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise<void>((resolve) => busy.close(() => resolve())))
    const busyPort = (busy.address() as { port: number }).port
    const closedPort = await freePort()
    const file = join(dir, 'site.yaml')
    writeFileSync(
      file,
      stringify({
        site: { name: 'broken', level: 2 },
        dataDir: join(dir, 'state'),
        admin: { port: 0 },
        // Far above any free space: the buffer's floor is not met.
        buffer: { minFreeBytes: 2 ** 52 },
        broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: busyPort }] },
        upstreams: [
          {
            name: 'site',
            url: `mqtts://127.0.0.1:${closedPort}`,
            caFile: cert,
            certFile: cert,
            keyFile: key,
            rules: [],
          },
        ],
      }),
    )
    const r = await runCli(['doctor', '--json', '--config', file], { timeoutMs: 60_000 })
    assert.equal(r.code, 1, r.stderr)
    const report = JSON.parse(r.stdout) as Report
    assert.equal(report.worst, 'fail')
    const failed = (name: string): Report['checks'][number] => {
      const c = report.checks.find((x) => x.check.startsWith(name) && x.status === 'fail')
      assert.ok(c, `a failed '${name}' check in ${JSON.stringify(report.checks, null, 1)}`)
      assert.ok(c.fix, `${name} says how to fix it`)
      return c
    }
    assert.match(failed('certificate: upstream site client').detail, /expired/)
    assert.match(failed('disk').detail, /floor/)
    assert.match(failed('upstream site: tcp').detail, /ECONNREFUSED/)
    assert.match(failed('file modes: keys').detail, new RegExp(`${key} \\(0644\\)`))
    assert.match(failed(`port 127.0.0.1:${busyPort}`).detail, /in use/)

    const text = await runCli(['doctor', '--config', file], { timeoutMs: 60_000 })
    assert.match(text.stdout, /^FAIL {2}disk: /m)
    assert.match(text.stdout, /fix: chmod 600 /)
  },
)

test('doctor passes on a healthy gateway with a reachable upstream', { skip: missing, timeout: 90_000 }, async (t) => {
  const dir = tmpDir(t)
  const upstream = await startMosquitto(t)
  const file = join(dir, 'site.yaml')
  writeFileSync(
    file,
    stringify({
      site: { name: 'healthy', level: 2 },
      dataDir: join(dir, 'state'),
      admin: { port: await freePort() },
      broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: await freePort() }] },
      upstreams: [{ name: 'site', url: upstream.url, rules: [{ topic: 'a/#', direction: 'out' }] }],
    }),
  )
  const r = await runCli(['doctor', '--json', '--config', file], { timeoutMs: 60_000 })
  const report = JSON.parse(r.stdout) as Report
  assert.deepEqual(
    report.checks.filter((c) => c.status !== 'pass'),
    [],
  )
  assert.equal(r.code, 0)
  for (const step of ['dns', 'tcp', 'mqtt'])
    assert.ok(
      report.checks.some((c) => c.check === `upstream site: ${step}` && c.status === 'pass'),
      step,
    )
})
