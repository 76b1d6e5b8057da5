// Power cuts at random points of a certificate install: the real install code
// runs on the power-cut disk, which cuts by itself at a random file operation
// (--cut-after-ops), every other round with names durable at once (the
// journaling model of powercut_fs.py, where a cut between two renames keeps
// the first). Afterwards the party still has a working pair, old or
// new, never a torn file or a key without its certificate:
// - a device renewal and the gateway's upstream-certificate renewal (the
//   sequences of `edge-agent device renew` and the bridge renewer: pending key,
//   two-phase install, pending key cleared), checked by a TLS connection to
//   the agent's mqtts listener with the pair left on the disk;
// - the server-certificate rotation of the local CA, checked by a TLS
//   handshake against the material the certs service loads after the cut.
import assert from 'node:assert/strict'
import { createServer, connect as tlsConnect } from 'node:tls'
import { once } from 'node:events'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import pino from 'pino'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { PowerCutDisk, powerCutUnsupported } from '../../helpers/powercut.js'
import type { Scope } from '../../helpers/scope.js'
import { withTimeout } from '../../helpers/wait.js'
import { CertsService, PendingKey, completeInstall, installCertificate, writeAtomic } from '../../../src/certs/index.js'
import { deviceClient, issueWithCli, type DeviceFiles } from '../certs/support.js'
import { runSeed, seeded } from './support.js'

const ROUNDS = 20

interface Pair {
  keyPem: string
  certPem: string
}

type Sequence = (files: { cert: string; key: string }, next: Pair) => Promise<void>

/** `edge-agent device renew`: pending key, install with a verify step, pending cleared. */
const deviceRenewal: Sequence = async (files, next) => {
  const pending = new PendingKey(`${files.key}.pending`)
  await writeAtomic(pending.path, next.keyPem, 0o600)
  await installCertificate(files, next, { replaceKey: true, verify: async () => undefined })
  await pending.clear()
}

/** The bridge's upstream renewer: the same, without the probe connection. */
const gatewayRenewal: Sequence = async (files, next) => {
  const pending = new PendingKey(`${files.key}.pending`)
  await writeAtomic(pending.path, next.keyPem, 0o600)
  await installCertificate(files, next, { replaceKey: true })
  await pending.clear()
}

/** Mounts, puts `old` in a fresh directory and makes it durable (clean unmount): the state before the renewal. */
async function prepare(
  disk: PowerCutDisk,
  round: number,
  old: DeviceFiles,
): Promise<{ cert: string; key: string; ca: string }> {
  await disk.mount()
  const dir = join(disk.path, `r${round}`)
  mkdirSync(dir)
  const files = { cert: join(dir, 'device.crt'), key: join(dir, 'device.key'), ca: join(dir, 'ca.crt') }
  writeFileSync(files.cert, readFileSync(old.crt))
  writeFileSync(files.key, readFileSync(old.key), { mode: 0o600 })
  writeFileSync(files.ca, readFileSync(old.ca))
  await disk.unmount()
  return files
}

for (const [name, sequence] of [
  ['a device renewal', deviceRenewal],
  ["the gateway's upstream-certificate renewal", gatewayRenewal],
] as const) {
  test(`${ROUNDS} power cuts at random points of ${name}: a working pair, old or new, every time`, async (t) => {
    const unsupported = await powerCutUnsupported()
    if (unsupported !== null) return t.skip(unsupported)
    const rnd = seeded(runSeed())
    t.diagnostic(`seed ${rnd.seed} (replay with POWERCUT_SEED=${rnd.seed})`)
    const agent = await startAgent(t, { mqtts: true })
    const old = await issueWithCli(t, agent, 'dev-1')
    const renewed = await issueWithCli(t, agent, 'dev-1')
    const next = { keyPem: readFileSync(renewed.key, 'utf8'), certPem: readFileSync(renewed.crt, 'utf8') }
    const disk = await PowerCutDisk.create(t)
    await disk.unmount()

    // How many file operations the whole sequence takes, to cut anywhere in it.
    const calib = await prepare(disk, 999, old)
    await disk.mount()
    const before = (await disk.stats()).ops
    await sequence(calib, next)
    const total = (await disk.stats()).ops - before
    await disk.unmount()
    t.diagnostic(`the sequence takes ${total} mutating file operations`)

    const outcomes: Record<string, number> = { old: 0, new: 0, completed: 0 }
    for (let round = 0; round < ROUNDS; round++) {
      const files = await prepare(disk, round, old)
      // Every other round on the journaling model, where the state between the two renames can survive;
      // those rounds walk the last operations of the sequence (the renames), the others cut anywhere.
      const durableMetadata = round % 2 === 1
      const cutAt = durableMetadata ? Math.max(1, total - (round - 1) / 2) : rnd.int(1, total)
      const where = `seed ${rnd.seed}, round ${round + 1}, cut at operation ${cutAt} of ${total}${durableMetadata ? ', durable metadata' : ''}`
      await disk.mount({ cutAfterOps: cutAt, durableMetadata })
      await sequence(files, next).catch(() => undefined) // the disk went away under it
      if (!disk.cutHappened) await disk.cut()
      else await disk.cutDone()
      await disk.mount()
      // What the next run does first (device renew, agent start).
      if (await completeInstall(files)) outcomes['completed'] = (outcomes['completed'] ?? 0) + 1
      const certPem = readFileSync(files.cert, 'utf8')
      const which = certPem === next.certPem ? 'new' : certPem === readFileSync(old.crt, 'utf8') ? 'old' : 'torn'
      assert.notEqual(which, 'torn', `${where}: the certificate is neither the old nor the new one`)
      outcomes[which] = (outcomes[which] ?? 0) + 1
      await connects(t, agent, files, where)
      await disk.unmount()
    }
    t.diagnostic(
      `old pair kept ${outcomes['old']}, new pair installed ${outcomes['new']}, interrupted installs completed ${outcomes['completed']}`,
    )
  })
}

