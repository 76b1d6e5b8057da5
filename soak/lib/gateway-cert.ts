// The gateway's own upstream certificate (certs.acme) over the month: what the
// soak reads of it, and the checks that decide whether it held up.
//
// Promotions are seen in /status `gatewayCertificate` (a new serial); failed
// attempts are read from the agent's log, where each one is a warning line
// with its error code and the retry delay chosen, so none is missed between
// polls. Pure code: time comes in as arguments.
import { readFileSync } from 'node:fs'

/** The scaled ACME settings of the run (certs.acme in the agent's config, pebble's certificate lifetime). */
export interface GatewayCertPlan {
  /** pebble's certificateValidityPeriod. */
  readonly lifetimeSec: number
  readonly renewAt: number
  readonly retryMinMs: number
  readonly retryMaxMs: number
  readonly requestTimeoutMs: number
  readonly warnBeforeSec: number
  /** After the link returns, the gateway certificate and the bridge must be back within this. */
  readonly graceMs: number
}

/** Wall-clock slack on top of the longest retry wait: one order, its http-01 check and the test handshake. */
export const ORDER_SLACK_MS = 30_000

/**
 * One simulated day of lifetime (a short-lived certificate, as a plant CA such as step-ca issues by default:
 * 24 h), renewed at half of it, so a month offline always outlives it; at least 10 s of wall-clock time so
 * that an order on a loaded machine fits in the half left at renewal. The retry backoff is the agent's
 * default (1 minute doubling to 1 hour) on the compressed calendar.
 */
export function gatewayCertPlan(daySec: number): GatewayCertPlan {
  const dayMs = daySec * 1000
  const lifetimeSec = Math.max(10, Math.round(daySec))
  const retryMinMs = Math.max(100, Math.round(dayMs / 1440))
  const retryMaxMs = Math.max(retryMinMs, Math.round(dayMs / 24))
  return {
    lifetimeSec,
    renewAt: 0.5,
    retryMinMs,
    retryMaxMs,
    requestTimeoutMs: 5000,
    warnBeforeSec: Math.max(1, Math.round(lifetimeSec / 4)),
    graceMs: retryMaxMs + ORDER_SLACK_MS,
  }
}

export interface GatewayView {
  readonly state?: string
  readonly serial?: string | null
  readonly notBefore?: string | null
  readonly notAfter?: string | null
  readonly expiresInSec?: number | null
  readonly renewals?: number
  readonly failures?: number
}

export interface Promotion {
  readonly serial: string
  /** Simulated day the soak first saw it in /status. */
  readonly seenDay: number
  readonly notBeforeDay: number
  readonly notAfterDay: number
  readonly notAfter: string
}

export interface InvalidStretch {
  readonly fromDay: number
  readonly toDay: number
  readonly seconds: number
  /** Inside the grace after the link returned: allowed. */
  readonly inGrace: boolean
}

const INVALID = new Set(['expired', 'none'])

/** Follows the gateway certificate sample by sample. */
export class GatewayCertWatch {
  readonly promotions: Promotion[] = []
  readonly invalidWhileUp: InvalidStretch[] = []
  /** Samples while the link was down with no certificate at all after one had been promoted: a lost certificate. */
  lostOffline = 0
  #open: { from: number; fromDay: number; inGrace: boolean } | undefined
  #lastSerial: string | undefined

  constructor(
    private readonly t0: number,
    private readonly daySec: number,
    private readonly graceMs: number,
  ) {}

  #day(t: number): number {
    return (t - this.t0) / (this.daySec * 1000)
  }

  /** Last serial promoted (seen) so far. */
  get serial(): string | undefined {
    return this.#lastSerial
  }

  /**
   * One sample: `now`, whether the link passes traffic, when it last came back (null before day 31), and the
   * gateway certificate of /status (undefined when /status did not answer: nothing is concluded).
   */
  observe(now: number, linkUp: boolean, linkUpAt: number | null, g: GatewayView | null | undefined): void {
    if (g === undefined || g === null) return
    const serial = g.serial ?? undefined
    if (serial !== undefined && serial !== this.#lastSerial) {
      const nb = Date.parse(g.notBefore ?? '')
      const na = Date.parse(g.notAfter ?? '')
      this.promotions.push({
        serial,
        seenDay: this.#day(now),
        notBeforeDay: this.#day(nb),
        notAfterDay: this.#day(na),
        notAfter: g.notAfter ?? '',
      })
      this.#lastSerial = serial
    } else if (!linkUp && this.#lastSerial !== undefined && serial === undefined) {
      this.lostOffline++
    }
    const invalid = INVALID.has(g.state ?? 'none')
    if (linkUp && invalid) {
      const inGrace = linkUpAt !== null && now - linkUpAt <= this.graceMs
      if (this.#open !== undefined && this.#open.inGrace !== inGrace) this.#close(now)
      this.#open ??= { from: now, fromDay: this.#day(now), inGrace }
    } else {
      this.#close(now)
    }
  }

  /** Ends an open stretch (at the end of the run). */
  finish(now: number): void {
    this.#close(now)
  }

  #close(now: number): void {
    const o = this.#open
    if (o === undefined) return
    this.#open = undefined
    this.invalidWhileUp.push({
      fromDay: o.fromDay,
      toDay: this.#day(now),
      seconds: (now - o.from) / 1000,
      inGrace: o.inGrace,
    })
  }

  /** Stretches with the link up and no valid certificate, outside the grace after the link returned. */
  get violations(): InvalidStretch[] {
    return this.invalidWhileUp.filter((s) => !s.inGrace)
  }
}

export interface FailedAttempt {
  /** Epoch ms (the log line's time). */
  readonly t: number
  readonly code: string
  readonly retryInMs: number
}

const FAILED_MSG = 'gateway certificate renewal failed; keeping the current certificate'

/** Failed renewal attempts from the agent's JSON log (every process appends to the same file). */
export function readFailedAttempts(logFile: string): FailedAttempt[] {
  let text: string
  try {
    text = readFileSync(logFile, 'utf8')
  } catch {
    return []
  }
  return parseFailedAttempts(text)
}

export function parseFailedAttempts(text: string): FailedAttempt[] {
  const out: FailedAttempt[] = []
  for (const line of text.split('\n')) {
    if (!line.includes(FAILED_MSG)) continue
    try {
      const j = JSON.parse(line) as { msg?: string; time?: number | string; code?: string; retryInMs?: number }
      if (j.msg !== FAILED_MSG) continue
      // pino's time: epoch ms, or an ISO string with the agent's timestamp setting.
      const t = typeof j.time === 'string' ? Date.parse(j.time) : (j.time ?? 0)
      out.push({ t, code: j.code ?? 'unknown', retryInMs: j.retryInMs ?? 0 })
    } catch {
      // a line cut by kill -9
    }
  }
  return out
}

/**
 * The most failed attempts the backoff allows in [from, to): once at its cap, one attempt per at least
 * half of retryMaxMs (full jitter in the upper half); each agent process starts the ramp again from
 * retryMinMs (its failure count is not kept), which costs at most log2(max/min) + 1 attempts below the
 * cap, plus the attempt that was in flight at each boundary.
 */
export function attemptBound(o: {
  readonly fromMs: number
  readonly toMs: number
  readonly processes: number
  readonly retryMinMs: number
  readonly retryMaxMs: number
}): number {
  const capped = Math.ceil((o.toMs - o.fromMs) / (o.retryMaxMs / 2))
  const ramp = Math.ceil(Math.log2(o.retryMaxMs / o.retryMinMs)) + 2
  return capped + o.processes * ramp
}
