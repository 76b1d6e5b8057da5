// The aedes hooks of the local broker, by name. The first hop of the custody
// chain is `authorizePublish`: a device's PUBLISH is checked against the ACL,
// handed to the capture (`onPublish`, which commits it to the buffer), and
// only when that resolves does aedes send the PUBACK/PUBREC. A rejected
// capture withholds the acknowledgement and closes the connection, so the
// device keeps the message and sends it again.
//
// Hook order for one connection (aedes 1.x and 2): preConnect → authenticate →
// (CONNACK) → authorizeSubscribe per filter / authorizePublish per PUBLISH →
// authorizeForward per delivery.
import type { Duplex } from 'node:stream'
import type { AedesOptions, AuthenticateError, Client, PublishPacket, Subscription } from 'aedes'
import type { Logger } from 'pino'
import type { BrokerCounters } from './counters.js'
import {
  commonNameOf,
  peerCertificate,
  type DeviceSession,
  type DeviceSessions,
  type IdentityReason,
} from './device-sessions.js'
import type { LogLimiter } from './log-limiter.js'
import { exceedsClientMaximum } from './outbound-size.js'
import { listenerPolicy, type Authenticator } from './auth.js'
import type { ClientAcl, ClientRules } from './client-acl.js'
import type { BrokerLimitOptions, DeviceOptions, MqttVersion, PublishInterceptor } from './options.js'

type LimitReason = 'maxConnections' | 'keepaliveMinSec' | 'keepaliveMaxSec' | 'maxClientIdBytes'
export type RefusalReason = LimitReason | IdentityReason

export const REFUSAL_CODES: Record<RefusalReason, AuthenticateError['returnCode']> = {
  maxConnections: 3, // server unavailable
  // MQTT 3.1.1 has no code for an unacceptable keepalive; Mosquitto answers
  // identifier rejected, and so do we, with a log line that says why.
  keepaliveMinSec: 2,
  keepaliveMaxSec: 2,
  maxClientIdBytes: 2,
  certificateRequired: 5, // not authorized
  identityMismatch: 2, // identifier rejected: the client id is not the certificate's
  identityInvalid: 2,
  clientIdReserved: 5,
  willDenied: 5,
}

const VERSION_NAMES: Record<number, MqttVersion> = { 3: '3.1', 4: '3.1.1', 5: '5' }

/** Where dropped and consumed publishes go: nobody can receive it (authorizeForward). */
export const SINK_TOPIC = '$edge/dropped'

/**
 * True when `packet` is headed for a connection that has closed and dropping
 * it loses nothing. aedes replays retained messages through a stream piped to
 * the subscriber and never stops that stream when the subscriber goes: each
 * remaining message still becomes a Packet, a failed write and an Error with a
 * stack, queued with setImmediate and holding the closed client, its socket
 * and its guard. A client that subscribes to a wide filter and leaves at once
 * (churn, fuzzing, a device in a reconnect loop) leaves thousands of those
 * behind, faster than they drain. Refusing the forward turns each into one
 * cheap skip. Kept for a persistent session's queued message (it has a
 * brokerId and QoS > 0): refusing that would clear it from the offline queue.
 */
function gone(client: Client, packet: { qos?: number; brokerId?: string | null }): boolean {
  if (!client.closed && !client.conn.destroyed) return false
  return client.clean || (packet.qos ?? 0) === 0 || packet.brokerId === null || packet.brokerId === undefined
}

function noop(): void {}

const kRefusal = Symbol('edge-agent.refusal')
type RefusedClient = Client & { [kRefusal]?: RefusalReason }

type Done = (err?: Error | null) => void

const kRules = Symbol('edge-agent.aclRules')
type RulesClient = Client & { [kRules]?: { acl: ClientAcl; rules: ClientRules } }

/** The client ACL in force and what a denied publish gets; swapped whole by LocalBroker.setAcl. */
export interface BrokerAcl {
  readonly rules: ClientAcl
  readonly onDeniedPublish: 'drop' | 'disconnect'
}

const kUsername = Symbol('edge-agent.username')
type UserClient = Client & { [kUsername]?: string }

function setClientUsername(client: Client, username: string | undefined): void {
  if (username !== undefined) (client as UserClient)[kUsername] = username
}

/** The user name a client logged in with (checked against the password file), if any. */
export function clientUsername(client: Client): string | undefined {
  return (client as UserClient)[kUsername]
}

