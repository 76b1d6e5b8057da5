// Bridge: forwards selected topics between the local broker and one upstream
// broker (the next Purdue level up), through the durable buffer.
//
// Message states, outward (local → upstream), thin-edge style:
//   1. captured   capture() matched an `out` rule; the device's PUBACK waits.
//   2. stored     store.append() committed the row → the device gets its PUBACK.
//   3. in flight  takeBatch() handed the row out; PUBLISH written upstream.
//   4. acked      upstream PUBACK / PUBCOMP → store.ack() deletes the row.
// A row leaves the store only at 4 (or as a counted drop), so the chain of
// hops is at-least-once end to end; a link reset resends at most the
// in-flight window (the session resends its in-flight messages first, in
// order, with their packet ids), and an agent restart resends what was in
// flight (the store forgets in-flight state on restart).
//
// Inward (upstream → local): messages on `in` rules' subscriptions are
// remapped and published into the local broker; the upstream's PUBACK waits
// for that. They never pass the capture hook (the local broker calls it for
// device PUBLISH packets only), so nothing that came from an upstream is
// ever sent upward again: no loop through one agent.
//
// Parts: drain.ts sends rows from the buffer and writes the acks back;
// loop-detector.ts reads the upstream agent's beacon; upstream-connection.ts
// keeps the MQTT session (mqtt-session.ts) connected. This class wires them,
// captures, delivers inbound messages and reports status.
//
// Loops between agents (A → B → A, any cycle): see beacon.ts. On MQTT 5
// upstreams, subscriptions carry No Local and messages carry the
// `edge-agent-via` user property; on MQTT 3.1.1, `both` rules use the echo
// guard and the CONNECT carries the bridge bit (Mosquitto's try_private).
//
// Order: rows leave the store by priority, FIFO within a priority, and
// always in id order within one topic (store invariants 3, 4); one
// connection keeps that order upstream.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { MessageStore } from '../buffer/index.js'
import { BEACON_TOPIC, type AgentBeacon } from './beacon.js'
import { UpstreamControl, type ControlChannel } from './control-channel.js'
import { Drain, USER_PROP_VIA } from './drain.js'
import { EchoGuard } from './echo-guard.js'
import { BridgeError } from './errors.js'
import { LoopDetector } from './loop-detector.js'
import type { ConnectInfo, InboundMessage, OutboundMessage, ProtocolVersion } from './mqtt-session.js'
import { RateWindow, TokenBucket, TopicRateLimiter } from './rate.js'
import { parseRuleSet, type BridgeRule, type BridgeRuleInput } from './rule.js'
import type { TlsMaterial } from './transport.js'
import { UpstreamConnection, redactUrl, type ConnectionStats, type UpstreamState } from './upstream-connection.js'

/**
 * One upstream as configured: the agent's config slice (upstreams[]),
 * validated and with the schema's defaults applied. The schema
 * (src/agent/config/schema.ts) is the only place defaults are written down.
 */
export interface UpstreamOptions {
  readonly name: string
  readonly url: string
  /** 5 (MQTT 5) or 4 (MQTT 3.1.1). */
  readonly protocolVersion: number
  /** '' = `edge-agent.<site>.<name>`. */
  readonly clientId: string
  /** '' = none, or the user in the URL. */
  readonly username: string
  /** '' = none, or the password in the URL. */
  readonly passwordFile: string
  /** '' = the system roots. */
  readonly caFile: string
  /** '' = no client certificate (unless tlsMaterial gives one). */
  readonly certFile: string
  readonly keyFile: string
  /** '' = the URL's host. */
  readonly tlsServerName: string
  readonly keepaliveSec: number
  /** false resumes the session, so downward subscriptions survive reconnects. */
  readonly cleanStart: boolean
  /** MQTT 5 session expiry, seconds. */
  readonly sessionExpirySec: number
  readonly connectTimeoutMs: number
  readonly reconnect: {
    readonly minMs: number
    readonly maxMs: number
    readonly resetAfterMs: number
    readonly probeIntervalMs: number
  }
  /** In-flight window cap; the upstream's Receive Maximum may lower it. */
  readonly inflight: number
  /** Messages per second sent upstream at most (all rules together); 0 = no limit. */
  readonly maxRatePerSec: number
  /** MQTT 3.1.1: set the bridge bit in CONNECT. */
  readonly bridgeFlag: boolean
  /** Read the upstream agent's beacon and refuse to forward in a loop. */
  readonly loopDetection: boolean
  readonly status: {
    readonly enabled: boolean
    /** Placeholders {site}, {upstream}. */
    readonly topic: string
  }
  readonly rules: readonly BridgeRuleInput[]
}

