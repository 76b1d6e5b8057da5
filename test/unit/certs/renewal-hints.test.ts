// Renewal hints agree with the rate limit: a device that waits exactly the
// retryAfterSec of every refusal is never refused as 'rate-limited', however
// close to the opening of its renewal window it first asks, and 'too-early'
// says when the window opens.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import pino from 'pino'
import {
  ClockGuard,
  LocalCa,
  RenewalService,
  createCsr,
  generateKeyPair,
  type ErrorReply,
} from '../../../src/certs/index.js'
import { FakeClock } from './fake-clock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0)
const LIFETIME = 120_000
const BACKDATE = 5_000
const MIN_INTERVAL_MS = 5_000

test('a device that follows every hint is renewed and never refused as rate-limited', async (t) => {
  const dir = join(tmpDir(t), 'certs')
  await LocalCa.init(dir, { name: 'hints CA', lifetimeMs: 365 * 86_400_000, now: T0 })
  // Before the window: 0.4 s and 0.8 s (the hints seen in the field), and further out.
  for (const beforeMs of [400, 800, 1_500, 4_999, 5_000, 7_300, 30_000]) {
    const clock = new FakeClock(T0)
    const guard = new ClockGuard({ clock, toleranceMs: 5_000, maxForwardJumpMs: 86_400_000 })
    const ca = new LocalCa({ dir, guard, backdateMs: BACKDATE, crlValidityMs: 86_400_000 })
    await ca.load()
    const service = new RenewalService({
      ca,
      guard,
      logger: pino({ level: 'silent' }),
      enabled: true,
      topicPrefix: 'devices/{id}/$certs',
      lifetimeMs: LIFETIME,
      backdateMs: BACKDATE,
      renewAfter: 2 / 3,
      minRequestIntervalMs: MIN_INTERVAL_MS,
      monotonic: () => clock.monotonic(),
    })
    const id = `dev-${beforeMs}`
    const key = await generateKeyPair()
    const first = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs: LIFETIME })
    const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
    const opens = service.renewableFrom(first)
    await clock.advance(opens - beforeMs - clock.now())

    const seen: string[] = []
    let renewed = false
    for (let attempt = 0; attempt < 10 && !renewed; attempt++) {
      const csr = await createCsr({ key: await generateKeyPair(), cn: id })
      const out = await service.handle({
        id,
        clientId: id,
        payload: Buffer.from(JSON.stringify({ v: 1, requestId: `r${attempt}`, csr })),
        credential: cred,
      })
      if (out.reply.status === 'issued') {
        renewed = true
        break
      }
      const reply = out.reply
      seen.push(`${reply.error}:${reply.retryAfterSec}`)
      assert.notEqual(reply.error, 'rate-limited', `${id}: ${seen.join(', ')}`)
      assert.equal(reply.error, 'too-early')
      assert.equal(reply.renewableFrom, new Date(opens).toISOString(), 'too-early says when renewal opens')
      assert.ok(
        reply.retryAfterSec !== undefined && reply.retryAfterSec * 1000 >= MIN_INTERVAL_MS,
        `hint ${reply.retryAfterSec} s is shorter than the rate limit`,
      )
      await clock.advance(reply.retryAfterSec * 1000)
    }
    assert.ok(renewed, `${id} renewed after following the hints (${seen.join(', ')})`)
  }
})

test('the rate-limited hint itself is enough: retrying after it is not refused again for the rate', async (t) => {
  const dir = join(tmpDir(t), 'certs')
  await LocalCa.init(dir, { name: 'hints CA', lifetimeMs: 365 * 86_400_000, now: T0 })
  const clock = new FakeClock(T0)
  const guard = new ClockGuard({ clock, toleranceMs: 5_000, maxForwardJumpMs: 86_400_000 })
  const ca = new LocalCa({ dir, guard, backdateMs: BACKDATE, crlValidityMs: 86_400_000 })
  await ca.load()
  const service = new RenewalService({
    ca,
    guard,
    logger: pino({ level: 'silent' }),
    enabled: true,
    topicPrefix: 'devices/{id}/$certs',
    lifetimeMs: LIFETIME,
    backdateMs: BACKDATE,
    renewAfter: 2 / 3,
    minRequestIntervalMs: MIN_INTERVAL_MS,
    monotonic: () => clock.monotonic(),
  })
  const key = await generateKeyPair()
  const first = await ca.issue({ id: 'd1', profile: 'client', publicKey: key.publicKey, lifetimeMs: LIFETIME })
  const cred = { serial: first.serial, notBefore: first.notBefore, notAfter: first.notAfter }
  await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{}'), credential: cred })
  await clock.advance(1_300)
  const limited = (await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{}'), credential: cred }))
    .reply as ErrorReply
  assert.equal(limited.error, 'rate-limited')
  await clock.advance((limited.retryAfterSec ?? 0) * 1000)
  const next = (await service.handle({ id: 'd1', clientId: 'd1', payload: Buffer.from('{}'), credential: cred }))
    .reply as ErrorReply
  assert.equal(next.error, 'bad-request', 'not rate-limited after waiting as told')
})