export interface BrokerHooksDeps {
  readonly limits: BrokerLimitOptions
  readonly devices: DeviceOptions | undefined
  readonly sessions: DeviceSessions
  readonly auth: Authenticator
  /** The client ACL in force now (hot-swappable). */
  readonly acl: () => BrokerAcl
  readonly onPublish: PublishInterceptor | undefined
  /** Called as a publish is acknowledged: may hold its PUBACK until the state it stored is synced (state-sync.ts). */
  readonly holdAck?: ((client: Client, packet: PublishPacket) => void) | undefined
  readonly counters: BrokerCounters
  readonly limiter: LogLimiter
  readonly log: Logger
  /** Clients connected now (aedes.connectedClients), for maxConnections. */
  readonly connectedClients: () => number
}

export type AedesHooks = Required<
  Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'>
>

export class BrokerHooks {
  #d: BrokerHooksDeps
  readonly #retained: RetainedIndex

  constructor(deps: BrokerHooksDeps) {
    this.#d = deps
    this.#retained = new RetainedIndex(
      deps.limits.maxRetainedMessages ?? Infinity,
      deps.limits.maxRetainedBytes ?? Infinity,
    )
  }

  /** Live reload: the limits and device options that hooks read per connection and per packet. */
  reconfigure(update: Pick<BrokerHooksDeps, 'limits' | 'devices'>): void {
    this.#d = { ...this.#d, ...update }
  }

  /** The hooks as aedes options. */
  aedesOptions(): AedesHooks {
    return {
      preConnect: (client, packet, done) => this.preConnect(client, packet, done),
      authenticate: (client, username, password, done) => this.authenticate(client, username, password, done),
      authorizePublish: (client, packet, done) => this.authorizePublish(client, packet, done),
      authorizeSubscribe: (client, sub, done) => this.authorizeSubscribe(client, sub, done),
      authorizeForward: (client, packet) => this.authorizeForward(client, packet),
    }
  }

  /**
   * Decides the connection's fate from its CONNECT (identity, limits) and
   * records the refusal for `authenticate`, which has the CONNACK codes.
   */
  preConnect(
    client: Client,
    packet: {
      clientId: string
      keepalive?: number
      clean?: boolean
      will?: { topic: string }
      protocolVersion?: number
    },
    done: (e: Error | null, ok: boolean) => void,
  ): void {
    // aedes starts a session's packet ids at a random number; a clean session's
    // start at 1 and increase, as a reader of a capture expects. A resumed session
    // keeps aedes' numbering, so a new id cannot meet one of its stored in-flight ones.
    if (packet.clean !== false) (client as Client & { _nextId: number })._nextId = 1
    // GHSA-52qw-whmv-87c5 (aedes 2 beta lacks 1.2's fix): keyed by topic filter and broker id
    // from the wire, so a name such as 'constructor' must not find Object's prototype.
    const maps = client as unknown as { subscriptions: object; duplicates: object }
    maps.subscriptions = Object.assign(Object.create(null) as object, maps.subscriptions)
    maps.duplicates = Object.assign(Object.create(null) as object, maps.duplicates)
    if (this.#refusesVersion(client, packet)) {
      // aedes takes return codes 2 to 5 from authenticate only; its own
      // [MQTT-3.1.2-2] check answers CONNACK 1 to a level it does not know.
      packet.protocolVersion = 0
      return done(null, true)
    }
    const reason =
      this.#d.sessions.identify(client, packet) ?? this.#limitRefusal(packet.keepalive ?? 0, packet.clientId)
    if (reason) (client as RefusedClient)[kRefusal] = reason
    done(null, true)
  }

  /** True (and logged) when the listener's mqttVersions leaves the CONNECT's version out. */
  #refusesVersion(client: Client, packet: { clientId: string; protocolVersion?: number }): boolean {
    const policy = listenerPolicy(client.conn)
    const allowed = policy?.mqttVersions
    const version = VERSION_NAMES[packet.protocolVersion ?? 4]
    if (allowed === undefined || version === undefined || allowed.includes(version)) return false
    this.#d.counters.refuse('mqttVersion')
    this.#d.limiter.warn(
      'mqttVersion',
      {
        clientId: packet.clientId.slice(0, 200),
        remote: policy?.remoteAddress,
        listener: policy?.listener,
        mqttVersion: version,
        mqttVersions: allowed,
        key: policy?.versionsKey,
        returnCode: 1,
      },
      'client refused: MQTT version not accepted on this listener; add it to the listener mqttVersions to allow it',
    )
    return true
  }

  /** Limits and certificate identity (decided in preConnect), then password or anonymous policy (auth.ts). */
  authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (err: AuthenticateError | null, ok: boolean | null) => void,
  ): void {
    const { limits, counters, limiter } = this.#d
    const reason =
      (client as RefusedClient)[kRefusal] ??
      (this.#d.connectedClients() >= limits.maxConnections ? 'maxConnections' : undefined)
    if (reason === undefined) {
      if (this.#d.sessions.sessionOf(client) !== undefined) return done(null, true)
      return this.#login(client, username, password, done)
    }
    counters.refuse(reason)
    const err: AuthenticateError = Object.assign(new Error(`refused ${reason}`), {
      returnCode: REFUSAL_CODES[reason],
    })
    if (isLimit(reason)) {
      limiter.warn(
        reason,
        { clientId: client.id, limit: reason, value: limits[reason], returnCode: err.returnCode },
        'connection refused by limit',
      )
    } else {
      const peer = peerCertificate(client.conn)
      limiter.warn(
        reason,
        {
          clientId: client.id.slice(0, 200),
          reason,
          certificateCn: peer ? commonNameOf(peer) : undefined,
          returnCode: err.returnCode,
        },
        'device connection refused',
      )
    }
    done(err, false)
  }

  #login(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (err: AuthenticateError | null, ok: boolean | null) => void,
  ): void {
    const policy = listenerPolicy(client.conn)
    this.#d.auth.check(policy, username, password).then(
      (r) => {
        if (r.ok) {
          setClientUsername(client, r.username)
          return done(null, true)
        }
        this.#d.counters.refuse(r.reason)
        const fields = {
          clientId: client.id.slice(0, 200),
          username: username?.slice(0, 200),
          remote: policy?.remoteAddress,
          reason: r.reason,
          returnCode: r.returnCode,
        }
        this.#d.limiter.warn(`login:${r.reason}`, fields, 'login refused')
        done(Object.assign(new Error(`refused ${r.reason}`), { returnCode: r.returnCode }), false)
      },
      (err: unknown) => {
        this.#d.log.error({ err, clientId: client.id.slice(0, 200) }, 'login check failed')
        const refusal: AuthenticateError = Object.assign(new Error('login check failed'), { returnCode: 3 as const })
        done(refusal, false)
      },
    )
  }

  /** ACL, then capture; the PUBACK waits for the capture (see the file header). */
  authorizePublish(client: Client | null, packet: PublishPacket, done: Done): void {
    if (client === null) return done(null)
    const topic = packet.topic
    const session = this.#d.sessions.sessionOf(client)
    const decision = session?.acl.publish(topic)
    if (decision === 'request') return this.#request(client, session!, packet, done)
    // The agent's own `$` spaces are the agent's alone: acknowledged and dropped, as clients expect a PUBACK.
    if (isAgentSpace(topic)) {
      return this.#denyPublish(client, packet, done, { reason: 'reservedTopic', deviceId: session?.id, mode: 'drop' })
    }
    // Every device's reply topics are the agent's too; a publish there is an ACL denial like any other.
    if (this.#d.devices?.acl.reservedForAgent(topic) === true || !this.#permits(client, 'publish', topic)) {
      // A device keeps its own setting (devices.onDeniedPublish) unless the client ACL granted it.
      const mode =
        session !== undefined ? (this.#d.devices?.onDeniedPublish ?? 'disconnect') : this.#d.acl().onDeniedPublish
      return this.#denyPublish(client, packet, done, { reason: 'aclPublish', deviceId: session?.id, mode })
    }
    if (packet.retain && !this.#retained.admit(topic, packet.payload.length)) {
      // Delivered, not kept: the retained store is at its limit.
      packet.retain = false
      this.#d.counters.deny('retainedLimit')
      this.#d.limiter.warn(
        'retainedLimit',
        { clientId: client.id.slice(0, 200), topic: topic.slice(0, 200) },
        'retained message not kept: retained limit reached',
      )
    }
    this.#capture(client, packet, done)
  }

  authorizeSubscribe(
    client: Client | null,
    sub: Subscription,
    done: (err: Error | null, sub?: Subscription | null) => void,
  ): void {
    if (client === null || this.#permits(client, 'subscribe', sub.topic)) return done(null, sub)
    this.#d.counters.deny('aclSubscribe')
    const session = this.#d.sessions.sessionOf(client)
    this.#d.limiter.warn(
      'aclSubscribe',
      {
        deviceId: session?.id,
        clientId: client.id.slice(0, 200),
        username: clientUsername(client)?.slice(0, 200),
        filter: sub.topic.slice(0, 200),
      },
      'subscription refused by the acl',
    )
    done(null, null) // SUBACK 0x80 for this filter [MQTT-3.9.3]
  }

  authorizeForward<P extends { topic: string }>(client: Client | null, packet: P): P | undefined {
    if (packet.topic === SINK_TOPIC) return undefined
    if (client !== null && gone(client, packet as { qos?: number; brokerId?: string | null })) return undefined
    // Re-checked on delivery: retained messages, restored sessions, `read` rules.
    if (client !== null && !this.#permits(client, 'receive', packet.topic)) return undefined
    if (client !== null && exceedsClientMaximum(client, packet)) {
      this.#d.counters.deny('client-maximum-packet-size')
      this.#d.limiter.info(
        'client-maximum-packet-size',
        { clientId: client.id, topic: packet.topic.slice(0, 200) },
        'message not delivered: larger than the Maximum Packet Size the client announced',
      )
      return undefined
    }
    this.#d.counters.delivered++
    return packet
  }

  /** The client ACL's verdict on a publish by a named identity that has no connection (LocalBroker.publishAs). */
  mayPublishAs(username: string | undefined, clientId: string, topic: string): boolean {
    if (isAgentSpace(topic) || this.#d.devices?.acl.reservedForAgent(topic) === true) return false
    return this.#d.acl().rules.forClient(username, clientId).publish(topic)
  }

  /**
   * May `client` do this? A certificate-identified device: its device
   * templates, or the client ACL's rules for its id (when the ACL is on).
   * Any other client: the client ACL (everything when it is off).
   */
  #permits(client: Client, kind: 'publish' | 'subscribe' | 'receive', arg: string): boolean {
    const session = this.#d.sessions.sessionOf(client)
    const acl = this.#d.acl()
    if (session !== undefined) {
      const device =
        kind === 'publish'
          ? session.acl.publish(arg) === 'allow'
          : kind === 'subscribe'
            ? session.acl.subscribe(arg)
            : session.acl.receive(arg)
      if (device) return true
      if (!acl.rules.enabled) return false
    }
    const rules = this.#rulesOf(client, acl, session?.id)
    return kind === 'publish' ? rules.publish(arg) : kind === 'subscribe' ? rules.subscribe(arg) : rules.receive(arg)
  }

  /** The client's compiled rules, recompiled when the ACL was swapped since. */
  #rulesOf(client: Client, acl: BrokerAcl, deviceId: string | undefined): ClientRules {
    const c = client as RulesClient
    const cached = c[kRules]
    if (cached !== undefined && cached.acl === acl.rules) return cached.rules
    const rules = acl.rules.forClient(deviceId ?? clientUsername(client), client.id)
    c[kRules] = { acl: acl.rules, rules }
    return rules
  }

  /** Hands an authorized PUBLISH to the capture; the acknowledgement waits for it. */
  #capture(client: Client, packet: PublishPacket, done: Done): void {
    this.#d.counters.received++
    const hold = this.#d.onPublish?.(packet, client.id)
    if (hold === undefined) {
      this.#d.holdAck?.(client, packet)
      return done(null)
    }
    hold.then(
      () => {
        // One commit resolves the holds of many publishes at once: their
        // PUBACKs leave in one write per device instead of one each.
        corkForTick(client.conn)
        this.#d.holdAck?.(client, packet)
        done(null)
      },
      (err: unknown) => {
        // aedes 2 would answer an MQTT 5 client's failed PUBLISH with PUBACK 0x87, and
        // the device would drop a message that was never stored: close without any
        // acknowledgement instead, so that it sends the message again.
        if (client.version === 5) return void client.conn.destroy()
        done(err instanceof Error ? err : new Error(String(err)))
      },
    )
  }

  #limitRefusal(keepalive: number, clientId: string): LimitReason | undefined {
    const { limits } = this.#d
    // keepalive 0 (none) is its own choice, neither too short nor too long
    if (keepalive === 0) {
      if (limits.allowKeepaliveZero === false) return 'keepaliveMaxSec'
    } else {
      if (limits.keepaliveMaxSec > 0 && keepalive > limits.keepaliveMaxSec) return 'keepaliveMaxSec'
      if (limits.keepaliveMinSec > 0 && keepalive < limits.keepaliveMinSec) return 'keepaliveMinSec'
    }
    if (Buffer.byteLength(clientId) > limits.maxClientIdBytes) return 'maxClientIdBytes'
    return undefined
  }

  #request(client: Client, session: DeviceSession, packet: PublishPacket, done: Done): void {
    const topic = packet.topic
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
    // Consumed here: acknowledged, neither delivered nor stored nor bridged.
    packet.topic = SINK_TOPIC
    packet.retain = false
    done(null)
    try {
      this.#d.devices?.onRequest?.({
        id: session.id,
        clientId: client.id,
        topic,
        payload,
        credential: session.handshake,
      })
    } catch (err) {
      this.#d.log.error({ err, deviceId: session.id, topic }, 'device request handler failed')
    }
  }

  #denyPublish(
    client: Client,
    packet: PublishPacket,
    done: Done,
    how: { reason: string; deviceId: string | undefined; mode: 'drop' | 'disconnect' },
  ): void {
    this.#d.counters.deny(how.reason)
    this.#d.limiter.warn(
      how.reason,
      {
        deviceId: how.deviceId,
        clientId: client.id.slice(0, 200),
        username: clientUsername(client)?.slice(0, 200),
        topic: packet.topic.slice(0, 200),
        action: how.mode,
      },
      how.reason === 'reservedTopic' ? "publish into the agent's own topics refused" : 'publish refused by the acl',
    )
    if (client.version === 5) {
      // aedes 2 answers an MQTT 5 client's refused QoS 1/2 PUBLISH with PUBACK/PUBREC
      // 0x87 (Not authorized) and keeps the connection; a QoS 0 one is dropped.
      done(new Error('publish refused by the acl'))
      if (how.mode === 'disconnect') setImmediate(() => client.disconnect({ reasonCode: 0x87 }, noop))
      return
    }
    if (how.mode === 'disconnect') return done(new Error('publish refused by the acl'))
    // MQTT 3.1.1 has no negative PUBACK: acknowledge and drop [MQTT-3.3.5-2].
    packet.topic = SINK_TOPIC
    packet.retain = false
    done(null)
  }
}

