// 'busy' never outlasts a device's certificate (found by `npm run soak`): in a
// burst, a device whose certificate is running out is told to come back within
// half the time it has left, and one with less than two busy waits left is
// queued and answered instead of sent away.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCsr, generateKeyPair, type RenewalOutcome } from '../../../src/certs/index.js'
import { startRenewalService } from '../../helpers/renewal-service.js'
import { withTimeout } from '../../helpers/wait.js'

const BURST = 200
const LIFETIME = 3_600_000

test('in a burst, busy hints stay within half of the time a certificate has left', async (t) => {
  const { ca, service } = await startRenewalService(t, LIFETIME)
  const key = await generateKeyPair()
  const request = async (id: string, leftMs: number | undefined): Promise<() => Promise<RenewalOutcome>> => {
    const issued = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs: LIFETIME })
    const payload = Buffer.from(JSON.stringify({ v: 1, requestId: id, csr: await createCsr({ key, cn: id }) }))
    return () => {
      // The session's certificate: the one just issued, or one that ends leftMs from now.
      const credential =
        leftMs === undefined
          ? issued
          : { serial: issued.serial, notBefore: issued.notBefore, notAfter: Date.now() + leftMs }
      return service.handle({ id, clientId: id, payload, credential })
    }
  }
  const herd = await Promise.all(Array.from({ length: BURST }, (_, i) => request(`h${i}`, undefined)))
  const urgent = await Promise.all(Array.from({ length: 5 }, (_, i) => request(`u${i}`, 3_000)))
  const soon = await Promise.all(Array.from({ length: 5 }, (_, i) => request(`s${i}`, 20_000)))

  const herdOut = herd.map((go) => go())
  const urgentOut = urgent.map((go) => go())
  const soonOut = soon.map((go) => go())
  const [h, u, s] = await withTimeout(
    Promise.all([Promise.all(herdOut), Promise.all(urgentOut), Promise.all(soonOut)]),
    240_000,
    'every request to be answered',
  )
  const busy = (o: RenewalOutcome) => o.reply.status === 'error' && o.reply.error === 'busy'
  assert.ok(h.some(busy), 'the burst made the service busy (else this test shows nothing)')
  for (const o of u) assert.equal(o.reply.status, 'issued', `3 s left: queued and answered, ${JSON.stringify(o.reply)}`)
  for (const o of s) {
    if (o.reply.status === 'issued') continue
    assert.ok(busy(o), JSON.stringify(o.reply))
    const hint = o.reply.status === 'error' ? (o.reply.retryAfterSec ?? Infinity) : Infinity
    assert.ok(hint <= 10, `20 s left: come back within 10 s, told ${hint} s`)
  }
})
