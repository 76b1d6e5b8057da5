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
// Loops between agents (A → B → A, any cycle): see identity.ts. On MQTT 5
// upstreams, subscriptions carry No Local and messages carry the
// `edge-agent-via` user property; on MQTT 3.1.1, `both` rules use the echo
// guard and the CONNECT carries the bridge bit (Mosquitto's try_private).
//
// Order: rows leave the store by priority, FIFO within a priority, and
// always in id order within one topic (store invariants 3, 4); one
// connection keeps that order upstream.
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { MessageStore, StoredMessage } from '../buffer/index.js'
import { EchoGuard } from './echo-guard.js'
import { BridgeError } from './errors.js'
import { IDENTITY_TOPIC, decodeIdentity, formsLoop, sameIdentity, type AgentIdentity } from './identity.js'
import { isTransientReason, type ConnectInfo, type InboundMessage, type MqttSession, type OutboundMessage, type ProtocolVersion } from './mqtt-session.js'
import { RateWindow, TokenBucket, TopicRateLimiter } from './rate.js'
import { parseRuleSet, type BridgeRule, type BridgeRuleInput } from './rule.js'
import type { TlsMaterial } from './transport.js'
import { UpstreamConnection, redactUrl, type ConnectionStats, type UpstreamState } from './upstream-connection.js'

/** One upstream as configured (the agent's config slice, defaults applied). */
export interface UpstreamOptions {
  readonly name: string
  readonly url: string
  /** 5 (default) or 4 (MQTT 3.1.1). */
  readonly protocolVersion?: number
  /** Default `edge-agent.<site>.<name>`. */
  readonly clientId?: string
  readonly username?: string
  readonly passwordFile?: string
  readonly caFile?: string
  readonly certFile?: string
  readonly keyFile?: string
  readonly tlsServerName?: string
  /** Default 30. */
  readonly keepaliveSec?: number
  /** Default false: resume the session so downward subscriptions survive reconnects. */
  readonly cleanStart?: boolean
  /** MQTT 5 session expiry, seconds. Default 604800 (7 days). */
  readonly sessionExpirySec?: number
  /** Default 10000. */
  readonly connectTimeoutMs?: number
  readonly reconnect?: {
    readonly minMs?: number
    readonly maxMs?: number
    readonly resetAfterMs?: number
    readonly probeIntervalMs?: number
  }
  /** In-flight window cap; the upstream's Receive Maximum may lower it. Default 100. */
  readonly inflight?: number
  /** Messages per second sent upstream at most (all rules together); 0 = no limit. Default 0. */
  readonly maxRatePerSec?: number
  /** MQTT 3.1.1: set the bridge bit in CONNECT. Default true. */
  readonly bridgeFlag?: boolean
  /** Subscribe to the upstream agent's identity and refuse to forward in a loop. Default true. */
  readonly loopDetection?: boolean
  readonly status?: {
    readonly enabled?: boolean
    /** Placeholders {site}, {upstream}. Default 'edge-agent/{site}/status'. */
    readonly topic?: string
  }
  readonly rules?: readonly BridgeRuleInput[]
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
  /** Random per process (identity.ts). */
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
  /** After SUBACK, how long to wait for the upstream's identity before forwarding, ms. Default 300. */
  readonly identityWaitMs?: number
  readonly now?: () => number
  readonly random?: () => number
}

export type BridgeDropReason =
  | 'offline-qos0'
  | 'rate-limited'
  | 'upstream-rejected'
  | 'too-large'
  | 'echo'
  | 'loop'
  | 'no-rule'

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
  readonly loop: { readonly code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED'; readonly peerSite: string; readonly since: string } | null
  readonly rules: number
}

/**
 * The upstream session as a small MQTT client for the agent's own
 * request/reply exchanges with the upstream (the certificate renewal of
 * certificate-renewer.ts). Its messages bypass the buffer and the rules, in
 * both directions; messages on its topics go to its listeners only.
 * Structurally an mqtt.js client for these four calls.
 */