/**
 * Topics only the agent publishes: its own `$edge…` spaces and `$SYS`. Other
 * `$` topics (device SDKs use `$aws/things/…`) go through the ACL like any.
 */
export function isAgentSpace(topic: string): boolean {
  return topic.startsWith('$edge') || topic === '$SYS' || topic.startsWith('$SYS/')
}

/**
 * Retained topics and their payload bytes, kept by clients since start, so
 * that retained messages stay within a count and a byte budget. An empty
 * retained payload deletes [MQTT-3.3.1-10] and always passes.
 */
export class RetainedIndex {
  readonly #sizes = new Map<string, number>()
  #bytes = 0

  constructor(
    private readonly maxCount: number,
    private readonly maxBytes: number,
  ) {}

  /** May `topic` keep a retained payload of `size` bytes? Records it if so. */
  admit(topic: string, size: number): boolean {
    const old = this.#sizes.get(topic)
    if (size === 0) {
      if (old !== undefined) {
        this.#sizes.delete(topic)
        this.#bytes -= old
      }
      return true
    }
    const bytes = this.#bytes - (old ?? 0) + size
    if (bytes > this.maxBytes || (old === undefined && this.#sizes.size >= this.maxCount)) return false
    this.#sizes.set(topic, size)
    this.#bytes = bytes
    return true
  }
}

function isLimit(reason: RefusalReason): reason is LimitReason {
  return (
    reason === 'maxConnections' ||
    reason === 'keepaliveMinSec' ||
    reason === 'keepaliveMaxSec' ||
    reason === 'maxClientIdBytes'
  )
}

const kCorked = Symbol('edge-agent.corked')

/**
 * Holds a connection's writes until the current tick's microtasks have run,
 * then sends them in one writev. A PUBACK is written synchronously inside
 * aedes's publish callback, so every hold resolved by one commit lands while
 * the socket is corked.
 */
function corkForTick(conn: Duplex & { [kCorked]?: boolean }): void {
  if (conn[kCorked] === true || conn.destroyed) return
  conn[kCorked] = true
  conn.cork()
  process.nextTick(() => {
    conn[kCorked] = false
    conn.uncork()
  })
}
