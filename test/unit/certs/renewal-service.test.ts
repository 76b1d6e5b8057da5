// RenewalService: the gateway side of renewal over MQTT, every refusal code and
// the renewal window, with a fake clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import pino from 'pino'
import {
  ClockGuard,
  LocalCa,
  RenewalService,
  checkIssued,
  renewOverMqtt,
  createCsr,
  generateKeyPair,
  PendingKey,
  RenewalRefusedError,
  type ErrorReply,
  type IssuedReply,
  type RenewalOutcome,
} from '../../../src/certs/index.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const MIN = 60_000
const LIFETIME = 120_000 // accelerated: 2 minutes
const BACKDATE = 5_000

async function setup(t: { after(fn: () => unknown): void }, opts: { enabled?: boolean } = {}) {
  const dir = join(tmpDir(t), 'certs')
  const clock = new FakeClock(T0)
  await LocalCa.init(dir, { name: 'unit CA', lifetimeMs: 365 * 86_400_000, now: T0 })
  const guard = new ClockGuard({ clock, toleranceMs: 5_000, maxForwardJumpMs: 86_400_000 })
  const ca = new LocalCa({ dir, guard, backdateMs: BACKDATE, crlValidityMs: 86_400_000 })
  await ca.load()
  const service = new RenewalService({
    ca,
    guard,
    logger: pino({ level: 'silent' }),
    enabled: opts.enabled ?? true,
    topicPrefix: 'devices/{id}/$certs',
    lifetimeMs: LIFETIME,
    backdateMs: BACKDATE,
    renewAfter: 2 / 3,
    minRequestIntervalMs: 10_000,
    monotonic: () => clock.monotonic(),
  })
  const key = await generateKeyPair()
  const first = await ca.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: LIFETIME })
  return { clock, guard, ca, service, first }
}

async function request(cn: string, requestId = 'r1'): Promise<{ payload: Buffer; keyPem: string }> {
  const key = await generateKeyPair()
  return {
    payload: Buffer.from(JSON.stringify({ v: 1, requestId, csr: await createCsr({ key, cn }) })),
    keyPem: key.privateKeyPem,
  }
}

/** A minimal transport for renewOverMqtt: requests go straight to the service; the first `drop` replies are lost. */
function lossyClient(
  service: RenewalService,
  credential: { serial: string; notBefore: number; notAfter: number },
  drop: number,
) {
  const listeners = new Set<(topic: string, payload: Buffer) => void>()
  let dropReplies = drop
  return {
    subscribeAsync: async () => undefined,
    publishAsync: async (_topic: string, payload: string | Buffer) => {
      const out = await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from(payload), credential })
      if (dropReplies-- > 0) return
      for (const l of listeners) l(out.topic, out.payload)
    },
    on: (_e: 'message', l: (topic: string, payload: Buffer) => void) => listeners.add(l),
    off: (_e: 'message', l: (topic: string, payload: Buffer) => void) => listeners.delete(l),
  }
}

function error(out: RenewalOutcome): ErrorReply {
  assert.equal(out.reply.status, 'error', JSON.stringify(out.reply))
  return out.reply
}

