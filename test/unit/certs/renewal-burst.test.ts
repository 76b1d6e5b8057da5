// 200 renewal requests at once (the first renewal round of a site commissioned
// in one day, found by `npm run soak`): every request is answered, issued or
// 'busy' with a retry hint; devices that honour the hint all get their
// certificate; and the event loop keeps serving other requests meanwhile.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, get } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { createCsr, generateKeyPair } from '../../../src/certs/index.js'
import { startRenewalService } from '../../helpers/renewal-service.js'
import { withTimeout } from '../../helpers/wait.js'

const DEVICES = 200
const LIFETIME = 3_600_000

test(`${DEVICES} renewals at once: all answered, busy ones retried as advised, the event loop stays responsive`, async (t) => {
  const { ca, service } = await startRenewalService(t, LIFETIME)
  const key = await generateKeyPair()
  const devices = await Promise.all(
    Array.from({ length: DEVICES }, async (_, i) => {
      const id = `d${i}`
      const credential = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs: LIFETIME })
      const payload = Buffer.from(JSON.stringify({ v: 1, requestId: `r${i}`, csr: await createCsr({ key, cn: id }) }))
      return { id, credential, payload }
    }),
  )
  // Stand-in for the admin endpoint, in the same event loop.
  const admin = createServer((_req, res) => res.end('ok'))
  admin.listen(0, '127.0.0.1')
  await once(admin, 'listening')
  t.after(() => admin.close())

  let busy = 0
  let pending = DEVICES
  const renewals = Promise.all(
    devices.map(async (d) => {
      try {
        for (let attempt = 0; attempt < 100; attempt++) {
          const out = await service.handle({ id: d.id, clientId: d.id, payload: d.payload, credential: d.credential })
          if (out.reply.status === 'issued') return
          const e = out.reply
          assert.equal(e.error, 'busy', JSON.stringify(e))
          assert.ok(e.retryAfterSec !== undefined && e.retryAfterSec >= 1, 'a busy reply says when to come back')
          busy++
          await new Promise((r) => setTimeout(r, (e.retryAfterSec ?? 1) * 1000))
        }
        assert.fail(`${d.id}: no certificate after 100 attempts`)
      } finally {
        pending--
      }
    }),
  )
  // Mid-burst, another request on the same event loop is answered before the burst is over.
  const body = await withTimeout(
    new Promise<string>((resolve, reject) => {
      get(`http://127.0.0.1:${(admin.address() as AddressInfo).port}/`, (res) => {
        let s = ''
        res.on('data', (c: Buffer) => (s += c.toString()))
        res.on('end', () => resolve(s))
      }).on('error', reject)
    }),
    60_000,
    'the admin stand-in to answer',
  )
  assert.equal(body, 'ok')
  assert.ok(pending > 0, 'answered while renewals were still being worked through')
  await withTimeout(renewals, 240_000, 'every device to get its certificate')
  const stats = service.stats()
  assert.equal(stats.renewed, DEVICES)
  assert.equal(stats.refused.busy ?? 0, busy)
})
