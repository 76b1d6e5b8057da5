// `config validate` refuses everything `run` refuses at start, and `run`
// exits 78 (no systemd restart loop) for what the config decides. One row
// per refusal in the code: schema, semantic.ts, preflight.ts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

interface Row {
  readonly name: string
  /** YAML after `site:`; {dir} is the test's temp dir. */
  readonly yaml: string
  readonly setup?: (dir: string) => void
  /** What the message names. */
  readonly says: RegExp
}

const LOOPBACK = 'admin: { port: 0 }\n'
const ROWS: Row[] = [
  {
    name: 'schema: port out of range',
    yaml: 'broker: { listeners: [ { protocol: mqtt, port: 70000 } ] }\n',
    says: /must be <= 65535/,
  },
  {
    name: 'semantic: two listeners on one address',
    yaml: 'broker: { listeners: [ { protocol: mqtt, host: 127.0.0.1, port: 18931 }, { protocol: ws, host: 127.0.0.1, port: 18931 } ] }\n',
    says: /same address/,
  },
  { name: 'semantic: admin off loopback', yaml: 'admin: { host: 0.0.0.0, port: 0 }\n', says: /loopback/ },
  {
    name: 'semantic: invalid bridge rule',
    yaml: `${LOOPBACK}upstreams: [ { name: up, url: 'mqtt://127.0.0.1:1', rules: [ { topic: 'a/#/b', direction: out } ] } ]\n`,
    says: /rules\[0\]/,
  },
  {
    name: 'preflight: mqtts listener without a local CA (EDGE_ERR_CERT_CA_MISSING at start)',
    yaml: `${LOOPBACK}broker: { listeners: [ { protocol: mqtts, host: 127.0.0.1, port: 0 } ] }\n`,
    says: /certs\.autoInit: an mqtts listener needs the local CA/,
  },
  {
    name: 'preflight: listener certificate file missing (EDGE_ERR_BROKER_TLS at start)',
    yaml: `${LOOPBACK}certs: { autoInit: true }\nbroker: { listeners: [ { protocol: mqtts, host: 127.0.0.1, port: 0, certFile: '{dir}/nope.crt', keyFile: '{dir}/nope.key' } ] }\n`,
    says: /broker\.listeners\[0\]\.(certFile|keyFile): cannot read .*nope\.(crt|key):? \(?ENOENT/,
  },
  {
    name: 'preflight: dataDir is a file',
    yaml: `${LOOPBACK}`,
    setup: (dir) => writeFileSync(join(dir, 'data'), 'not a dir'),
    says: /dataDir: .* is not a directory/,
  },
  {
    name: 'preflight: dataDir under a file',
    yaml: `${LOOPBACK}dataDir: '{dir}/file/data'\n`,
    setup: (dir) => writeFileSync(join(dir, 'file'), 'x'),
    says: /dataDir: cannot create/,
  },
]

for (const row of ROWS) {
  test(`validate and run both refuse with 78: ${row.name}`, async (t) => {
    const dir = tmpDir(t)
    mkdirSync(dir, { recursive: true })
    row.setup?.(dir)
    const file = join(dir, 'site.yaml')
    const body = row.yaml.includes('dataDir:') ? row.yaml : `dataDir: '{dir}/data'\n${row.yaml}`
    writeFileSync(file, `site: { name: t, level: 2 }\nlog: { format: json }\n${body.replaceAll('{dir}', dir)}`)
    const v = await runCli(['config', 'validate', '--config', file])
    assert.equal(v.code, 78, `validate: ${v.stdout}${v.stderr}`)
    assert.match(v.stderr, row.says)
    const r = await runCli(['run', '--config', file], { timeoutMs: 30_000 })
    assert.equal(r.code, 78, `run: ${r.stdout}${r.stderr}`)
    assert.match(r.stderr, row.says)
  })
}