test('renews once 2/3 of the lifetime has passed, not before, and says when to come back', async (t) => {
  const { clock, ca, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  const early = error(
    await service.handle({ id: 'd1', clientId: 'd1', payload: (await request('d1')).payload, credential: cred }),
  )
  assert.equal(early.error, 'too-early')
  assert.equal(early.retryAfterSec, 80, '2/3 of 120 s')
  assert.equal(early.requestId, 'r1')

  await clock.advance(81_000)
  const req = await request('d1', 'r2')
  const out = await service.handle({ id: 'd1', clientId: 'd1', payload: req.payload, credential: cred })
  assert.equal(out.topic, 'devices/d1/$certs/cert')
  const reply = out.reply as IssuedReply
  assert.equal(reply.status, 'issued')
  assert.equal(reply.requestId, 'r2')
  assert.equal(checkIssued(reply.certificate, 'd1', req.keyPem, reply.chain), undefined)
  assert.equal(Date.parse(reply.notAfter), Math.floor((T0 + 81_000 + LIFETIME) / 1000) * 1000)
  assert.equal(Date.parse(reply.renewAfter), Date.parse(reply.notAfter) - LIFETIME / 3)
  assert.equal(ca.newest('d1')?.serial, reply.serial)

  // Same session, old credential: the window follows the newest certificate, so no storm.
  await clock.advance(11_000)
  assert.equal(
    error(await service.handle({ id: 'd1', clientId: 'd1', payload: (await request('d1')).payload, credential: cred }))
      .error,
    'too-early',
  )
  assert.deepEqual(service.stats(), { requests: 3, renewed: 1, resent: 0, refused: { 'too-early': 2 } })
})

test('rate-limits requests per device, whatever their outcome', async (t) => {
  const { service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{}'), credential: cred })
  const limited = error(
    await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{}'), credential: cred }),
  )
  assert.equal(limited.error, 'rate-limited')
  assert.equal(limited.retryAfterSec, 10)
  assert.equal(
    error(await service.handle({ id: 'd2', clientId: 'd2', payload: Buffer.from('{}'), credential: cred })).error,
    'bad-request',
    'another device is not limited',
  )
})

test('refuses a CSR for another identity, a malformed request and a revoked session', async (t) => {
  const { clock, ca, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(90_000)
  assert.equal(
    error(await service.handle({ id: 'd1', clientId: 'd1', payload: (await request('d2')).payload, credential: cred }))
      .error,
    'identity-mismatch',
  )
  await clock.advance(11_000)
  assert.equal(
    error(await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{"csr":"nope"}'), credential: cred }))
      .error,
    'bad-request',
  )
  await clock.advance(11_000)
  assert.equal(
    error(
      await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{"v":2,"csr":"x"}'), credential: cred }),
    ).error,
    'bad-request',
  )
  await ca.revoke({ id: 'd1' })
  await clock.advance(11_000)
  assert.equal(
    error(await service.handle({ id: 'd1', clientId: 'd1', payload: (await request('d1')).payload, credential: cred }))
      .error,
    'revoked',
  )
})

test('accepts a bare PEM CSR (for shell scripts) and a CSR without CN', async (t) => {
  const { clock, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(90_000)
  const key = await generateKeyPair()
  const out = await service.handle({
    id: 'd1',
    clientId: 'd1',
    payload: Buffer.from(await createCsr({ key, cn: 'd1' })),
    credential: cred,
  })
  assert.equal(out.reply.status, 'issued')
  assert.equal(out.reply.requestId, null)
})

test('refuses while the clock is suspicious, with a retry hint', async (t) => {
  const { clock, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(90_000)
  clock.jump(-10 * MIN)
  const r = error(
    await service.handle({ id: 'd1', clientId: 'd1', payload: (await request('d1')).payload, credential: cred }),
  )
  assert.equal(r.error, 'clock-suspicious')
  assert.equal(r.retryAfterSec, 300)
})

test('answers "disabled" when renewal over MQTT is off', async (t) => {
  const { service, first } = await setup(t, { enabled: false })
  const r = error(
    await service.handle({
      id: 'd1',
      clientId: 'd1',
      payload: Buffer.from('{}'),
      credential: { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter },
    }),
  )
  assert.equal(r.error, 'disabled')
})

test('a retry for the key of the newest certificate gets that certificate again (the first reply was lost); another key is too early', async (t) => {
  const { clock, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(81_000)
  const key = await generateKeyPair()
  const csrFor = async (k: typeof key, requestId: string) =>
    Buffer.from(JSON.stringify({ v: 1, requestId, csr: await createCsr({ key: k, cn: 'd1' }) }))
  const issued = (
    await service.handle({ id: 'd1', clientId: 'd1', payload: await csrFor(key, 'r1'), credential: cred })
  ).reply as IssuedReply
  assert.equal(issued.status, 'issued')
  // The reply never arrived; the device, still on its old certificate, asks again with the same key.
  await clock.advance(11_000)
  const again = (await service.handle({ id: 'd1', clientId: 'd1', payload: await csrFor(key, 'r2'), credential: cred }))
    .reply as IssuedReply
  assert.equal(again.status, 'issued', JSON.stringify(again))
  assert.equal(again.serial, issued.serial, 'the same certificate, not a new one')
  assert.equal(again.requestId, 'r2')
  assert.equal(again.certificate, issued.certificate)
  // A different key is a second renewal inside the window: refused, as before.
  await clock.advance(11_000)
  assert.equal(
    error(
      await service.handle({
        id: 'd1',
        clientId: 'd1',
        payload: await csrFor(await generateKeyPair(), 'r3'),
        credential: cred,
      }),
    ).error,
    'too-early',
  )
  // A session already on the new certificate gets nothing again for its key.
  await clock.advance(11_000)
  const onNew = {
    serial: issued.serial,
    notBefore: Date.parse(issued.notBefore),
    notAfter: Date.parse(issued.notAfter),
  }
  assert.equal(
    error(await service.handle({ id: 'd1', clientId: 'd1', payload: await csrFor(key, 'r4'), credential: onNew }))
      .error,
    'too-early',
  )
  assert.deepEqual(service.stats(), { requests: 4, renewed: 1, resent: 1, refused: { 'too-early': 2 } })
})

test('the reference client retrying with the key of a lost reply gets the certificate (client and service together)', async (t) => {
  const { clock, ca, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(81_000)
  const client = lossyClient(service, cred, 1)
  const pending = (await generateKeyPair()).privateKeyPem
  const opts = { client, id: 'd1', caPem: ca.bundlePem(), currentKeyPem: pending, newKeyPem: pending, timeoutMs: 200 }
  await assert.rejects(renewOverMqtt(opts), /no reply/)
  await clock.advance(11_000) // past the rate limit
  const renewed = await renewOverMqtt(opts)
  assert.equal(renewed.keyPem, pending)
  assert.equal(renewed.serial, ca.newest('d1')?.serial)
  assert.deepEqual(service.stats().resent, 1)
})

test('after a restart between the lost reply and the retry, the key saved by PendingKey gets the certificate; a fresh key would be too early', async (t) => {
  const { clock, ca, service, first } = await setup(t)
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await clock.advance(81_000)
  const client = lossyClient(service, cred, 1)
  const path = join(tmpDir(t), 'd1.key.pending')
  const current = (await generateKeyPair()).privateKeyPem
  const base = { client, id: 'd1', caPem: ca.bundlePem(), currentKeyPem: current, timeoutMs: 200 }
  const before = await new PendingKey(path).take(current)
  await assert.rejects(renewOverMqtt({ ...base, newKeyPem: before.keyPem }), /no reply/)
  // The process restarts: nothing survives but the file.
  await clock.advance(11_000)
  const fresh = await renewOverMqtt({ ...base, rotateKey: true }).catch((err: unknown) => err)
  assert.ok(fresh instanceof RenewalRefusedError, String(fresh))
  assert.equal(fresh.error, 'too-early')
  await clock.advance(11_000)
  const after = await new PendingKey(path).take(current)
  assert.equal(after.source, 'resumed')
  const renewed = await renewOverMqtt({ ...base, newKeyPem: after.keyPem })
  assert.equal(renewed.keyPem, before.keyPem)
  assert.equal(renewed.serial, ca.newest('d1')?.serial)
  assert.equal(service.stats().resent, 1)
})
