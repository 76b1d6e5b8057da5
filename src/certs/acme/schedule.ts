// When to renew the gateway certificate, and how long to wait after a
// failure. Pure: time and randomness come in as arguments.

export interface RenewalPlan {
  /** Start of the certificate's validity (ms since the epoch). */
  readonly notBefore: number
  readonly notAfter: number
  /** When this certificate was promoted; maxIntervalMs counts from here. */
  readonly promotedAt: number
  /** Fraction of the lifetime after which to renew. */
  readonly renewAt: number
  /** Renew at least this often, ms; 0 = no such bound. */
  readonly maxIntervalMs: number
  /** The CA's suggested window (ACME Renewal Information), if it published one. */
  readonly ari?: RenewalWindow | undefined
  readonly now: number
  /** Uniform in [0, 1). */
  readonly random: () => number
}

export interface RenewalWindow {
  readonly start: number
  readonly end: number
}

/** Jitter takes up to this fraction of the lifetime off the renewal time, so that a fleet does not renew in step. */
export const JITTER_FRACTION = 0.05

/** The time to start the next renewal; never before `now`. */
export function nextRenewal(p: RenewalPlan): number {
  const lifetime = Math.max(0, p.notAfter - p.notBefore)
  let at = p.notBefore + lifetime * p.renewAt - p.random() * lifetime * JITTER_FRACTION
  if (p.maxIntervalMs > 0) at = Math.min(at, p.promotedAt + p.maxIntervalMs * (1 - p.random() * JITTER_FRACTION))
  // RFC 9773 §4.2: a uniformly random time inside the suggested window; it
  // may only bring the renewal forward (a CA asking for early renewal, e.g.
  // before a revocation).
  if (p.ari !== undefined && p.ari.end >= p.ari.start)
    at = Math.min(at, p.ari.start + p.random() * (p.ari.end - p.ari.start))
  return Math.max(p.now, at)
}

/**
 * Wait before retry number `failures` (1 = after the first failure):
 * exponential from minMs, capped at maxMs, with "full jitter" in its upper
 * half so that gateways that lost the CA together do not come back together.
 */
export function acmeRetryDelay(failures: number, minMs: number, maxMs: number, random: () => number): number {
  const exp = Math.min(maxMs, minMs * 2 ** Math.min(30, Math.max(0, failures - 1)))
  return Math.round(exp / 2 + random() * (exp / 2))
}