/** A message the bridge asks the local broker to deliver (inbound). */
export interface LocalMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
}

/** A device's PUBLISH as the local broker's capture hook sees it. */
export interface CapturedPublish {
  readonly topic: string
  readonly payload: Buffer | string
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
}

export interface AgentInfo {
  /** Random per process (beacon.ts). */
  readonly id: string
  readonly site: string
  readonly level: number
  readonly version: string
}

export interface BridgeOptions {
  readonly upstream: UpstreamOptions
  readonly agent: AgentInfo
  readonly store: MessageStore
  /** Delivers an inbound message to the local broker; resolves once it has taken it. */
  readonly publishLocal: (msg: LocalMessage) => Promise<void>
  readonly logger: Logger
  /** The gateway's own TLS client certificate (src/certs), preferred over certFile/keyFile. */
  readonly tlsMaterial?: () => TlsMaterial | undefined
  /** On stop, how long in-flight messages may take to be acknowledged, ms. Default 3000. */
  readonly stopGraceMs?: number
  /** After SUBACK, how long to wait for the upstream's beacon before forwarding, ms. Default 300. */
  readonly identityWaitMs?: number
  readonly now?: () => number
  readonly random?: () => number
}

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

export interface BridgeEvents {
  connected: [info: ConnectInfo]
  disconnected: [err: Error | undefined]
  /** The upstream agent's beacon changed (undefined: none / not an edge-agent). */
  peer: [beacon: AgentBeacon | undefined]
  /** Forwarding paused (true) or resumed (false) because of a loop. */
  loop: [looping: boolean]
}

export class Bridge extends EventEmitter<BridgeEvents> {
  readonly name: string
  readonly upstream: string
  readonly rules: readonly BridgeRule[]
  readonly #o: BridgeOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #store: MessageStore
  readonly #outRules: BridgeRule[]
  readonly #inRules: BridgeRule[]
  readonly #conn: UpstreamConnection
  readonly #drain: Drain
  readonly #loop: LoopDetector
  readonly #version: ProtocolVersion
  readonly #clientId: string
  readonly #url: URL
  readonly #statusTopic: string | undefined
  readonly #echo: EchoGuard
  readonly #limiters = new Map<string, TopicRateLimiter>()
  readonly #rates: RateWindow
  readonly #drops = new Map<BridgeDropReason, number>()
  /** rule id → bridge drops of that rule (the ones a rule is known for). */
  readonly #dropsByRule = new Map<string, Map<BridgeDropReason, number>>()
  readonly #counts = { captured: 0, resent: 0, received: 0 }

