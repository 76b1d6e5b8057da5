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
// Parts: capture.ts stores what devices publish (states 1 → 2); drain.ts
// sends rows from the buffer and writes the acks back (2 → 4); inbound.ts
// subscribes and delivers downward; loop-detector.ts reads the upstream
// agent's beacon; status-messages.ts keeps the retained status topic;
// bridge-status.ts counts drops and shapes status(); upstream-connection.ts
// keeps the MQTT session (mqtt-session.ts) connected. This class wires them
// and owns the lifecycle.
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
import { DropCounts, type BridgeStatus } from './bridge-status.js'
import { Capture, type CapturedPublish } from './capture.js'
import { UpstreamControl, type ControlChannel } from './control-channel.js'
import { Drain } from './drain.js'
import { EchoGuard } from './echo-guard.js'
import { BridgeError } from './errors.js'
import { Inbound, type LocalMessage } from './inbound.js'
import { LoopDetector } from './loop-detector.js'
import type { ConnectInfo, InboundMessage, ProtocolVersion } from './mqtt-session.js'
import { RateWindow, TokenBucket } from './rate.js'
import { parseRuleSet, type BridgeRule, type BridgeRuleInput } from './rule.js'
import { StatusMessages } from './status-messages.js'
import type { TlsMaterial } from './transport.js'
import { UpstreamConnection, redactUrl } from './upstream-connection.js'

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
  readonly #conn: UpstreamConnection
  readonly #capture: Capture
  readonly #drain: Drain
  readonly #inbound: Inbound
  readonly #loop: LoopDetector
  readonly #statusMessages: StatusMessages
  readonly #version: ProtocolVersion
  readonly #clientId: string
  readonly #url: URL
  readonly #echo: EchoGuard
  readonly #rates: RateWindow
  readonly #drops = new DropCounts()
  #resent = 0

  #started = false
  #stopping: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
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
    this.#version = u.protocolVersion === 4 ? 4 : 5
    this.#url = new URL(u.url)
    const urlUser = this.#url.username === '' ? undefined : decodeURIComponent(this.#url.username)
    const urlPassword = this.#url.password === '' ? undefined : Buffer.from(decodeURIComponent(this.#url.password))
    this.#clientId = u.clientId !== '' ? u.clientId : `edge-agent.${options.agent.site}.${u.name}`
    this.#statusMessages = new StatusMessages({ ...u.status, upstream: u.name, agent: options.agent, now: this.#now })
    this.#echo = new EchoGuard({ windowMs: 30_000, maxEntries: 10_000, now: this.#now })
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
      will: this.#statusMessages.will(),
      reconnect: u.reconnect,
      onMessage: (msg) => this.#onInbound(msg),
      logger: this.#log,
      now: this.#now,
      ...(options.random === undefined ? {} : { random: options.random }),
    })
    this.#control = new UpstreamControl(this.#conn)
    this.#capture = new Capture({
      queue: u.name,
      store: options.store,
      rules: this.rules,
      connected: () => this.connected,
      drop: (reason, rule) => this.#drops.add(reason, rule),
      now: this.#now,
    })
    this.#inbound = new Inbound({
      rules: this.rules,
      agentId: options.agent.id,
      version: this.#version,
      echo: this.#echo,
      publishLocal: options.publishLocal,
      drop: (reason) => this.#drops.add(reason),
      logger: this.#log,
    })
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
      drop: (reason, rule) => this.#drops.add(reason, rule),
      logger: this.#log,
      now: this.#now,
    })
    this.#rates = new RateWindow(
      () => ({ sent: this.#drain.sent, acked: this.#drain.acked, received: this.#inbound.received }),
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
    await this.#statusMessages.offline(session, Math.min(1_000, graceMs))
    await this.#conn.stop()
    // What is still unacknowledged goes back to the buffer for the next start.
    const released = await this.#drain.close()
    this.#log.info({ inflightReleased: released, sent: this.#drain.sent, acked: this.#drain.acked }, 'bridge stopped')
  }

  /**
   * Capture (local → buffer), called by the local broker for every device
   * PUBLISH: see capture.ts. Undefined when no `out` rule matches, else a
   * promise the device's PUBACK waits for.
   */
  capture(packet: CapturedPublish): Promise<unknown> | undefined {
    return this.#capture.capture(packet)
  }

  #onConnected(info: ConnectInfo): void {
    this.#resent += info.resent
    const session = this.#conn.session
    // Birth first, so that the status upstream precedes the data.
    this.#statusMessages.birth(session)
    this.#inbound.connected(session, info.sessionPresent)
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
    await this.#inbound.deliver(msg)
  }

  #tick(): void {
    this.#rates.sample()
    this.#echo.sweep()
    this.#capture.sweep()
  }

  status(): BridgeStatus {
    const c = this.#conn.stats()
    const s = this.#store.stats()
    const q = s.queues.find((x) => x.queue === this.upstream)
    const rates = this.#rates.rates()
    const peer = this.#loop.peer
    const loopSince = this.#loop.loopSince
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
        captured: this.#capture.captured,
        sent: this.#drain.sent,
        acked: this.#drain.acked,
        resent: this.#resent,
        received: this.#inbound.received,
        attempts: c.attempts,
        connects: c.connects,
        disconnects: c.disconnects,
      },
      ...this.#drops.merged(s.drops.byRule, this.#capture.ruleIds),
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
