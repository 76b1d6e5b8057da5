// Mutual TLS on the real agent: device certificates from the local CA with
// mqtt.js and Mosquitto's clients; wrong, expired and revoked certificates
// refused; the client id bound to the certificate; each device confined to
// devices/{id}/# for wildcards, $SYS and odd topics.
//
// Glossary: "shared" = the one agent of this file (mqtts with required client
// certificates, plus a plain mqtt listener on loopback for observers).
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import type { MqttClient } from 'mqtt'
import { fileScope } from '../../helpers/scope.js'
import { startAgent, runCli, type RunningAgent } from '../../helpers/agent-process.js'
import { client, mosquittoClient, refusedConnect } from '../../helpers/mqtt-clients.js'
import { nextMessage, withTimeout } from '../../helpers/wait.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { ClockGuard, LocalCa, generateKeyPair, systemClock } from '../../../src/certs/index.js'
import {
  closed,
  deviceClient,
  forgeWithAgentCa,
  issueWithCli,
  mqttsUrl,
  openssl,
  opensslVerify,
  refused,
  tlsOptions,
  type DeviceFiles,
} from './support.js'

const scope = fileScope()

/** SUBACK return codes for the filters, in order (mqtt.js rejects on any 0x80; the packet has them all). */
async function grants(c: MqttClient, filters: string[]): Promise<number[]> {
  try {
    return (await c.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }])))).map((g) => g.qos)
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (granted === undefined) throw err
    return granted
  }
}
let shared: RunningAgent
let d1: DeviceFiles

before(async () => {
  shared = await startAgent(scope, { mqtts: true, config: { certs: { allowShortLifetimes: true, backdateSec: 1 } } })
  d1 = await issueWithCli(scope, shared, 'd1')
})

test('a device connects with its certificate (mqtt.js and mosquitto) and talks inside its own space', async (t) => {
  await opensslVerify(d1.ca, d1.crt)
  const observer = await client(t, shared.mqttUrl) // on the loopback listener
  const sub = await deviceClient(t, shared, d1)
  await sub.subscribeAsync('devices/d1/#', { qos: 1 })
  const got = nextMessage(sub, 'devices/d1/temp')
  await observer.publishAsync('devices/d1/temp', '21.5', { qos: 1 })
  assert.equal((await got).payload.toString(), '21.5')

  // Mosquitto's clients, as device d2.
  const d2 = await issueWithCli(t, shared, 'd2')
  const tls = ['-h', '127.0.0.1', '-p', String(shared.mqttsPort), '--cafile', d2.ca, '--cert', d2.crt, '--key', d2.key]
  await observer.publishAsync('devices/d2/cmd', 'start', { qos: 1, retain: true }) // retained: no race with the subscription
  const s = await mosquittoClient('mosquitto_sub', [
    ...tls,
    '-i',
    'd2',
    '-t',
    'devices/d2/#',
    '-C',
    '1',
    '-W',
    '10',
    '-q',
    '1',
  ])
  assert.equal(s.code, 0, s.stderr)
  assert.equal(s.stdout.trim(), 'start')
  await observer.publishAsync('devices/d2/cmd', '', { qos: 1, retain: true })

  await observer.subscribeAsync('devices/d2/state', { qos: 1 })
  const state = nextMessage(observer, 'devices/d2/state')
  const p = await mosquittoClient('mosquitto_pub', [
    ...tls,
    '-i',
    'd2',
    '-t',
    'devices/d2/state',
    '-m',
    'running',
    '-q',
    '1',
  ])
  assert.equal(p.code, 0, p.stderr)
  assert.equal((await state).payload.toString(), 'running')

  const wrongId = await mosquittoClient('mosquitto_pub', [
    ...tls,
    '-i',
    'd2-pub',
    '-t',
    'devices/d2/state',
    '-m',
    'x',
    '-q',
    '1',
  ])
  assert.notEqual(wrongId.code, 0, 'client id d2-pub is not the certificate identity')
  assert.match(wrongId.stderr, /identifier rejected/i)
})

test('an empty client id takes the certificate CN', async (t) => {
  const c = await deviceClient(t, shared, d1, { clientId: '', clean: true })
  await c.subscribeAsync('devices/d1/cn', { qos: 1 })
  const got = nextMessage(c, 'devices/d1/cn')
  await c.publishAsync('devices/d1/cn', 'me', { qos: 1 })
  assert.equal((await got).payload.toString(), 'me')
})