  #started = false
  #stopping: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
  #subscribedOnce = false
  readonly #control: UpstreamControl
  readonly #onAppended = (queues: readonly string[]): void => {
    if (queues.includes(this.upstream)) this.#drain.kick()
  }

  constructor(options: BridgeOptions) {
    super()
    const u = options.upstream
    this.#o = options
    this.upstream = u.name
    this.name = `bridge:${u.name}`
    this.#now = options.now ?? Date.now
    this.#log = options.logger.child({ component: 'bridge', upstream: u.name })
    this.#store = options.store
    this.rules = parseRules(u)
    this.#outRules = this.rules.filter((r) => r.forwardsOut)
    this.#inRules = this.rules.filter((r) => r.forwardsIn)
    for (const r of this.#outRules) {
      if (r.maxRatePerTopic > 0) this.#limiters.set(r.id, new TopicRateLimiter(r.maxRatePerTopic, this.#now))
    }
    this.#version = u.protocolVersion === 4 ? 4 : 5
    this.#url = new URL(u.url)
    const urlUser = this.#url.username === '' ? undefined : decodeURIComponent(this.#url.username)
    const urlPassword = this.#url.password === '' ? undefined : Buffer.from(decodeURIComponent(this.#url.password))
    this.#clientId = u.clientId !== '' ? u.clientId : `edge-agent.${options.agent.site}.${u.name}`
    this.#statusTopic = u.status.enabled
      ? u.status.topic.replace(/\{site\}/g, options.agent.site).replace(/\{upstream\}/g, u.name)
      : undefined
    this.#echo = new EchoGuard({ windowMs: 30_000, maxEntries: 10_000, now: this.#now })
    const will =
      this.#statusTopic === undefined
        ? undefined
        : {
            topic: this.#statusTopic,
            payload: this.#statusPayload('offline', 'connection lost', false),
            qos: 1 as const,
            retain: true,
          }
    this.#conn = new UpstreamConnection({
      name: u.name,
      url: this.#url,
      protocolVersion: this.#version,
      clientId: this.#clientId,
      username: u.username !== '' ? u.username : urlUser,
      passwordFile: nonEmpty(u.passwordFile),
      password: urlPassword,
      tls: {
        caFile: nonEmpty(u.caFile),
        certFile: nonEmpty(u.certFile),
        keyFile: nonEmpty(u.keyFile),
        serverName: nonEmpty(u.tlsServerName),
      },
      tlsMaterial: options.tlsMaterial,
      keepaliveSec: u.keepaliveSec,
      cleanStart: u.cleanStart,
      sessionExpirySec: u.sessionExpirySec,
      connectTimeoutMs: u.connectTimeoutMs,
      maxInflight: u.inflight,
      bridgeFlag: u.bridgeFlag,
      will,
      reconnect: u.reconnect,
      onMessage: (msg) => this.#onInbound(msg),
      logger: this.#log,
      now: this.#now,
      ...(options.random === undefined ? {} : { random: options.random }),
    })
    this.#control = new UpstreamControl(this.#conn)
    this.#loop = new LoopDetector({
      enabled: u.loopDetection,
      agentId: options.agent.id,
      conn: this.#conn,
      waitMs: options.identityWaitMs ?? 300,
      logger: this.#log,
      now: this.#now,
      onDecided: () => this.#drain.kick(),
      onPeer: (beacon) => this.emit('peer', beacon),
      onLoop: (looping) => this.emit('loop', looping),
    })
    const maxRate = u.maxRatePerSec
    this.#drain = new Drain({
      queue: u.name,
      store: options.store,
      conn: this.#conn,
      version: this.#version,
      agent: options.agent,
      mayForward: () => this.#loop.allowsForwarding,
      bucket: maxRate > 0 ? new TokenBucket(maxRate, Math.max(1, Math.ceil(maxRate / 10)), this.#now) : undefined,
      echoRules: new Set(this.rules.filter((r) => r.direction === 'both').map((r) => r.id)),
      echo: this.#echo,
      drop: (reason, rule) => this.#drop(reason, rule),
      logger: this.#log,
      now: this.#now,
    })
    this.#rates = new RateWindow(
      () => ({ sent: this.#drain.sent, acked: this.#drain.acked, received: this.#counts.received }),
      this.#now,
    )
  }

  /** The upstream session for the agent's own request/reply exchanges (control-channel.ts). */
  get control(): ControlChannel {
    return this.#control
  }

  /** The upstream agent's beacon, if it is an edge-agent that published one. */
  get upstreamBeacon(): AgentBeacon | undefined {
    return this.#loop.peer
  }

  get connected(): boolean {
    return this.#conn.state === 'connected'
  }

  /** Reconnects at once (e.g. with a renewed client certificate); buffered and in-flight messages are kept. */
  reconnect(): Promise<void> {
    return this.#conn.reconnect()
  }

  /** hold(reason) closes the upstream connection and stops connecting until hold(null); capture continues. */
  hold(reason: string | null): Promise<void> {
    return this.#conn.hold(reason)
  }

  /** Why the connection is held, or null. */
  get held(): string | null {
    return this.#conn.held
  }

  /** Starts connecting; resolves at once (an unreachable upstream is a state, reported in status). */
  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#started) return
    this.#started = true
    this.#store.on('appended', this.#onAppended)
    this.#conn.on('connected', (info) => this.#onConnected(info))
    this.#conn.on('disconnected', (err) => {
      this.#drain.disconnected()
      this.emit('disconnected', err)
    })
    this.#conn.on('drain', () => this.#drain.kick())
    this.#timer = setInterval(() => this.#tick(), 1_000)
    this.#timer.unref()
    this.#rates.sample()
    this.#conn.start()
    this.#log.info(
      {
        url: redactUrl(this.#url),
        protocolVersion: this.#version,
        clientId: this.#clientId,
        rules: this.rules.map((r) => r.toJSON()),
      },
      'bridge started',
    )
  }

  /**
   * Graceful, idempotent: stops taking rows, gives in-flight messages up to
   * stopGraceMs to be acknowledged, publishes "offline", disconnects. Rows
   * still in flight stay in the buffer and are sent again after a restart.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    this.#drain.stop()
    this.#store.off('appended', this.#onAppended)
    clearInterval(this.#timer)
    this.#loop.stop()
    if (!this.#started) return
    const session = this.#conn.session
    const graceMs = this.#o.stopGraceMs ?? 3_000
    if (session.connected && session.inflight > 0) await this.#drain.waitInflightEmpty(graceMs)
    if (session.connected && this.#statusTopic !== undefined) {
      await this.#publishDirect(
        { topic: this.#statusTopic, payload: this.#statusPayload('offline', 'stopped'), qos: 1, retain: true },
        Math.min(1_000, graceMs),
      )
    }
    await this.#conn.stop()
    // What is still unacknowledged goes back to the buffer for the next start.
    const released = await this.#drain.close()
    this.#log.info({ inflightReleased: released, sent: this.#drain.sent, acked: this.#drain.acked }, 'bridge stopped')
  }

  // ---------------------------------------------------------------------------
  // Capture (local → buffer), called by the local broker for every device PUBLISH.

  /**
   * Stores the message for every matching `out` rule of this upstream.
   * Returns undefined when no rule matches (the broker acknowledges at once),
   * else a promise the device's PUBACK waits for (its value means nothing);
   * it rejects when the buffer refused the message (the broker then withholds
   * the ack).
   */
  capture(packet: CapturedPublish): Promise<unknown> | undefined {
    let pending: Promise<unknown> | undefined
    for (const rule of this.#outRules) {
      const remote = rule.mapOutbound(packet.topic)
      if (remote === undefined) continue
      const qos = rule.effectiveQos(packet.qos)
      if (qos === 0 && !rule.bufferQos0 && !this.connected) {
        this.#drop('offline-qos0', rule.id)
        continue
      }
      const limiter = this.#limiters.get(rule.id)
      if (limiter !== undefined && !limiter.allow(packet.topic)) {
        this.#drop('rate-limited', rule.id)
        continue
      }
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
      const now = this.#now()
      this.#counts.captured++
      const p = this.#store.append({
        queue: this.upstream,
        topic: remote,
        payload,
        qos,
        retain: rule.retainAsPublished ? packet.retain : false,
        priority: rule.priority,
        rule: rule.id,
        conflation: rule.conflate,
        whenFull: rule.whenFull === 'auto' ? (qos === 0 ? 'drop-oldest' : 'refuse') : rule.whenFull,
        expiresAt: rule.ttlSec > 0 ? now + rule.ttlSec * 1000 : null,
      })
      pending = pending === undefined ? p : Promise.all([pending, p])
    }
    return pending
  }

  // ---------------------------------------------------------------------------
  // Status messages (birth, last will, offline on stop)

  /** Publishes outside the buffer (status messages); resolves on ack or after `ms`. */
  #publishDirect(msg: OutboundMessage, ms: number): Promise<void> {
    const session = this.#conn.session
    if (!session.connected) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      try {
        session.publish(msg, () => {
          clearTimeout(timer)
          resolve()
        })
      } catch {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  /** The status payload; `at` is omitted for the Will, which is composed at start and sent by the upstream later. */
  #statusPayload(state: 'online' | 'offline', reason?: string, withTime = true): Buffer {
    const a = this.#o.agent
    return Buffer.from(
      JSON.stringify({
        state,
        site: a.site,
        level: a.level,
        upstream: this.upstream,
        agent: a.id,
        version: a.version,
        ...(withTime ? { at: new Date(this.#now()).toISOString() } : {}),
        ...(reason === undefined ? {} : { reason }),
      }),
    )
  }

  // ---------------------------------------------------------------------------
  // Connection events, inbound messages

  #onConnected(info: ConnectInfo): void {
    this.#counts.resent += info.resent
    const session = this.#conn.session
    // Birth first, so that the status upstream precedes the data.
    if (this.#statusTopic !== undefined) {
      const birth = { topic: this.#statusTopic, payload: this.#statusPayload('online'), qos: 1 as const, retain: true }
      void this.#publishDirect(birth, 5_000)
    }
    // A resumed session still has our subscriptions; subscribe again only
    // once per process (the rules may have changed) or when it was lost: a
    // repeated SUBSCRIBE makes the upstream resend retained messages.
    if (!info.sessionPresent || !this.#subscribedOnce) {
      const subs = this.#inRules.map((r) => ({
        topic: r.remoteFilter,
        qos: r.qos,
        nl: true,
        rap: true,
        rh: r.retainHandling,
      }))
      if (subs.length > 0) {
        session.subscribe(subs).then(
          (granted) => {
            this.#subscribedOnce = true
            granted.forEach((g, i) => {
              if (g >= 0x80)
                this.#log.warn({ filter: subs[i]?.topic, reasonCode: g }, 'upstream refused a subscription')
            })
          },
          (err: unknown) => this.#log.debug({ err }, 'subscribe interrupted by disconnect'),
        )
      } else this.#subscribedOnce = true
    }
    this.#loop.connected()
    this.emit('connected', info)
    this.#drain.kick()
  }

  async #onInbound(msg: InboundMessage): Promise<void> {
    if (msg.topic === BEACON_TOPIC) {
      this.#loop.received(msg.payload)
      return
    }
    if (this.#control.deliver(msg.topic, msg.payload)) return
    const self = this.#o.agent.id
    const via = msg.userProperties?.[USER_PROP_VIA]
    if (via !== undefined && (via === self || (Array.isArray(via) && via.includes(self)))) {
      this.#drop('loop')
      return
    }
    for (const rule of this.#inRules) {
      const local = rule.mapInbound(msg.topic)
      if (local === undefined) continue
      if (rule.forwardsOut && this.#version === 4 && this.#echo.isEcho(msg.topic, msg.payload)) {
        this.#drop('echo')
        return
      }
      await this.#o.publishLocal({
        topic: local,
        payload: msg.payload,
        qos: rule.effectiveQos(msg.qos),
        retain: rule.retainAsPublished ? msg.retain : false,
      })
      this.#counts.received++
      this.#log.debug({ topic: msg.topic, local, qos: msg.qos }, 'delivered from upstream')
      return
    }
    this.#drop('no-rule')
  }

  // ---------------------------------------------------------------------------
  // Status

  #drop(reason: BridgeDropReason, rule?: string): void {
    this.#drops.set(reason, (this.#drops.get(reason) ?? 0) + 1)
    if (rule === undefined) return
    const byReason = this.#dropsByRule.get(rule) ?? new Map<BridgeDropReason, number>()
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1)
    this.#dropsByRule.set(rule, byReason)
  }

  #tick(): void {
    this.#rates.sample()
    this.#echo.sweep()
    for (const l of this.#limiters.values()) l.sweep()
  }

  status(): BridgeStatus {
    const c = this.#conn.stats()
    const s = this.#store.stats()
    const q = s.queues.find((x) => x.queue === this.upstream)
    const drops: Record<string, number> = Object.fromEntries(this.#drops)
    const ruleIds = new Set(this.#outRules.map((r) => r.id))
    const dropsByRule: Record<string, Record<string, number>> = {}
    for (const [rule, byReason] of this.#dropsByRule) dropsByRule[rule] = Object.fromEntries(byReason)
    for (const [rule, byReason] of Object.entries(s.drops.byRule)) {
      if (!ruleIds.has(rule)) continue
      const r = (dropsByRule[rule] ??= {})
      for (const [reason, n] of Object.entries(byReason)) {
        // A refusal is counted by the bridge (reason and rule) and by the store: once here.
        if (reason === 'upstream-rejected') continue
        drops[reason] = (drops[reason] ?? 0) + (n ?? 0)
        r[reason] = (r[reason] ?? 0) + (n ?? 0)
      }
    }
    const rates = this.#rates.rates()
    const peer = this.#loop.peer
    const loopSince = this.#loop.loopSince
    const counts = this.#counts
    return {
      name: this.upstream,
      url: redactUrl(this.#url),
      protocolVersion: this.#version,
      clientId: this.#clientId,
      state: c.state,
      connected: c.connected,
      since: new Date(c.since).toISOString(),
      inflight: this.#conn.session.inflight,
      window: c.window,
      backlog: { depth: q?.depth ?? 0, bytes: q?.bytes ?? 0, oldestAgeMs: q?.oldestAgeMs ?? null },
      rates: {
        sentPerSec: rates['sent'] ?? 0,
        ackedPerSec: rates['acked'] ?? 0,
        receivedPerSec: rates['received'] ?? 0,
      },
      totals: {
        captured: counts.captured,
        sent: this.#drain.sent,
        acked: this.#drain.acked,
        resent: counts.resent,
        received: counts.received,
        attempts: c.attempts,
        connects: c.connects,
        disconnects: c.disconnects,
      },
      drops,
      dropsByRule,
      lastError: c.lastError,
      peer: peer === undefined ? null : { id: peer.id, site: peer.site, level: peer.level },
      loop:
        loopSince === null
          ? null
          : {
              code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED',
              peerSite: peer?.site ?? '',
              since: new Date(loopSince).toISOString(),
            },
      rules: this.rules.length,
    }
  }
}

/** The upstream's rules, parsed; every problem at once in one error naming the keys. */
function parseRules(u: UpstreamOptions): BridgeRule[] {
  const { rules, problems } = parseRuleSet(u.rules)
  if (problems.length === 0) return rules
  const first = problems[0] as BridgeError
  const where = (path: readonly (string | number)[]): string =>
    path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('')
  throw new BridgeError(
    'EDGE_ERR_BRIDGE_RULE_INVALID',
    `upstream ${u.name}: ${problems.map((p) => `rules${where(p.path)}: ${p.message}`).join('; ')}`,
    { path: ['rules', ...first.path] },
  )
}

function nonEmpty(s: string): string | undefined {
  return s === '' ? undefined : s
}