export interface ControlChannel {
  /** Subscribes to one topic name (no wildcards) on the current connection. */
  subscribeAsync(topic: string, opts: { qos: 0 | 1 | 2 }): Promise<void>
  /** Resolves on PUBACK (QoS 1/2) or once written (QoS 0); rejects when not connected or refused. */
  publishAsync(topic: string, payload: string | Buffer, opts: { qos: 0 | 1 | 2 }): Promise<void>
  on(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
  off(event: 'message', listener: (topic: string, payload: Buffer) => void): unknown
}

export interface BridgeEvents {
  connected: [info: ConnectInfo]
  disconnected: [err: Error | undefined]
  /** The upstream agent's identity changed (undefined: none / not an edge-agent). */
  peer: [identity: AgentIdentity | undefined]
  /** Forwarding paused (true) or resumed (false) because of a loop. */
  loop: [looping: boolean]
}

const USER_PROP_VIA = 'edge-agent-via'
const USER_PROP_ID = 'edge-agent-id'
const MAX_TAKE = 500

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
  /** Ids of `both` rules: their messages are remembered by the echo guard (MQTT 3.1.1). */
  readonly #bothRules: ReadonlySet<string>
  readonly #conn: UpstreamConnection
  readonly #version: ProtocolVersion
  readonly #clientId: string
  readonly #url: URL
  readonly #statusTopic: string | undefined
  readonly #echo: EchoGuard
  readonly #limiters = new Map<string, TopicRateLimiter>()
  readonly #drainBucket: TokenBucket | undefined
  readonly #rates: RateWindow
  readonly #drops = new Map<BridgeDropReason, number>()
  /** rule id → bridge drops of that rule (the ones a rule is known for). */
  readonly #dropsByRule = new Map<string, Map<BridgeDropReason, number>>()
  readonly #counts = { captured: 0, sent: 0, acked: 0, resent: 0, received: 0 }

