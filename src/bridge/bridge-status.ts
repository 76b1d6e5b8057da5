// What one bridge reports about itself (`edge-agent status`, metrics): the
// shape of its status, and its drops counted by reason and by rule, merged
// with the buffer's drops of the same rules.
import type { MessageStore } from '../buffer/index.js'
import type { ConnectionStats, UpstreamState } from './upstream-connection.js'

export type BridgeDropReason =
  'offline-qos0' | 'rate-limited' | 'upstream-rejected' | 'too-large' | 'echo' | 'loop' | 'no-rule'

export interface BridgeStatus {
  readonly name: string
  readonly url: string
  readonly protocolVersion: number
  readonly clientId: string
  readonly state: UpstreamState
  readonly connected: boolean
  /** ISO time of the last state change (connected / disconnected since). */
  readonly since: string
  readonly inflight: number
  readonly window: number
  readonly backlog: { readonly depth: number; readonly bytes: number; readonly oldestAgeMs: number | null }
  readonly rates: { readonly sentPerSec: number; readonly ackedPerSec: number; readonly receivedPerSec: number }
  readonly totals: {
    readonly captured: number
    readonly sent: number
    readonly acked: number
    readonly resent: number
    readonly received: number
    readonly attempts: number
    readonly connects: number
    readonly disconnects: number
  }
  /** Bridge drops (never stored) plus the buffer's drops of this upstream's rules, by reason. */
  readonly drops: Readonly<Record<string, number>>
  /** The same drops per rule id (bridge drops that belong to a rule, and the buffer's). */
  readonly dropsByRule: Readonly<Record<string, Readonly<Record<string, number>>>>
  readonly lastError: ConnectionStats['lastError']
  /** The upstream agent, if it is an edge-agent. */
  readonly peer: { readonly id: string; readonly site: string; readonly level: number } | null
  /** Set while forwarding is paused because it would loop. */
  readonly loop: {
    readonly code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED'
    readonly peerSite: string
    readonly since: string
  } | null
  readonly rules: number
}

/** The bridge's own drops (messages it never stored or gave up), by reason and by rule. */
export class DropCounts {
  readonly #drops = new Map<BridgeDropReason, number>()
  /** rule id → bridge drops of that rule (the ones a rule is known for). */
  readonly #byRule = new Map<string, Map<BridgeDropReason, number>>()

  add(reason: BridgeDropReason, rule?: string): void {
    this.#drops.set(reason, (this.#drops.get(reason) ?? 0) + 1)
    if (rule === undefined) return
    const byReason = this.#byRule.get(rule) ?? new Map<BridgeDropReason, number>()
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1)
    this.#byRule.set(rule, byReason)
  }

  /** These drops plus the buffer's drops of `ruleIds` (the store's `drops.byRule`). */
  merged(
    storeByRule: ReturnType<MessageStore['stats']>['drops']['byRule'],
    ruleIds: ReadonlySet<string>,
  ): Pick<BridgeStatus, 'drops' | 'dropsByRule'> {
    const drops: Record<string, number> = Object.fromEntries(this.#drops)
    const dropsByRule: Record<string, Record<string, number>> = {}
    for (const [rule, byReason] of this.#byRule) dropsByRule[rule] = Object.fromEntries(byReason)
    for (const [rule, byReason] of Object.entries(storeByRule)) {
      if (!ruleIds.has(rule)) continue
      const r = (dropsByRule[rule] ??= {})
      for (const [reason, n] of Object.entries(byReason)) {
        // A refusal is counted by the bridge (reason and rule) and by the store: once here.
        if (reason === 'upstream-rejected') continue
        drops[reason] = (drops[reason] ?? 0) + (n ?? 0)
        r[reason] = (r[reason] ?? 0) + (n ?? 0)
      }
    }
    return { drops, dropsByRule }
  }
}
