// certs.acme and upstreams[].clientCertificate: what `config validate` (and
// `run`, with the same loader) refuses.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../../src/agent/config/load.js'
import { ConfigError } from '../../../src/agent/config/errors.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

function issues(dir: string, yaml: string): { path: string; message: string }[] {
  const file = join(dir, 'site.yaml')
  writeFileSync(file, yaml)
  try {
    loadConfig({ file, env: {}, cwd: dir })
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => ({ path: i.path, message: i.message }))
    throw err
  }
  return []
}

const ACME =
  'certs:\n  acme:\n    directoryUrl: https://ca.plant.example/acme/directory\n    identifiers: [gw.plant.example]\n'

test('a minimal certs.acme with an acme upstream is valid', (t) => {
  const up = 'upstreams:\n  - { name: plant, url: "mqtts://10.0.3.10:8883", clientCertificate: acme }\n'
  assert.deepEqual(issues(tmpDir(t), ACME + up), [])
})

test('clientCertificate: acme needs certs.acme, a TLS url, and no certFile or renewCertificate', (t) => {
  const found = issues(
    tmpDir(t),
    'upstreams:\n  - { name: a, url: "mqtt://10.0.3.10:1883", clientCertificate: acme, certFile: /x.crt, keyFile: /x.key, renewCertificate: { enabled: true } }\n',
  )
  const messages = found.filter((i) => i.path === 'upstreams[0].clientCertificate').map((i) => i.message)
  assert.ok(messages.some((m) => /needs certs\.acme/.test(m)))
  assert.ok(messages.some((m) => /mqtts:\/\/ or wss:\/\//.test(m)))
  assert.ok(messages.some((m) => /replaces certFile/.test(m)))
  assert.ok(messages.some((m) => /renewCertificate/.test(m)))
})

test('dns-01 needs an executable hook; unreadable or non-PEM files are named', (t) => {
  const dir = tmpDir(t)
  writeFileSync(join(dir, 'not-pem'), 'hello\n')
  const found = issues(
    dir,
    ACME +
      `    challenge: dns-01\n    caFile: ${join(dir, 'missing.pem')}\n    trustFile: ${join(dir, 'not-pem')}\n    eab: { kid: k1, hmacKeyFile: ${join(dir, 'nokey')} }\n    retryMinMs: 5000\n    retryMaxMs: 1000\n`,
  )
  const by = new Map(found.map((i) => [i.path, i.message]))
  assert.match(by.get('certs.acme.dns01.command') ?? '', /required for challenge dns-01/)
  assert.match(by.get('certs.acme.caFile') ?? '', /cannot be read/)
  assert.match(by.get('certs.acme.trustFile') ?? '', /holds no PEM certificate/)
  assert.match(by.get('certs.acme.eab.hmacKeyFile') ?? '', /cannot be read/)
  assert.match(by.get('certs.acme.retryMinMs') ?? '', /must not exceed/)
})

test('schema errors: a directory URL that is not http(s), no identifiers, an unknown challenge', (t) => {
  const found = issues(
    tmpDir(t),
    'certs:\n  acme:\n    directoryUrl: ftp://ca\n    identifiers: []\n    challenge: smtp-01\n',
  )
  const paths = found.map((i) => i.path).sort()
  assert.deepEqual(paths, ['certs.acme.challenge', 'certs.acme.directoryUrl', 'certs.acme.identifiers'])
})

test('serverCertificate: acme is for mqtts listeners only, needs certs.acme and replaces certFile', (t) => {
  const found = issues(
    tmpDir(t),
    'broker:\n  listeners:\n    - { protocol: mqtt, port: 1883, serverCertificate: acme }\n    - { protocol: mqtts, port: 8883, serverCertificate: acme, certFile: /s.crt, keyFile: /s.key }\n',
  )
  const messages = found.map((i) => `${i.path}: ${i.message}`)
  assert.ok(messages.some((m) => /listeners\[0\]\.serverCertificate: only for protocol mqtts/.test(m)))
  assert.ok(messages.some((m) => /listeners\[1\]\.serverCertificate: acme needs certs\.acme/.test(m)))
  assert.ok(messages.some((m) => /listeners\[1\]\.serverCertificate: acme replaces certFile/.test(m)))
})
