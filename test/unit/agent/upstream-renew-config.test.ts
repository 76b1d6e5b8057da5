// upstreams[].renewCertificate: defaults, and the cross-field checks that
// name the key path (semantic.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../../src/agent/config/load.js'
import { ConfigError } from '../../../src/agent/config/errors.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

function load(dir: string, yaml: string) {
  const file = join(dir, 'site.yaml')
  writeFileSync(file, yaml)
  return loadConfig({ file, env: {}, cwd: '/' })
}

test('renewCertificate is off by default, with documented defaults', (t) => {
  const { config } = load(tmpDir(t), 'upstreams:\n  - { name: up, url: "mqtt://10.0.0.1:1883" }\n')
  assert.deepEqual(config.upstreams[0]?.renewCertificate, {
    enabled: false,
    atFraction: 0.66,
    topicPrefix: 'devices/{id}/$certs',
    rotateKey: true,
    timeoutMs: 30000,
    retryMinMs: 10000,
    retryMaxMs: 600000,
  })
})

test('rejects renewCertificate.enabled without caFile and on a plain mqtt url, naming the key', (t) => {
  let err: unknown
  try {
    load(
      tmpDir(t),
      'upstreams:\n  - name: up\n    url: "mqtt://10.0.0.1:1883"\n    renewCertificate: { enabled: true }\n',
    )
  } catch (e) {
    err = e
  }
  assert.ok(err instanceof ConfigError)
  const paths = err.issues.map((i) => `${i.path}: ${i.message}`)
  assert.ok(
    paths.some((p) => p.startsWith('upstreams[0].renewCertificate.enabled: needs upstreams[0].certFile')),
    paths.join('\n'),
  )
  assert.ok(
    paths.some((p) => p.startsWith('upstreams[0].renewCertificate.enabled: needs upstreams[0].caFile')),
    paths.join('\n'),
  )
  assert.ok(
    paths.some((p) => p.includes('needs an mqtts:// or wss:// url')),
    paths.join('\n'),
  )
})

test('accepts renewCertificate with the pair and the CA on mqtts', (t) => {
  const { config } = load(
    tmpDir(t),
    'upstreams:\n  - name: up\n    url: "mqtts://10.0.0.1:8883"\n    caFile: /x/ca.crt\n    certFile: /x/l2.crt\n    keyFile: /x/l2.key\n    renewCertificate: { enabled: true, atFraction: 0.5 }\n',
  )
  assert.equal(config.upstreams[0]?.renewCertificate.atFraction, 0.5)
})