  #started = false
  #stopping: Promise<void> | undefined
  #stopRequested = false
  #timer: NodeJS.Timeout | undefined
  #retryTimer: NodeJS.Timeout | undefined
  #dirty = false
  #pumping = false
  /** Rows taken from the store and not yet sent, in order (#ahead[#aheadHead] is next). */
  readonly #ahead: StoredMessage[] = []
  #aheadHead = 0
  #acks: number[] = []
  #ackScheduled = false
  #ackFlush: Promise<void> = Promise.resolve()
  #subscribedOnce = false
  #peer: AgentIdentity | undefined
  #identityKnown: boolean
  #identityTimer: NodeJS.Timeout | undefined
  #identityMode: 'on' | 'off'
  #identityFailures = 0
  #loopSince: number | null = null
  #inflightWaiters: (() => void)[] = []
  readonly #controlTopics = new Set<string>()
  readonly #controlEvents = new EventEmitter<{ message: [topic: string, payload: Buffer] }>()
  /** See ControlChannel. */
  readonly control: ControlChannel = {
    subscribeAsync: (topic, opts) => this.#controlSubscribe(topic, opts.qos),
    publishAsync: (topic, payload, opts) => this.#controlPublish(topic, payload, opts.qos),
    on: (event, listener) => this.#controlEvents.on(event, listener),
    off: (event, listener) => this.#controlEvents.off(event, listener),
  }
  readonly #onAppended = (queues: readonly string[]): void => {
    if (queues.includes(this.upstream)) this.#kick()
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
    const { rules, problems } = parseRuleSet(u.rules ?? [])
    if (problems.length > 0) {
      const first = problems[0] as BridgeError
      throw new BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID', `upstream ${u.name}: ${problems.map((p) => `rules${p.path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('')}: ${p.message}`).join('; ')}`, {
        path: ['rules', ...first.path],
      })
    }
    this.rules = rules
    this.#outRules = rules.filter((r) => r.forwardsOut)
    this.#inRules = rules.filter((r) => r.forwardsIn)
    this.#bothRules = new Set(rules.filter((r) => r.direction === 'both').map((r) => r.id))
    for (const r of this.#outRules) if (r.maxRatePerTopic > 0) this.#limiters.set(r.id, new TopicRateLimiter(r.maxRatePerTopic, this.#now))
    this.#version = u.protocolVersion === 4 ? 4 : 5
    this.#url = new URL(u.url)
    const urlUser = this.#url.username === '' ? undefined : decodeURIComponent(this.#url.username)
    const urlPassword = this.#url.password === '' ? undefined : Buffer.from(decodeURIComponent(this.#url.password))
    this.#clientId = u.clientId !== undefined && u.clientId !== '' ? u.clientId : `edge-agent.${options.agent.site}.${u.name}`
    const statusEnabled = u.status?.enabled ?? true
    this.#statusTopic = statusEnabled
      ? (u.status?.topic ?? 'edge-agent/{site}/status').replace(/\{site\}/g, options.agent.site).replace(/\{upstream\}/g, u.name)
      : undefined
    this.#identityKnown = !(u.loopDetection ?? true)
    this.#identityMode = (u.loopDetection ?? true) ? 'on' : 'off'
    this.#echo = new EchoGuard({ windowMs: 30_000, maxEntries: 10_000, now: this.#now })
    const maxRate = u.maxRatePerSec ?? 0
    this.#drainBucket = maxRate > 0 ? new TokenBucket(maxRate, Math.max(1, Math.ceil(maxRate / 10)), this.#now) : undefined
    const r = u.reconnect ?? {}
    this.#conn = new UpstreamConnection({
      name: u.name,
      url: this.#url,
      protocolVersion: this.#version,
      clientId: this.#clientId,
      username: u.username !== undefined && u.username !== '' ? u.username : urlUser,
      passwordFile: u.passwordFile !== undefined && u.passwordFile !== '' ? u.passwordFile : undefined,
      password: urlPassword,
      tls: { caFile: nonEmpty(u.caFile), certFile: nonEmpty(u.certFile), keyFile: nonEmpty(u.keyFile), serverName: nonEmpty(u.tlsServerName) },
      tlsMaterial: options.tlsMaterial,
      keepaliveSec: u.keepaliveSec ?? 30,
      cleanStart: u.cleanStart ?? false,
      sessionExpirySec: u.sessionExpirySec ?? 604_800,
      connectTimeoutMs: u.connectTimeoutMs ?? 10_000,
      maxInflight: u.inflight ?? 100,
      bridgeFlag: u.bridgeFlag ?? true,
      will: this.#statusTopic === undefined ? undefined : { topic: this.#statusTopic, payload: this.#statusPayload('offline', 'connection lost', false), qos: 1, retain: true },
      reconnect: {
        minMs: r.minMs ?? 1_000,
        maxMs: r.maxMs ?? 60_000,
        resetAfterMs: r.resetAfterMs ?? 30_000,
        probeIntervalMs: r.probeIntervalMs ?? 500,
      },
      onMessage: (msg) => this.#onInbound(msg),
      logger: this.#log,
      now: this.#now,
      ...(options.random === undefined ? {} : { random: options.random }),
    })
    this.#rates = new RateWindow(() => ({ sent: this.#counts.sent, acked: this.#counts.acked, received: this.#counts.received }), this.#now)
  }

  /** The upstream agent's identity, if it is an edge-agent that published one. */
  get upstreamIdentity(): AgentIdentity | undefined {
    return this.#peer
  }

  get connected(): boolean {
    return this.#conn.state === 'connected'
  }

  /** Starts connecting; resolves at once (an unreachable upstream is a state, reported in status). */
  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#started) return
    this.#started = true
    this.#store.on('appended', this.#onAppended)
    this.#conn.on('connected', (info) => this.#onConnected(info))
    this.#conn.on('disconnected', (err) => {
      this.#notifyInflight()
      this.emit('disconnected', err)
    })
    this.#conn.on('drain', () => this.#kick())
    this.#timer = setInterval(() => this.#tick(), 1_000)
    this.#timer.unref()
    this.#rates.sample()
    this.#conn.start()
    this.#log.info(
      { url: redactUrl(this.#url), protocolVersion: this.#version, clientId: this.#clientId, rules: this.rules.map((r) => r.toJSON()) },
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
    this.#stopRequested = true
    this.#store.off('appended', this.#onAppended)
    clearInterval(this.#timer)
    clearTimeout(this.#retryTimer)
    clearTimeout(this.#identityTimer)
    if (!this.#started) return
    const session = this.#conn.session
    if (session.connected && session.inflight > 0) {
      await this.#waitInflightEmpty(this.#o.stopGraceMs ?? 3_000)
    }
    if (session.connected && this.#statusTopic !== undefined) {
      await this.#publishDirect(
        { topic: this.#statusTopic, payload: this.#statusPayload('offline', 'stopped'), qos: 1, retain: true },
        Math.min(1_000, this.#o.stopGraceMs ?? 3_000),
      )
    }
    await this.#conn.stop()
    // What is still unacknowledged goes back to the buffer for the next start.
    const left: number[] = this.#unsentAhead()
    this.#releaseOnAbandon = left
    session.abandonInflight()
    this.#releaseOnAbandon = undefined
    this.#flushAcksNow()
    await this.#ackFlush
    if (left.length > 0) {
      await this.#store.release(left).catch((err: unknown) => this.#log.debug({ err }, 'release on stop failed (buffer already stopped)'))
    }
    this.#log.info({ inflightReleased: left.length, sent: this.#counts.sent, acked: this.#counts.acked }, 'bridge stopped')
  }

  #releaseOnAbandon: number[] | undefined

  // ---------------------------------------------------------------------------
  // Capture (local → buffer), called by the local broker for every device PUBLISH.

  /**
   * Stores the message for every matching `out` rule of this upstream.
   * Returns undefined when no rule matches (the broker acknowledges at once),
   * else a promise the device's PUBACK waits for (its value means nothing); it rejects when the buffer
   * refused the message (the broker then withholds the ack).
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
  // Drain (buffer → upstream)

  #canSend(): boolean {
    return !this.#stopRequested && this.#conn.session.connected && this.#identityKnown && this.#loopSince === null
  }

  #kick(): void {
    this.#dirty = true
    if (!this.#pumping) void this.#pump()
  }

  /**
   * Sends while the window has room, from rows read ahead of the window.
   *
   * Sending is eager: a slot freed by a PUBACK is refilled at once. Waiting
   * for a larger chunk leaves the link idle between chunks (measured 6k
   * msg/s with quarter-window refills against 20k eager, Mosquitto upstream,
   * window 100): PUBACKs then trickle in behind delayed TCP ACKs and the
   * upstream's Nagle. Reading is batched: rows are taken from the store up to
   * one window ahead and refilled when half of that is used, so the store is
   * read once per half window instead of once per acknowledgement. Rows read
   * ahead are in flight for the store (no other reader takes them) and keep
   * their order: they go after the session's own resends and before anything
   * taken later.
   */
  async #pump(): Promise<void> {
    this.#pumping = true
    try {
      while (this.#dirty && this.#canSend()) {
        this.#dirty = false
        const session = this.#conn.session
        this.#sendAhead(session)
        const window = session.info?.window ?? 1
        const ahead = this.#ahead.length - this.#aheadHead
        if (ahead > window >> 1) break
        const batch = await this.#store.takeBatch(this.upstream, Math.min(MAX_TAKE, window - ahead))
        if (batch.length === 0) break
        for (const m of batch) this.#ahead.push(m)
        this.#dirty = true
      }
    } catch (err) {
      this.#log.error({ err }, 'reading the buffer failed, retrying')
      this.#retryLater(1_000)
    } finally {
      this.#pumping = false
    }
  }

  /** Sends read-ahead rows while the window, the transport and the rate limit allow. */
  #sendAhead(session: MqttSession): void {
    const ahead = this.#ahead
    while (this.#aheadHead < ahead.length && this.#canSend()) {
      const m = ahead[this.#aheadHead] as StoredMessage
      if (m.qos > 0 && session.quota === 0) break
      if (!session.writable) break
      if (this.#drainBucket !== undefined && !this.#drainBucket.tryTake()) {
        this.#retryLater(this.#drainBucket.msUntilToken())
        break
      }
      this.#aheadHead++
      this.#send(m)
    }
    if (this.#aheadHead === ahead.length) {
      ahead.length = 0
      this.#aheadHead = 0
    } else if (this.#aheadHead > 1024) {
      ahead.splice(0, this.#aheadHead)
      this.#aheadHead = 0
    }
  }

  /** Ids of rows read ahead and not sent (given back to the store on stop). */
  #unsentAhead(): number[] {
    const ids = this.#ahead.slice(this.#aheadHead).map((m) => m.id)
    this.#ahead.length = 0
    this.#aheadHead = 0
    return ids
  }

  #retryLater(ms: number): void {
    if (this.#retryTimer !== undefined || this.#stopRequested) return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      this.#kick()
    }, ms)
    this.#retryTimer.unref()
  }

  #send(m: StoredMessage): void {
    const session = this.#conn.session
    const info = session.info as ConnectInfo
    const msg: OutboundMessage = {
      topic: m.topic,
      payload: m.payload,
      qos: Math.min(m.qos, info.maximumQoS) as 0 | 1 | 2,
      retain: m.retain && info.retainAvailable,
      properties: this.#version === 5 ? this.#properties(m) : undefined,
    }
    if (this.#version === 4 && this.#bothRules.has(m.rule)) this.#echo.sent(m.topic, m.payload)
    this.#counts.sent++
    session.publish(msg, (err, code) => {
      if (err === undefined) {
        this.#counts.acked++
        this.#ackLater(m.id)
        return
      }
      if (err.code === 'EDGE_ERR_BRIDGE_STOPPED') {
        this.#releaseOnAbandon?.push(m.id)
        return
      }
      if (isTransientReason(code)) {
        // e.g. quota exceeded: give it back and try again a little later.
        this.#store.release([m.id]).catch(() => undefined)
        this.#retryLater(1_000)
        return
      }
      this.#drop(code === 0x95 ? 'too-large' : 'upstream-rejected', m.rule)
      this.#log.warn({ topic: m.topic, reasonCode: code, rule: m.rule }, 'upstream refused a message, dropped')
      // Through the store: deleted and counted in the same transaction, with a loss report.
      this.#store.drop([m.id], 'upstream-rejected').catch(() => this.#store.release([m.id]).catch(() => undefined))
    })
  }

  #properties(m: StoredMessage): NonNullable<OutboundMessage['properties']> {
    const user: Record<string, string | string[]> = {}
    const carried = m.properties?.userProperties
    if (carried !== undefined) for (const [k, v] of Object.entries(carried)) user[k] = typeof v === 'string' ? v : [...v]
    user[USER_PROP_VIA] = this.#o.agent.id
    user[USER_PROP_ID] = `${this.#o.agent.site}/${m.id}`
    const props: NonNullable<OutboundMessage['properties']> = { userProperties: user }
    if (m.expiresAt !== null) props.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - this.#now()) / 1000))
    if (m.properties?.contentType !== undefined) props.contentType = m.properties.contentType
    if (m.properties?.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = m.properties.payloadFormatIndicator
    if (m.properties?.responseTopic !== undefined) props.responseTopic = m.properties.responseTopic
    if (m.properties?.correlationData !== undefined) props.correlationData = Buffer.from(m.properties.correlationData)
    return props
  }

  #ackLater(id: number): void {
    this.#acks.push(id)
    if (!this.#ackScheduled) {
      this.#ackScheduled = true
      setImmediate(() => this.#flushAcksNow())
    }
    this.#notifyInflight()
    this.#kick()
  }

  #flushAcksNow(): void {
    this.#ackScheduled = false
    if (this.#acks.length === 0) return
    const ids = this.#acks
    this.#acks = []
    this.#ackFlush = this.#store.ack(ids).catch((err: unknown) => {
      // The rows stay and are sent again later: duplicates, never loss.
      this.#log.error({ err, rows: ids.length }, 'acknowledging rows in the buffer failed')
    })
  }

  #waitInflightEmpty(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const check = (): void => {
        if (this.#conn.session.inflight === 0 || !this.#conn.session.connected) done()
      }
      const done = (): void => {
        clearTimeout(timer)
        this.#inflightWaiters = this.#inflightWaiters.filter((w) => w !== check)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#inflightWaiters.push(check)
    })
  }

  #notifyInflight(): void {
    for (const w of [...this.#inflightWaiters]) w()
  }

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
      void this.#publishDirect({ topic: this.#statusTopic, payload: this.#statusPayload('online'), qos: 1, retain: true }, 5_000)
    }
    // A resumed session still has our subscriptions; subscribe again only
    // once per process (the rules may have changed) or when it was lost: a
    // repeated SUBSCRIBE makes the upstream resend retained messages.
    if (!info.sessionPresent || !this.#subscribedOnce) {
      const subs = this.#inRules.map((r) => ({ topic: r.remoteFilter, qos: r.qos, nl: true, rap: true, rh: r.retainHandling }))
      if (subs.length > 0) {
        session.subscribe(subs).then(
          (granted) => {
            this.#subscribedOnce = true
            granted.forEach((g, i) => {
              if (g >= 0x80) this.#log.warn({ filter: subs[i]?.topic, reasonCode: g }, 'upstream refused a subscription')
            })
          },
          (err: unknown) => this.#log.debug({ err }, 'subscribe interrupted by disconnect'),
        )
      } else this.#subscribedOnce = true
    }
    if (this.#identityMode === 'on') this.#subscribeIdentity()
    this.emit('connected', info)
    this.#kick()
  }

  /**
   * The upstream agent's identity (loop detection), in a SUBSCRIBE of its
   * own: some cloud brokers close the connection on a filter they do not
   * allow (AWS IoT Core does for '$' topics). A refusal (SUBACK 0x80) or two
   * connections closed while it was pending turn loop detection off for
   * this upstream, with a warning, instead of a reconnect loop.
   */
  #subscribeIdentity(): void {
    const session = this.#conn.session
    let settled = false
    const onClose = (): void => {
      if (settled) return
      settled = true
      if (++this.#identityFailures >= 2) this.#identityOff('the upstream closed the connection on the identity subscription')
    }
    this.#conn.once('disconnected', onClose)
    session.subscribe([{ topic: IDENTITY_TOPIC, qos: 1, nl: true, rap: true, rh: 0 }]).then(
      ([granted]) => {
        settled = true
        this.#conn.off('disconnected', onClose)
        this.#identityFailures = 0
        if (granted === undefined || granted >= 0x80) {
          this.#identityOff(`the upstream refused the identity subscription (reason code ${granted ?? 'none'})`)
          return
        }
        if (!this.#identityKnown) {
          // The upstream's retained identity, if any, follows the SUBACK; give it a moment.
          clearTimeout(this.#identityTimer)
          this.#identityTimer = setTimeout(() => this.#identityDecided(), this.#o.identityWaitMs ?? 300)
          this.#identityTimer.unref()
        }
      },
      () => undefined, // disconnected: onClose counts it
    )
  }

  #identityOff(why: string): void {
    if (this.#identityMode === 'off') return
    this.#identityMode = 'off'
    this.#log.warn({ why }, 'loop detection is off for this upstream (it does not serve $edge-agent/identity); set loopDetection: false to silence this')
    this.#identityDecided()
  }

  #identityDecided(): void {
    if (this.#identityKnown) return
    this.#identityKnown = true
    this.#kick()
  }

  async #onInbound(msg: InboundMessage): Promise<void> {
    if (msg.topic === IDENTITY_TOPIC) {
      this.#onIdentity(msg.payload)
      return
    }
    if (this.#controlTopics.has(msg.topic)) {
      this.#controlEvents.emit('message', msg.topic, msg.payload)
      return
    }
    const via = msg.userProperties?.[USER_PROP_VIA]
    if (via !== undefined && (via === this.#o.agent.id || (Array.isArray(via) && via.includes(this.#o.agent.id)))) {
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
  // Control channel (ControlChannel)

  async #controlSubscribe(topic: string, qos: 0 | 1 | 2): Promise<void> {
    // Registered before the SUBSCRIBE: a retained or queued message may follow the SUBACK at once.
    this.#controlTopics.add(topic)
    const [granted] = await this.#conn.session.subscribe([{ topic, qos, nl: true, rap: false, rh: 0 }])
    if (granted === undefined || granted >= 0x80) {
      throw new BridgeError('EDGE_ERR_BRIDGE_UPSTREAM_REJECTED', `the upstream refused the subscription to ${topic}`, { reasonCode: granted ?? 0x80 })
    }
  }

  #controlPublish(topic: string, payload: string | Buffer, qos: 0 | 1 | 2): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const msg: OutboundMessage = { topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos, retain: false }
      try {
        this.#conn.session.publish(msg, (err) => (err === undefined ? resolve() : reject(err)))
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)))
      }
    })
  }

  #onIdentity(payload: Buffer): void {
    const identity = payload.length === 0 ? undefined : decodeIdentity(payload)
    const changed = !sameIdentity(identity, this.#peer)
    this.#peer = identity
    const looping = identity !== undefined && formsLoop(this.#o.agent.id, identity)
    if (looping && this.#loopSince === null) {
      this.#loopSince = this.#now()
      this.#log.error(
        { code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED', peerSite: identity.site, peerLevel: identity.level, peerAbove: identity.above.length },
        'forwarding loop detected: this upstream is also one of our downstreams; forwarding to it is paused',
      )
      this.emit('loop', true)
    } else if (!looping && this.#loopSince !== null) {
      this.#loopSince = null
      this.#log.info('forwarding loop cleared, forwarding resumed')
      this.emit('loop', false)
    }
    if (changed) this.emit('peer', identity)
    this.#identityDecided()
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
      rates: { sentPerSec: rates['sent'] ?? 0, ackedPerSec: rates['acked'] ?? 0, receivedPerSec: rates['received'] ?? 0 },
      totals: { ...this.#counts, attempts: c.attempts, connects: c.connects, disconnects: c.disconnects },
      drops,
      dropsByRule,
      lastError: c.lastError,
      peer: this.#peer === undefined ? null : { id: this.#peer.id, site: this.#peer.site, level: this.#peer.level },
      loop: this.#loopSince === null ? null : { code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED', peerSite: this.#peer?.site ?? '', since: new Date(this.#loopSince).toISOString() },
      rules: this.rules.length,
    }
  }
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s
}
