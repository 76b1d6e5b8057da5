// An mqtts listener on an external PKI: its own CA, server certificate and key
// files, made here with OpenSSL, and no local CA at all. It starts, serves a
// device with a certificate from that CA, and a key file that its group can
// read is refused by `config validate` (exit 78) as by `run`.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { fileScope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { runCli, startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client, refusedConnect } from '../../helpers/mqtt-clients.js'
import { nextMessage } from '../../helpers/wait.js'
import { opensslRoot } from '../../helpers/openssl-ca.js'

const scope = fileScope()
let pki: string
let agent: RunningAgent
let mqttsPort: number

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' })
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`)
}

/** A key and a certificate signed by the test CA, with the given extensions. */
function leaf(name: string, cn: string, ext: string): void {
  const key = join(pki, `${name}.key`)
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key])
  chmodSync(key, 0o600)
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', join(pki, `${name}.csr`)])
  writeFileSync(join(pki, `${name}.ext`), ext)
  openssl([
    'x509',
    '-req',
    '-in',
    join(pki, `${name}.csr`),
    '-CA',
    join(pki, 'ca.crt'),
    '-CAkey',
    join(pki, 'ca.key'),
    '-CAcreateserial',
    '-days',
    '30',
    '-sha256',
    '-extfile',
    join(pki, `${name}.ext`),
    '-out',
    join(pki, `${name}.crt`),
  ])
}

before(async () => {
  pki = tmpDir(scope, 'edge-agent-pki-')
  opensslRoot({
    keyFile: join(pki, 'ca.key'),
    certFile: join(pki, 'ca.crt'),
    subject: '/CN=Site PKI test CA',
    days: 30,
  })
  chmodSync(join(pki, 'ca.key'), 0o600)
  leaf('server', 'gateway.test', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  leaf('dev-1', 'dev-1', 'extendedKeyUsage=clientAuth\n')
  agent = await startAgent(scope, {
    config: {
      broker: {
        listeners: [
          { protocol: 'mqtt', host: '127.0.0.1', port: 0 },
          {
            protocol: 'mqtts',
            host: '127.0.0.1',
            port: 0,
            certFile: join(pki, 'server.crt'),
            keyFile: join(pki, 'server.key'),
            caFile: join(pki, 'ca.crt'),
          },
        ],
      },
    },
  })
  const bound = (await agent.status())['broker']['listeners'] as { protocol: string; port: number }[]
  mqttsPort = bound.find((l) => l.protocol === 'mqtts')!.port
})

test('starts with no local CA and issues no server certificate of its own', async () => {
  assert.equal(existsSync(join(agent.dir, 'data', 'certs')), false)
  assert.equal((await agent.status())['certs'], null)
})

test("serves a device whose certificate comes from the external CA, in the device's own space", async (t) => {
  const tls = {
    ca: readFileSync(join(pki, 'ca.crt')),
    cert: readFileSync(join(pki, 'dev-1.crt')),
    key: readFileSync(join(pki, 'dev-1.key')),
    rejectUnauthorized: true,
  }
  const dev = await client(t, `mqtts://127.0.0.1:${mqttsPort}`, { ...tls, clientId: 'dev-1' })
  const got = nextMessage(dev, 'devices/dev-1/echo')
  await dev.subscribeAsync('devices/dev-1/#', { qos: 1 })
  await dev.publishAsync('devices/dev-1/echo', 'over the site PKI', { qos: 1 })
  assert.equal((await got).payload.toString(), 'over the site PKI')
  // the client id must still be the certificate's identity
  const other = await refusedConnect(`mqtts://127.0.0.1:${mqttsPort}`, { ...tls, clientId: 'dev-2' })
  assert.equal(other.code, 2)
})

test('`config validate` refuses a listener key file its group can read, with exit 78 naming the key', async (t) => {
  const dir = tmpDir(t)
  const key = join(dir, 'server.key')
  writeFileSync(key, readFileSync(join(pki, 'server.key')))
  chmodSync(key, 0o640)
  const file = join(dir, 'config.yaml')
  const listener = {
    protocol: 'mqtts',
    host: '127.0.0.1',
    port: 8883,
    certFile: join(pki, 'server.crt'),
    keyFile: key,
    caFile: join(pki, 'ca.crt'),
  }
  writeFileSync(file, stringify({ dataDir: join(dir, 'data'), broker: { listeners: [listener] } }))
  const r = await runCli(['config', 'validate', '--config', file])
  assert.equal(r.code, 78, r.stderr)
  assert.match(r.stderr, /broker\.listeners\[0\]\.keyFile/)
  assert.match(r.stderr, /group or others/)
  chmodSync(key, 0o600)
  const ok = await runCli(['config', 'validate', '--config', file])
  assert.equal(ok.code, 0, ok.stderr)
})
