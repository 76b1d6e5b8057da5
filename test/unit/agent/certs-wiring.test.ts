// buildAgent loads the certs code (X.509, ACME) only for a config that uses
// it (certs-wiring.ts usesCerts): every config that runs certs code must say so.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../../src/agent/config/load.js'
import { usesCerts } from '../../../src/agent/certs-wiring.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

function config(dir: string, yaml: string) {
  const file = join(dir, 'site.yaml')
  writeFileSync(file, yaml)
  for (const f of ['up.crt', 'up.key', 'ca.crt']) writeFileSync(join(dir, f), 'x')
  return loadConfig({ file, env: {}, cwd: dir }).config
}

test('a site without certificates loads no certs code', (t) => {
  const plain = config(
    tmpDir(t),
    [
      'broker: { listeners: [{ protocol: mqtt, port: 1883 }, { protocol: ws, port: 8080 }] }',
      'upstreams:',
      '  - { name: up, url: "mqtt://10.0.0.1:1883", rules: [{ topic: "t/#", direction: out }] }',
    ].join('\n'),
  )
  assert.equal(usesCerts(plain), false)
})

test('every use of certificates loads it: mqtts with the local CA, upstream mTLS files, renewal', (t) => {
  const dir = tmpDir(t)
  assert.equal(usesCerts(config(dir, 'broker: { listeners: [{ protocol: mqtts, port: 8883 }] }')), true, 'local CA')
  const files = ['upstreams:', '  - name: up', '    url: "mqtts://10.0.0.1:8883"', '    caFile: ca.crt']
  assert.equal(usesCerts(config(dir, [...files, '    certFile: up.crt', '    keyFile: up.key'].join('\n'))), true)
  const renew = [...files, '    certFile: up.crt', '    keyFile: up.key', '    renewCertificate: { enabled: true }']
  assert.equal(usesCerts(config(dir, renew.join('\n'))), true, 'renewal over the bridge')
})
