// Bridge rules: parsed once into valid objects, or refused with a typed error
// naming the key (thin-edge's BridgeRule::try_new). The forwarding code never
// re-validates.
//
// Semantics are Mosquitto's `topic pattern dir qos local-prefix remote-prefix`:
//   local topic  = localPrefix  + t
//   remote topic = remotePrefix + t      for every t matching `topic`
// so `{ topic: 'devices/+/telemetry', remotePrefix: 'site-a/line-3/' }` sends
// local 'devices/7/telemetry' upstream as 'site-a/line-3/devices/7/telemetry'.
//
// Rule-set invariants checked by parseRuleSet (per upstream):
// - no two rules forward the same local message upward (overlapping `out`
//   filters would store and send it twice);
// - no two rules deliver the same upstream message downward;
// - no `in` filter overlaps another rule's `out` namespace on the upstream
//   (MQTT 3.1.1 has no No Local: the upstream would echo our own messages
//   back down). A single `both` rule is the explicit way to bridge one
//   namespace in both directions; its echoes are suppressed by the bridge
//   (MQTT 5 No Local, or the echo guard on 3.1.1).
// Messages received from an upstream are never captured again by an `out`
// rule (they enter the local broker without passing the capture hook), so
// remaps cannot form a loop inside one agent.
//
// Defaults: a rule from the config reaches parse with the schema's defaults
// applied (src/agent/config/schema.ts, BridgeRuleSchema). parse still fills
// missing keys itself, because rules built in code (tests, bench/, the
// in-process bridge) reach it without the schema, and this component may not
// import src/agent (components never import the agent; the schema imports
// nothing of theirs either, so there is no shared place both can read). The
// fallbacks below are therefore a checked copy, not a second source:
// test/unit/bridge/rule-defaults.test.ts fails when one differs from the schema.
import { BridgeError } from './errors.js'
import { TopicFilter, filtersOverlap, topicFilterProblem } from './topic.js'

export type Direction = 'out' | 'in' | 'both'
export type Qos = 0 | 1 | 2
/**
 * What happens to a message that does not fit in the buffer; 'auto' = 'refuse' for QoS ≥ 1, 'drop-oldest' for QoS 0.
 */
export type WhenFull = 'auto' | 'refuse' | 'drop-oldest' | 'drop-lowest-priority'

/** A rule as it comes from the config (defaults may be missing when built by hand). */
export interface BridgeRuleInput {
  readonly topic: string
  readonly direction: Direction
  readonly qos?: number
  readonly localPrefix?: string
  readonly remotePrefix?: string
  /** Optional id used in logs and drop counters; default `<index>:<topic>`. */
  readonly name?: string
  /** Drain priority of this rule's messages; higher first. Default 0. */
  readonly priority?: number
  readonly whenFull?: WhenFull
  /** 'latest-only': only the newest unsent message per topic is kept. Default 'none'. */
  readonly conflate?: 'none' | 'latest-only'
  /** Message lifetime in the buffer, seconds; 0 = no expiry. Default 604800 (7 days). */
  readonly ttlSec?: number
  /** At most this many messages per second per topic are forwarded (token bucket, burst = rate); 0 = no limit. */
  readonly maxRatePerTopic?: number
  /** Keep the retain flag when forwarding (false: clear it). Default true. */
  readonly retainAsPublished?: boolean
  /** MQTT 5 Retain Handling of the upstream subscription (in/both). Default 0. */
  readonly retainHandling?: number
  /** Forward QoS 0 messages while the upstream is disconnected (stored). Default false. */
  readonly bufferQos0?: boolean
}

export const DEFAULT_TTL_SEC = 604_800

export class BridgeRule {
  readonly id: string
  readonly index: number
  readonly topic: string
  readonly direction: Direction
  readonly qos: Qos
  readonly localPrefix: string
  readonly remotePrefix: string
  readonly priority: number
  readonly whenFull: WhenFull
  readonly conflate: 'none' | 'latest-only'
  readonly ttlSec: number
  readonly maxRatePerTopic: number
  readonly retainAsPublished: boolean
  readonly retainHandling: 0 | 1 | 2
  readonly bufferQos0: boolean
  /** localPrefix + topic */
  readonly localFilter: string
  /** remotePrefix + topic */
  readonly remoteFilter: string
  readonly #local: TopicFilter
  readonly #remote: TopicFilter

