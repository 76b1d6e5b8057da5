// A RenewalService over a fresh local CA on the system clock, for the tests
// that drive many renewals at once (bursts, busy hints).
import { join } from 'node:path'
import pino from 'pino'
import { ClockGuard, LocalCa, RenewalService, systemClock } from '../../src/certs/index.js'
import type { Scope } from './scope.js'
import { tmpDir } from './tmp-dir.js'

export async function startRenewalService(
  t: Scope,
  lifetimeMs: number,
): Promise<{ readonly ca: LocalCa; readonly service: RenewalService }> {
  const root = tmpDir(t)
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
