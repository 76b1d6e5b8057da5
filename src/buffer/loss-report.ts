// Loss reports: telling the level above that data was dropped, in order with
// the data. A report is a row of the dropped data's own queue, written in
// the SAME transaction as the drop, so it exists exactly when the drop does
// (kill -9 and power loss included) and the bridge sends it like any other
// message (QoS 1, in drain order).
//
// Placement. The drain reads each queue by priority (highest first), then by
// id. A report takes the place of the gap:
// - rows dropped from the queue (evicted-full, disk-full, expired): the
//   report reuses the id and priority of the newest dropped row of its
//   group. That id was free (the row is deleted in the same transaction)
//   and lies above the drain cursor (an evicted or expiring row is never in
//   flight; the cursor is rewound after the commit in any case), so the
//   report drains after every row of that priority that preceded the gap
//   and before every row that follows it.
// - messages never stored (refused, expired on arrival): the report gets a
//   fresh id at the message's priority, i.e. where the message would have
//   gone.
// Order holds within a priority; rows of higher priorities drain first, as
// they always do.
//
// Bounded: while a report row of the same (queue, reason, rule) is still
// queued and not handed out, the next drops of that key replace it (the old
// row is deleted and its counts carried into the new one, placed at the new
// gap), so a long outage makes one report per key, not one per batch. A
// report row is never evicted (when_full 'refuse'), never conflated, has no
// TTL, and counts against the byte cap like any row. Conflation drops (the
// feature working as configured) and purges (an operator's action, which
// also removes queued reports) are not reported.
import type { DropReason } from './message-store.js'

export interface LossReportTarget {
  /** Topic on the upstream, placeholders already resolved (default 'edge-agent/{site}/drops'). */
  readonly topic: string
  readonly site: string
  /** rule id → its local topic filter, for the report's topicFilter. */
  readonly ruleFilters: Readonly<Record<string, string>>
}

/** The JSON a report carries (docs/buffer.md, "Loss reports"). */
export interface LossReport {
  readonly type: 'edge-agent/loss-report'
  readonly v: 1
  readonly site: string
  readonly upstream: string
  readonly reason: DropReason
  readonly rule: string
  readonly topicFilter: string | null
  readonly count: number
  /** Message times of the first and last dropped message (ISO 8601). */
  readonly firstAt: string
  readonly lastAt: string
  /** Buffer row ids of the first and last dropped row; null for messages never stored. */
  readonly firstId: number | null
  readonly lastId: number | null
  readonly reportedAt: string
}

/** Rule id of report rows (no bridge rule has it: rule names come from the config and never start with '$'). */
export const LOSS_REPORT_RULE = '$loss-report'

/** Reasons that produce a report. */
export function isReported(reason: DropReason): boolean {
  return reason !== 'conflated' && reason !== 'purged'
}

/** One key's drops within a transaction, merged with a still-queued earlier report of the same key. */
export interface ReportGroup {
  readonly queue: string
  readonly reason: DropReason
  readonly rule: string
  count: number
  firstAt: number
  lastAt: number
  firstId: number | null
  lastId: number | null
  /**
   * Where the report goes: the newest dropped row (id reused) or, for unstored messages, a fresh id at this priority.
   */
  placeId: number | null
  placePriority: number
}

export function reportKey(queue: string, reason: DropReason, rule: string): string {
  return `${queue}\u0000${reason}\u0000${rule}`
}

export function reportPayload(g: ReportGroup, t: LossReportTarget, now: number): Buffer {
  const report: LossReport = {
    type: 'edge-agent/loss-report',
    v: 1,
    site: t.site,
    upstream: g.queue,
    reason: g.reason,
    rule: g.rule,
    topicFilter: t.ruleFilters[g.rule] ?? null,
    count: g.count,
    firstAt: new Date(g.firstAt).toISOString(),
    lastAt: new Date(g.lastAt).toISOString(),
    firstId: g.firstId,
    lastId: g.lastId,
    reportedAt: new Date(now).toISOString(),
  }
  return Buffer.from(JSON.stringify(report))
}