  private constructor(index: number, r: Required<Omit<BridgeRuleInput, 'name'>> & { id: string }) {
    this.index = index
    this.id = r.id
    this.topic = r.topic
    this.direction = r.direction
    this.qos = r.qos as Qos
    this.localPrefix = r.localPrefix
    this.remotePrefix = r.remotePrefix
    this.priority = r.priority
    this.whenFull = r.whenFull
    this.conflate = r.conflate
    this.ttlSec = r.ttlSec
    this.maxRatePerTopic = r.maxRatePerTopic
    this.retainAsPublished = r.retainAsPublished
    this.retainHandling = r.retainHandling as 0 | 1 | 2
    this.bufferQos0 = r.bufferQos0
    this.localFilter = r.localPrefix + r.topic
    this.remoteFilter = r.remotePrefix + r.topic
    this.#local = new TopicFilter(this.localFilter)
    this.#remote = new TopicFilter(this.remoteFilter)
    Object.freeze(this)
  }

  /** Validate one rule; throws BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID') with `path` = [key]. */
  static parse(raw: BridgeRuleInput, index = 0): BridgeRule {
    const bad = (key: string, message: string): never => {
      throw new BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID', message, { path: [key] })
    }
    if (typeof raw !== 'object' || raw === null)
      throw new BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID', 'must be an object')
    if (typeof raw.topic !== 'string') bad('topic', 'must be a string')
    const filterProblem = topicFilterProblem(raw.topic)
    if (filterProblem !== undefined) bad('topic', filterProblem)
    if (raw.direction !== 'out' && raw.direction !== 'in' && raw.direction !== 'both')
      bad('direction', "must be 'out', 'in' or 'both'")
    const qos = raw.qos ?? 1
    if (qos !== 0 && qos !== 1 && qos !== 2) bad('qos', 'must be 0, 1 or 2')
    const localPrefix = raw.localPrefix ?? ''
    const remotePrefix = raw.remotePrefix ?? ''
    for (const [key, p] of [
      ['localPrefix', localPrefix],
      ['remotePrefix', remotePrefix],
    ] as const) {
      if (typeof p !== 'string') bad(key, 'must be a string')
      if (/[+#\u0000]/.test(p)) bad(key, 'must not contain +, # or NUL')
      if (p !== '' && !p.endsWith('/'))
        bad(
          key,
          `must be empty or end with '/' (got ${JSON.stringify(p)}), so that a prefix cannot run into the topic's first level`,
        )
      if (p.startsWith('$')) bad(key, "must not start with '$' (reserved for broker topics [MQTT-4.7.2-1])")
    }
    if (raw.topic.startsWith('$')) bad('topic', "must not start with '$' (reserved for broker topics [MQTT-4.7.2-1])")
    const priority = raw.priority ?? 0
    if (!Number.isSafeInteger(priority) || Math.abs(priority) > 1_000_000)
      bad('priority', 'must be an integer within ±1000000')
    const whenFull = raw.whenFull ?? 'auto'
    if (!['auto', 'refuse', 'drop-oldest', 'drop-lowest-priority'].includes(whenFull))
      bad('whenFull', "must be 'auto', 'refuse', 'drop-oldest' or 'drop-lowest-priority'")
    const conflate = raw.conflate ?? 'none'
    if (conflate !== 'none' && conflate !== 'latest-only') bad('conflate', "must be 'none' or 'latest-only'")
    const ttlSec = raw.ttlSec ?? DEFAULT_TTL_SEC
    if (!Number.isSafeInteger(ttlSec) || ttlSec < 0 || ttlSec > 0xffffffff)
      bad('ttlSec', 'must be an integer between 0 and 4294967295')
    const maxRatePerTopic = raw.maxRatePerTopic ?? 0
    if (typeof maxRatePerTopic !== 'number' || !Number.isFinite(maxRatePerTopic) || maxRatePerTopic < 0)
      bad('maxRatePerTopic', 'must be a number ≥ 0')
    const retainHandling = raw.retainHandling ?? 0
    if (retainHandling !== 0 && retainHandling !== 1 && retainHandling !== 2) bad('retainHandling', 'must be 0, 1 or 2')
    const id = raw.name ?? `${index}:${raw.topic}`
    if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > 200)
      bad('name', 'must be a non-empty string of at most 200 bytes')
    const local = localPrefix + raw.topic
    const remote = remotePrefix + raw.topic
    for (const [key, f] of [
      ['localPrefix', local],
      ['remotePrefix', remote],
    ] as const) {
      const p = topicFilterProblem(f)
      if (p !== undefined) bad(key, `prefix + topic ${p}`)
    }
    return new BridgeRule(index, {
      id,
      topic: raw.topic,
      direction: raw.direction,
      qos,
      localPrefix,
      remotePrefix,
      priority,
      whenFull,
      conflate,
      ttlSec,
      maxRatePerTopic,
      retainAsPublished: raw.retainAsPublished ?? true,
      retainHandling,
      bufferQos0: raw.bufferQos0 ?? false,
    })
  }

  get forwardsOut(): boolean {
    return this.direction !== 'in'
  }

  get forwardsIn(): boolean {
    return this.direction !== 'out'
  }

  /** The upstream topic for a local topic, or undefined if this rule does not send it up. */
  mapOutbound(localTopic: string): string | undefined {
    if (!this.forwardsOut || !this.#local.matches(localTopic)) return undefined
    return this.remotePrefix + localTopic.slice(this.localPrefix.length)
  }

  /** The local topic for an upstream topic, or undefined if this rule does not bring it down. */
  mapInbound(remoteTopic: string): string | undefined {
    if (!this.forwardsIn || !this.#remote.matches(remoteTopic)) return undefined
    return this.localPrefix + remoteTopic.slice(this.remotePrefix.length)
  }

  /** Whether an upstream topic lies in this rule's outbound namespace (for echo detection). */
  inRemoteNamespace(remoteTopic: string): boolean {
    return this.#remote.matches(remoteTopic)
  }

  /** The QoS a message is forwarded with: the lower of the message's and the rule's [Mosquitto]. */
  effectiveQos(messageQos: number): Qos {
    return Math.min(messageQos, this.qos) as Qos
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      direction: this.direction,
      local: this.localFilter,
      remote: this.remoteFilter,
      qos: this.qos,
      priority: this.priority,
    }
  }
}

/** Parse every rule of one upstream and check the set; all problems at once. */
export function parseRuleSet(raws: readonly BridgeRuleInput[]): { rules: BridgeRule[]; problems: BridgeError[] } {
  const rules: BridgeRule[] = []
  const problems: BridgeError[] = []
  raws.forEach((raw, i) => {
    try {
      rules.push(BridgeRule.parse(raw, i))
    } catch (err) {
      if (err instanceof BridgeError) {
        problems.push(new BridgeError(err.code, err.message, { path: [i, ...err.path] }))
      } else throw err
    }
  })
  const ids = new Map<string, number>()
  for (const r of rules) {
    const first = ids.get(r.id)
    if (first !== undefined)
      problems.push(setProblem(r.index, 'name', `duplicate rule name, also used by rules[${first}]`))
    else ids.set(r.id, r.index)
  }
  for (let i = 0; i < rules.length; i++) {
    for (let j = i + 1; j < rules.length; j++) {
      const a = rules[i] as BridgeRule
      const b = rules[j] as BridgeRule
      if (a.forwardsOut && b.forwardsOut && filtersOverlap(a.localFilter, b.localFilter)) {
        problems.push(
          setProblem(
            b.index,
            'topic',
            `overlaps rules[${a.index}] going out (${b.localFilter} and ${a.localFilter} match the same local topics): a message would be forwarded twice`,
          ),
        )
      }
      if (a.forwardsIn && b.forwardsIn && filtersOverlap(a.remoteFilter, b.remoteFilter)) {
        problems.push(
          setProblem(
            b.index,
            'topic',
            `overlaps rules[${a.index}] coming in (${b.remoteFilter} and ${a.remoteFilter} match the same upstream topics): a message would be delivered twice`,
          ),
        )
      }
      // An `in` filter over another rule's `out` namespace receives our own messages back.
      for (const [x, y] of [
        [a, b],
        [b, a],
      ] as const) {
        if (x.forwardsIn && y.forwardsOut && filtersOverlap(x.remoteFilter, y.remoteFilter)) {
          problems.push(
            setProblem(
              Math.max(x.index, y.index),
              'topic',
              `rules[${x.index}] (in, ${x.remoteFilter}) would receive what rules[${y.index}] (out, ${y.remoteFilter}) sends upstream: a loop; use one rule with direction 'both' to bridge a namespace both ways`,
            ),
          )
        }
      }
    }
  }
  return { rules, problems }
}

function setProblem(index: number, key: string, message: string): BridgeError {
  return new BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID', message, { path: [index, key] })
}
