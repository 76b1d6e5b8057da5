// renewOverMqtt when the connection goes away mid-request: the deadline still
// holds and nothing is left as an unhandled rejection (a device process would die of it).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { ClockGuard, LocalCa, generateKeyPair, renewOverMqtt, systemClock } from '../../../src/certs/index.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

async function caPem(t: { after(fn: () => unknown): void }): Promise<string> {
  const dir = join(tmpDir(t), 'certs')
  await LocalCa.init(dir, { name: 'unit CA', lifetimeMs: 86_400_000, now: Date.now() })
  const ca = new LocalCa({
    dir,
    guard: new ClockGuard({ clock: systemClock, toleranceMs: 5_000, maxForwardJumpMs: 86_400_000 }),
    backdateMs: 0,
    crlValidityMs: 86_400_000,
  })
  await ca.load()
  return ca.bundlePem()
}

function transport(publishAsync: () => Promise<unknown>) {
  return { subscribeAsync: async () => undefined, publishAsync, on: () => undefined, off: () => undefined }
}

test('a publish held past the deadline (connection down) rejects at the deadline, with no unhandled rejection', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => {
    unhandled.push(err)
  }
  process.on('unhandledRejection', onUnhandled)
  t.after(() => process.off('unhandledRejection', onUnhandled))
  let release: (() => void) | undefined
  const held = new Promise<void>((r) => (release = r))
  const key = (await generateKeyPair()).privateKeyPem
  const opts = { client: transport(() => held), id: 'd1', caPem: await caPem(t), currentKeyPem: key, timeoutMs: 100 }
  await assert.rejects(
    renewOverMqtt(opts),
    (err: Error & { code?: string }) => err.code === 'EDGE_ERR_CERT_RENEWAL_FAILED' && /no reply/.test(err.message),
  )
  release?.()
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(unhandled, [])
})

test('a publish that fails rejects with its own error, and the deadline later is not an unhandled rejection', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => {
    unhandled.push(err)
  }
  process.on('unhandledRejection', onUnhandled)
  t.after(() => process.off('unhandledRejection', onUnhandled))
  const key = (await generateKeyPair()).privateKeyPem
  const opts = {
    client: transport(() => Promise.reject(new Error('connection closed'))),
    id: 'd1',
    caPem: await caPem(t),
    currentKeyPem: key,
    timeoutMs: 50,
  }
  await assert.rejects(renewOverMqtt(opts), /connection closed/)
  await new Promise((r) => setTimeout(r, 150))
  assert.deepEqual(unhandled, [])
})