test('refuses a connection without a certificate, with a foreign CA, expired, or not yet valid', async (t) => {
  const noCert = await refused(shared, { clientId: 'd1', ca: readFileSync(d1.ca), rejectUnauthorized: true })
  assert.ok(noCert, 'no certificate')

  const foreignDir = join(tmpDir(t), 'certs')
  await LocalCa.init(foreignDir, { name: 'other CA', lifetimeMs: 86_400_000 * 30, now: Date.now() })
  const other = new LocalCa({
    dir: foreignDir,
    guard: new ClockGuard({ clock: systemClock }),
    backdateMs: 60_000,
    crlValidityMs: 86_400_000,
  })
  await other.load()
  const key = await generateKeyPair()
  const foreign = await other.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: 86_400_000 })
  await refused(shared, { clientId: 'd1', key: key.privateKeyPem, cert: foreign.certPem, ca: readFileSync(d1.ca) })

  const expired = await forgeWithAgentCa(t, shared, 'd1', Date.now() - 2 * 86_400_000, Date.now() - 86_400_000)
  await refused(shared, { clientId: 'd1', ...tlsOptions(expired) })
  const future = await forgeWithAgentCa(t, shared, 'd1', Date.now() + 86_400_000, Date.now() + 2 * 86_400_000)
  await refused(shared, { clientId: 'd1', ...tlsOptions(future) })

  const s = await shared.status()
  const r = s.certs.refusedHandshakes as Record<string, number>
  assert.ok((r['no-certificate'] ?? 0) >= 1, JSON.stringify(r))
  assert.ok((r['untrusted-certificate'] ?? 0) >= 1, JSON.stringify(r))
  assert.ok((r['expired'] ?? 0) >= 1, JSON.stringify(r))
  assert.ok((r['not-yet-valid'] ?? 0) >= 1, JSON.stringify(r))
})

test("refuses a client id that is not the certificate's identity (CONNACK 2), and a Will outside the space (CONNACK 5)", async () => {
  const mismatch = await refused(shared, { clientId: 'd2', ...tlsOptions(d1) })
  assert.equal(mismatch.code, 2)
  const will = await refused(shared, {
    clientId: 'd1',
    ...tlsOptions(d1),
    will: { topic: 'devices/d2/status', payload: Buffer.from('x'), qos: 1, retain: true },
  })
  assert.equal(will.code, 5)
  await shared.waitForLog(
    (l) =>
      l.msg === 'device connection refused' &&
      l['reason'] === 'identityMismatch' &&
      l['clientId'] === 'd2' &&
      l['certificateCn'] === 'd1',
    5_000,
    'the refusal log naming client id and certificate',
  )
})

test('a plain-listener client cannot take over a device id', async () => {
  const err = await refusedConnect(shared.mqttUrl, { clientId: 'd1' })
  assert.equal(err.code, 5)
})

test('isolation holds for subscriptions: wildcards, $SYS, other devices get 0x80; own space granted', async (t) => {
  const c = await deviceClient(t, shared, d1)
  const filters = [
    '#',
    '+/+/#',
    '+/#',
    'devices/#',
    'devices/+/temp',
    'devices/d2/#',
    '$SYS/#',
    '$SYS/+/heartbeat',
    '$share/g/devices/d1/#',
    '/devices/d1/#',
    'devices/d1x/#',
  ]
  assert.deepEqual(
    await grants(c, filters),
    filters.map(() => 0x80),
  )
  assert.deepEqual(await grants(c, ['devices/d1/#', 'devices/d1/+/x', 'devices/d1//x', '$edge/ca/crl']), [1, 1, 1, 1])
  assert.ok(c.connected, 'refused subscriptions do not disconnect')
  const line = await shared.waitForLog((l) => l.msg === 'subscription refused by the acl', 5_000, 'the denial log')
  assert.equal(line['deviceId'], 'd1')
  // With mosquitto_sub too.
  const m = await mosquittoClient('mosquitto_sub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(shared.mqttsPort),
    '--cafile',
    d1.ca,
    '--cert',
    d1.crt,
    '--key',
    d1.key,
    '-i',
    'd1',
    '-t',
    '#',
    '-C',
    '1',
    '-W',
    '3',
  ])
  assert.match(m.stderr + m.stdout, /denied/i)
})

test('isolation holds for publishes: outside topics close the connection; odd topics inside are delivered', async (t) => {
  const outside = [
    'devices/d2/temp',
    'devices/d1x/temp',
    '/devices/d1/temp',
    'devices//d1/temp',
    'devices',
    `devices/d2/${'x'.repeat(20_000)}`,
    'devices/d1/$certs/cert',
  ]
  for (const topic of outside) {
    const c = await deviceClient(t, shared, d1)
    const gone = closed(c)
    c.publish(topic, 'x', { qos: 1 })
    await withTimeout(gone, 5_000, `disconnect after publishing to ${topic.slice(0, 40)}`)
  }
  const observer = await client(t, shared.mqttUrl)
  await observer.subscribeAsync('devices/#', { qos: 1 })
  let leaked = 0
  observer.on('message', (topic) => {
    if (topic !== 'devices/d1' && !topic.startsWith('devices/d1/')) leaked++
  })
  const c = await deviceClient(t, shared, d1)
  await c.subscribeAsync('devices/d1/#', { qos: 1 })
  const inside = [
    'devices/d1//x',
    'devices/d1/',
    'devices/d1',
    `devices/d1/${'y'.repeat(20_000)}`,
    'devices/d1/a/b/c/d/e/f',
  ]
  for (const topic of inside) {
    const got = nextMessage(c, topic)
    await c.publishAsync(topic, 'ok', { qos: 1 })
    assert.equal((await got).payload.toString(), 'ok')
  }
  assert.equal(leaked, 0)
  const s = await shared.status()
  assert.ok((s.certs.denied['aclPublish'] ?? 0) >= outside.length)
})

