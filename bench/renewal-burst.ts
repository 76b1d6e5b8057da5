// 200 renewals at once through RenewalService and LocalCa (what the first
// renewal round of a site commissioned in one day does): time to each reply
// and the event loop's delay meanwhile. `node --import tsx bench/renewal-burst.ts [n]`
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { mkdtempSync, rmSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCsr, generateKeyPair } from '../src/certs/index.js'
import { renewalServiceIn } from '../test/helpers/renewal-service.js'

const n = Number(process.argv[2] ?? 200)
const root = mkdtempSync(join(tmpdir(), 'renewal-burst-'))
try {
  const lifetimeMs = 60_000
  const { ca, service } = await renewalServiceIn(root, lifetimeMs)
  const reqs = []
  for (let i = 0; i < n; i++) {
    const key = await generateKeyPair()
    const id = `d${i}`
    const first = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs })
    const k2 = await generateKeyPair()
    const payload = Buffer.from(JSON.stringify({ v: 1, requestId: `r${i}`, csr: await createCsr({ key: k2, cn: id }) }))
    reqs.push({ id, payload, credential: first })
  }
  await new Promise((r) => setTimeout(r, 1200))
  const h = monitorEventLoopDelay({ resolution: 10 })
  h.enable()
  let maxGap = 0
  let last = performance.now()
  const tick = setInterval(() => {
    const t = performance.now()
    maxGap = Math.max(maxGap, t - last)
    last = t
  }, 10)
  // What /status needs besides the event loop: a libuv thread pool slot
  // (fs, webcrypto), probed with an fs.stat every 20 ms.
  let maxStat = 0
  let probing = true
  const probe = (async () => {
    while (probing) {
      const s0 = performance.now()
      await stat(root)
      maxStat = Math.max(maxStat, performance.now() - s0)
      await new Promise((r) => setTimeout(r, 20))
    }
  })()
  let busy = 0
  const t0 = performance.now()
  const times = await Promise.all(
    reqs.map(async (r) => {
      // A device honours 'busy': it asks again after retryAfterSec. Time to the first reply, and to the certificate.
      let first: number | undefined
      for (;;) {
        const out = await service.handle({ id: r.id, clientId: r.id, payload: r.payload, credential: r.credential })
        first ??= performance.now() - t0
        if (out.reply.status === 'issued') return { first, done: performance.now() - t0 }
        if (out.reply.error !== 'busy') throw new Error(JSON.stringify(out.reply))
        busy++
        await new Promise((res) => setTimeout(res, (out.reply as { retryAfterSec: number }).retryAfterSec * 1000))
      }
    }),
  )
  clearInterval(tick)
  probing = false
  await probe
  h.disable()
  const q = (xs: number[], p: number) =>
    xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!.toFixed(0)
  const firsts = times.map((x) => x.first)
  const dones = times.map((x) => x.done)
  console.log(
    `n=${n} all issued in ${(performance.now() - t0).toFixed(0)} ms, ${busy} busy replies; first reply p50 ${q(firsts, 0.5)} p90 ${q(firsts, 0.9)} max ${q(firsts, 1)} ms; certificate p50 ${q(dones, 0.5)} max ${q(dones, 1)} ms`,
  )
  console.log(
    `event loop delay p50 ${(h.percentile(50) / 1e6).toFixed(1)} p99 ${(h.percentile(99) / 1e6).toFixed(1)} max ${(h.max / 1e6).toFixed(1)} ms; longest 10 ms timer gap ${maxGap.toFixed(0)} ms; slowest fs.stat ${maxStat.toFixed(0)} ms`,
  )
} finally {
  rmSync(root, { recursive: true, force: true })
}