async function connects(
  t: Scope,
  agent: RunningAgent,
  files: { cert: string; key: string; ca: string },
  where: string,
): Promise<void> {
  const c = await deviceClient(t, agent, { id: 'dev-1', crt: files.cert, key: files.key, ca: files.ca }).catch(
    (err: unknown) => {
      throw new Error(`${where}: the device cannot connect with the pair on its disk: ${(err as Error).message}`)
    },
  )
  await c.endAsync()
}

test(`${ROUNDS} power cuts at random points of a server-certificate rotation: the broker still has a valid pair`, async (t) => {
  const unsupported = await powerCutUnsupported()
  if (unsupported !== null) return t.skip(unsupported)
  const rnd = seeded(runSeed())
  t.diagnostic(`seed ${rnd.seed} (replay with POWERCUT_SEED=${rnd.seed})`)
  const disk = await PowerCutDisk.create(t)
  const dataDir = join(disk.path, 'data')
  const logger = pino({ level: 'silent' })
  const service = (): CertsService =>
    new CertsService({
      dataDir,
      logger,
      autoInit: true,
      caName: 'power-cut test CA',
      caLifetimeMs: 10 * 365 * 86_400_000,
      backdateMs: 60_000,
      maxIdBytes: 128,
      device: { lifetimeMs: 30 * 86_400_000, renewAfter: 0.5 },
      server: { lifetimeMs: 30 * 86_400_000, renewAfter: 0.5, names: ['localhost', '127.0.0.1'] },
      renewal: { enabled: false, topicPrefix: 'edge/certs', minRequestIntervalMs: 60_000 },
      crl: { topic: 'edge/crl', validityMs: 86_400_000 },
      clockGuard: { toleranceMs: 300_000, maxForwardJumpMs: 365 * 86_400_000 },
    })
  // The CA and a first server pair, made durable by a clean unmount.
  mkdirSync(dataDir, { mode: 0o700 })
  const first = service()
  await first.start(AbortSignal.timeout(60_000))
  const caPem = first.ca.signer.certPem
  await first.stop()
  await disk.unmount()

  await disk.mount()
  const calib = service()
  await calib.start(AbortSignal.timeout(60_000))
  const before = (await disk.stats()).ops
  await calib.server.rotateNow('calibration')
  const total = (await disk.stats()).ops - before
  await calib.stop()
  await disk.unmount()
  t.diagnostic(`a rotation takes ${total} mutating file operations`)

  for (let round = 0; round < ROUNDS; round++) {
    const cutAt = rnd.int(1, total)
    const where = `seed ${rnd.seed}, round ${round + 1}, cut at operation ${cutAt} of ${total}${round % 2 === 1 ? ', durable metadata' : ''}`
    // The start's own operations, counted on a dry run, then the cut inside the rotation after them.
    await disk.mount()
    const svc2 = service()
    await svc2.start(AbortSignal.timeout(60_000))
    const startOps = (await disk.stats()).ops
    await svc2.stop()
    await disk.unmount()
    await disk.mount({ cutAfterOps: startOps + cutAt, durableMetadata: round % 2 === 1 })
    const svc3 = service()
    await svc3.start(AbortSignal.timeout(60_000)).catch(() => undefined)
    await svc3.server.rotateNow('power-cut test').catch(() => undefined)
    await svc3.stop().catch(() => undefined)
    if (!disk.cutHappened) await disk.cut()
    else await disk.cutDone()

    await disk.mount()
    const after = service()
    await after.start(AbortSignal.timeout(60_000)).catch((err: unknown) => {
      throw new Error(`${where}: the certs service does not start after the cut: ${(err as Error).message}`)
    })
    assert.equal(after.ca.signer.certPem, caPem, `${where}: the CA is unchanged`)
    const m = after.server.material()
    await handshake(m, caPem, where)
    await after.stop()
    await disk.unmount()
  }
  t.diagnostic(`${ROUNDS} cuts; the broker had a valid pair every time`)
})

/** A TLS server with the material, a client that trusts only the local CA: the handshake completes. */
async function handshake(m: { key: string; cert: string }, caPem: string, where: string): Promise<void> {
  const server = createServer({ key: m.key, cert: m.cert }, (s) => s.end())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  try {
    const port = (server.address() as { port: number }).port
    const sock = tlsConnect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost' })
    await withTimeout(once(sock, 'secureConnect'), 10_000, `${where}: TLS handshake`)
    sock.destroy()
  } finally {
    server.close()
  }
}
