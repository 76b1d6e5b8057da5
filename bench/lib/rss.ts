// Resident memory of one process, read from /proc/<pid>/status, and sampling until it settles.
//
// Invariants: only the given PID is read (children and client drivers are not
// summed in); every sampling loop is bounded by a deadline and returns what it
// saw, flagged `stable: false`, rather than hanging or throwing on a noisy process.
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

export interface ProcMemory {
  /** VmRSS: resident set, KiB. */
  rssKb: number
  /** RssAnon: anonymous resident memory (heap, stacks, malloc), KiB. */
  anonKb: number
  /** RssFile: resident file-backed pages (the node binary, shared libraries), KiB. */
  fileKb: number
  /** RssShmem, KiB. */
  shmemKb: number
  /** VmHWM: peak resident set, KiB. */
  hwmKb: number
  threads: number
}

function field(status: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)
  return m?.[1] === undefined ? 0 : Number(m[1])
}

/** Memory of `pid` now. Throws if the process is gone. */
export function readProcMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return {
    rssKb: field(status, 'VmRSS'),
    anonKb: field(status, 'RssAnon'),
    fileKb: field(status, 'RssFile'),
    shmemKb: field(status, 'RssShmem'),
    hwmKb: field(status, 'VmHWM'),
    threads: field(status, 'Threads'),
  }
}

export interface SettleOptions {
  /** Sampling period, ms. Default 250. */
  intervalMs?: number
  /** Number of consecutive samples that must agree. Default 12 (3 s at 250 ms). */
  window?: number
  /** Allowed spread inside the window: max(toleranceKb, tolerancePct of the level). Default 256 KiB / 0.5 %. */
  toleranceKb?: number
  tolerancePct?: number
  /** Give up after this long and report the last sample as unstable. Default 45 000 ms. */
  timeoutMs?: number
}

export interface Settled {
  /** Mean of the final window, KiB. */
  rssKb: number
  /** The last sample in full. */
  last: ProcMemory
  stable: boolean
  elapsedMs: number
  samples: number
}

/** Sample `pid` until `window` consecutive samples lie within tolerance of each other, or until the deadline. */
export async function sampleUntilStable(pid: number, opts: SettleOptions = {}): Promise<Settled> {
  const intervalMs = opts.intervalMs ?? 250
  const window = opts.window ?? 12
  const toleranceKb = opts.toleranceKb ?? 256
  const tolerancePct = opts.tolerancePct ?? 0.5
  const timeoutMs = opts.timeoutMs ?? 45_000
  const t0 = performance.now()
  const recent: number[] = []
  let last = readProcMemory(pid)
  let samples = 0
  const maxSamples = Math.ceil(timeoutMs / intervalMs) + window
  while (samples < maxSamples) {
    last = readProcMemory(pid)
    samples++
    recent.push(last.rssKb)
    if (recent.length > window) recent.shift()
    if (recent.length === window) {
      const lo = Math.min(...recent)
      const hi = Math.max(...recent)
      if (hi - lo <= Math.max(toleranceKb, (hi * tolerancePct) / 100)) {
        return { rssKb: mean(recent), last, stable: true, elapsedMs: performance.now() - t0, samples }
      }
    }
    if (performance.now() - t0 >= timeoutMs) break
    await sleep(intervalMs)
  }
  return { rssKb: mean(recent), last, stable: false, elapsedMs: performance.now() - t0, samples }
}

export interface Observed {
  minKb: number
  maxKb: number
  lastKb: number
  last: ProcMemory
}

/** Sample `pid` for `durationMs` (a measurement window, not a synchronisation wait) and return the range seen. */
export async function observe(pid: number, durationMs: number, intervalMs = 500): Promise<Observed> {
  const t0 = performance.now()
  let last = readProcMemory(pid)
  let minKb = last.rssKb
  let maxKb = last.rssKb
  const maxSamples = Math.ceil(durationMs / intervalMs) + 1
  for (let i = 0; i < maxSamples && performance.now() - t0 < durationMs; i++) {
    await sleep(intervalMs)
    last = readProcMemory(pid)
    minKb = Math.min(minKb, last.rssKb)
    maxKb = Math.max(maxKb, last.rssKb)
  }
  return { minKb, maxKb, lastKb: last.rssKb, last }
}

export interface SettlePeriodOptions {
  /** Longest we keep sampling, ms. */
  maxMs: number
  /** Sampling period, ms. Default 500. */
  intervalMs?: number
  /** A drop of at least this share of the starting level counts as "the memory reducer ran". Default 3 %. */
  dropPct?: number
  /** After such a drop, this many consecutive samples within 1 % end the period early. Default 10 (5 s). */
  window?: number
}

export interface SettlePeriod extends Observed {
  /** Mean of the final samples, KiB. */
  settledKb: number
  /** Whether the period ended early after a drop, and when. */
  dropped: boolean
  elapsedMs: number
}

/**
 * Keep sampling after the first stable level, as a measurement window: V8's memory reducer
 * gives back young-generation and fragmented old-generation pages some 8-35 s after the last
 * burst of allocation, and nothing signals when. Ends at `maxMs`, or earlier once RSS dropped
 * by `dropPct` and then held still for `window` samples.
 */
export async function observeSettle(pid: number, opts: SettlePeriodOptions): Promise<SettlePeriod> {
  const intervalMs = opts.intervalMs ?? 500
  const dropPct = opts.dropPct ?? 3
  const window = opts.window ?? 10
  const t0 = performance.now()
  const first = readProcMemory(pid)
  let last = first
  let minKb = first.rssKb
  let maxKb = first.rssKb
  let dropped = false
  const recent: number[] = [first.rssKb]
  const maxSamples = Math.ceil(opts.maxMs / intervalMs) + 1
  for (let i = 0; i < maxSamples && performance.now() - t0 < opts.maxMs; i++) {
    await sleep(intervalMs)
    last = readProcMemory(pid)
    minKb = Math.min(minKb, last.rssKb)
    maxKb = Math.max(maxKb, last.rssKb)
    recent.push(last.rssKb)
    if (recent.length > window) recent.shift()
    if (last.rssKb <= first.rssKb * (1 - dropPct / 100)) dropped = true
    if (dropped && recent.length === window) {
      const hi = Math.max(...recent)
      if (hi - Math.min(...recent) <= hi * 0.01) break
    }
  }
  return { minKb, maxKb, lastKb: last.rssKb, last, settledKb: mean(recent), dropped, elapsedMs: performance.now() - t0 }
}

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length
}
