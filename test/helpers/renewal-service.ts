// A RenewalService over a fresh local CA on the system clock, for the tests
// and the benchmark that drive many renewals at once (bursts, busy hints).
import { join } from 'node:path'
import pino from 'pino'
import { ClockGuard, LocalCa, RenewalService, systemClock } from '../../src/certs/index.js'
import type { Scope } from './scope.js'
import { tmpDir } from './tmp-dir.js'

export interface RenewalFixture {
  readonly ca: LocalCa
  readonly service: RenewalService
}

export async function startRenewalService(t: Scope, lifetimeMs: number): Promise<RenewalFixture> {
  return renewalServiceIn(tmpDir(t), lifetimeMs)
}

/** The same in a directory the caller owns (the renewal-burst benchmark). */
export async function renewalServiceIn(root: string, lifetimeMs: number): Promise<RenewalFixture> {
  const dir = join(root, 'certs')
  await LocalCa.init(dir, { name: 'unit CA', lifetimeMs: 365 * 86_400_000, now: Date.now() })
  const guard = new ClockGuard({
    clock: systemClock,
    toleranceMs: 5_000,
    maxForwardJumpMs: 86_400_000,
    file: join(root, 'clock.json'),
  })
  await guard.load()
  const ca = new LocalCa({ dir, guard, backdateMs: 0, crlValidityMs: 86_400_000 })
  await ca.load()
  const service = new RenewalService({
    ca,
    guard,
    logger: pino({ level: 'silent' }),
    enabled: true,
    topicPrefix: 'devices/{id}/$certs',
    lifetimeMs,
    backdateMs: 0,
    renewAfter: 0,
    minRequestIntervalMs: 1_000,
    monotonic: () => performance.now(),
  })
  return { ca, service }
}