test('a device does not receive retained messages outside its space', async (t) => {
  const observer = await client(t, shared.mqttUrl)
  await observer.publishAsync('devices/d2/secret', 'for d2', { qos: 1, retain: true })
  const c = await deviceClient(t, shared, d1)
  let leaked = false
  c.on('message', (topic) => {
    if (topic.startsWith('devices/d2')) leaked = true
  })
  assert.deepEqual(await grants(c, ['devices/+/secret']), [0x80])
  const marker = nextMessage(c, 'devices/d1/marker')
  await c.subscribeAsync('devices/d1/marker', { qos: 1 })
  await observer.publishAsync('devices/d1/marker', 'm', { qos: 1 })
  await marker
  assert.equal(leaked, false)
})

test('revocation closes the live session at once, refuses new handshakes and publishes the CRL', async (t) => {
  const d3 = await issueWithCli(t, shared, 'd3')
  const watcher = await issueWithCli(t, shared, 'crl-watcher')
  const w = await deviceClient(t, shared, watcher)
  const live = await deviceClient(t, shared, d3)
  const gone = closed(live)
  await w.subscribeAsync('$edge/ca/crl', { qos: 1 })
  const serial = (await openssl(['x509', '-in', d3.crt, '-noout', '-serial'])).stdout.trim().split('=')[1] ?? ''
  const crlArrives = nextMessage(w, (topic) => topic === '$edge/ca/crl', 10_000)
  const started = Date.now()
  const r = await runCli(['certs', 'revoke', 'd3', '--config', shared.configFile])
  assert.equal(r.code, 0, r.stderr)
  await withTimeout(gone, 5_000, "the revoked device's connection to close")
  const closedAfterMs = Date.now() - started
  await refused(shared, { clientId: 'd3', ...tlsOptions(d3) })

  // The retained CRL lists the serial, and OpenSSL agrees.
  let crl = await crlArrives
  while (
    !new x509.X509Crl(crl.payload.toString()).entries.some(
      (e) => e.serialNumber.toUpperCase().replace(/^0+/, '') === serial.replace(/^0+/, ''),
    )
  ) {
    crl = await nextMessage(w, '$edge/ca/crl', 10_000)
  }
  const crlFile = join(tmpDir(t), 'crl.pem')
  writeFileSync(crlFile, crl.payload)
  const v = await openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', d3.ca, d3.crt])
  assert.match(v.stdout + v.stderr, /certificate revoked/)
  const s = await shared.status()
  assert.ok((s.certs.refusedHandshakes['revoked'] ?? 0) >= 1)
  assert.ok(s.certs.revoked >= 1)
  t.diagnostic(`revoked session closed ${closedAfterMs} ms after the CLI started`)
})

test('a session whose certificate expires is closed by the agent', async (t) => {
  const short = await issueWithCli(t, shared, 'short-lived', ['--lifetime', '4s'])
  const c = await deviceClient(t, shared, short)
  await withTimeout(closed(c), 10_000, 'the session to close at notAfter')
  await shared.waitForLog(
    (l) => l.msg === 'device session closed' && l['reason'] === 'credentialExpired' && l['deviceId'] === 'short-lived',
    5_000,
    'the expiry log',
  )
})

test('with onDeniedPublish: drop, a publish outside the space is acknowledged, dropped and the device stays; an optional-certificate listener admits clients without identity', async (t) => {
  const agent = await startAgent(t, {
    mqtts: { requireClientCert: false },
    config: { devices: { onDeniedPublish: 'drop' } },
  })
  const dev = await issueWithCli(t, agent, 'd7')
  const observer = await client(t, agent.mqttUrl)
  await observer.subscribeAsync('#', { qos: 1 })
  let leaked = false
  observer.on('message', (topic) => {
    if (topic === 'devices/d8/x') leaked = true
  })
  const c = await deviceClient(t, agent, dev)
  await c.publishAsync('devices/d8/x', 'dropped', { qos: 1 }) // PUBACK arrives
  const marker = nextMessage(observer, 'devices/d7/marker')
  await c.publishAsync('devices/d7/marker', 'after', { qos: 1 })
  await marker
  assert.equal(leaked, false)
  assert.ok(c.connected)
  await agent.waitForLog(
    (l) => l.msg === 'publish refused by the acl' && l['action'] === 'drop' && l['deviceId'] === 'd7',
    5_000,
    'the drop log',
  )

  // Without a certificate: admitted, but not as a device.
  const anon = await client(t, mqttsUrl(agent), { clientId: 'anon-1', protocolVersion: 4, ca: readFileSync(dev.ca) })
  assert.ok(anon.connected)
  const taken = await refused(agent, { clientId: 'd7', ca: readFileSync(dev.ca) })
  assert.equal(taken.code, 5, "a device's client id needs the device's certificate")
  assert.match(mqttsUrl(agent), /^mqtts:/)
})
