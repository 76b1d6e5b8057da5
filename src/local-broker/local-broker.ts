// The local MQTT broker that devices of this segment connect to: aedes behind
// our own packet guard, on TCP and WebSocket listeners.
//
// Invariants:
// - Every byte a device sends passes the PacketGuard before aedes parses it, so
//   limits and the MQTT 3.1.1 rules aedes does not enforce hold for every
//   connection, and one client's garbage only ever closes that client.
// - Limits answer with the CONNACK code MQTT 3.1.1 has for them, or a
//   disconnect where it has none, and each refusal is logged naming the limit.
// - stop() stops accepting first, then closes clients, then the broker.
// - On `mqtts` listeners a device's certificate is checked after the handshake
//   and before any MQTT byte (tls.ts); its identity is the client id, bound
//   to the certificate, and its topic space is enforced on publish, subscribe,
//   Will and delivery (acl.ts). A session ends when its credential expires or
//   is revoked: Node never re-checks a certificate after the handshake.
//
// Where things are: the aedes hooks by name, with the custody chain's first
// hop (authorizePublish → capture → PUBACK), in hooks.ts; certificate
// sessions (identify, sweep, revoke, refresh) in device-sessions.ts; the byte
// guard in packet-guard.ts and guard-connection.ts; PUBACKs held until the
// broker state they stand for is synced in state-sync.ts; the listeners (bind,
// guard each connection, check device certificates, swap TLS material) in
// listeners.ts. This file owns the lifecycle and the agent's in-process API.
import { writeToStream } from 'mqtt-packet'
import { Aedes, type AedesOptions, type AedesPublishPacket } from 'aedes'
import type { Logger } from 'pino'
import { LocalBrokerError } from './errors.js'
import { connectionGuard } from './guard-connection.js'
import { connectionAcks, restoreAcks } from './ack-tracker.js'
import { LogLimiter } from './log-limiter.js'
import { BrokerCounters } from './counters.js'
import { DeviceSessions } from './device-sessions.js'
import { BrokerHooks, type BrokerAcl } from './hooks.js'
import { Listeners } from './listeners.js'
import { InboundWindow } from './inbound-window.js'
import { AckGate } from './state-sync.js'
import { ClientAcl } from './client-acl.js'
import { Authenticator } from './auth.js'
import {
  TOPIC_ALIAS_MAXIMUM,
  type BoundListener,
  type BrokerReconfigure,
  type LocalBrokerOptions,
  type LocalBrokerStats,
} from './options.js'
import type { DeviceCredential, TlsMaterial } from './tls.js'

/** How long stop() lets connections close on their own before cutting them. */
const STOP_GRACE_MS = 1_000

export class LocalBroker {
  readonly name = 'local-broker'
  #opts: LocalBrokerOptions
  readonly #log: Logger
  readonly #limiter: LogLimiter
  readonly #counters = new BrokerCounters()
  readonly #sessions: DeviceSessions
  readonly #auth: Authenticator
  #acl: BrokerAcl
  #hooks: BrokerHooks | undefined
  #aedes: Aedes | undefined
  readonly #listeners: Listeners
  #stopping: Promise<void> | undefined

  constructor(opts: LocalBrokerOptions) {
    this.#opts = opts
    this.#log = opts.logger.child({ component: 'local-broker' })
    this.#limiter = new LogLimiter(this.#log)
    this.#sessions = new DeviceSessions(opts.devices, this.#log, this.#counters)
    this.#acl = opts.acl ?? { rules: ClientAcl.off(), onDeniedPublish: 'drop' }
    this.#auth = new Authenticator(opts.auth ?? { maxFailedLogins: 5, failedLoginWindowMs: 60_000 }, this.#log)
    this.#listeners = new Listeners({
      options: () => this.#opts,
      sessions: this.#sessions,
      counters: this.#counters,
      limiter: this.#limiter,
      log: this.#log,
      stopping: () => this.#stopping !== undefined,
    })
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#aedes) return
    // mqtt-packet's number cache is a one-time set of Buffers for the 65,536
    // packet ids, measured to buy no throughput here (docs/benchmarks.md): on a
    // 1 GB gateway the memory matters more. Process-wide, by design of mqtt-packet.
    writeToStream.cacheNumbers = false
    const { limits } = this.#opts
    const ackGate = this.#opts.stateSync === undefined ? undefined : new AckGate(this.#opts.stateSync, this.#log)
    const hooks = (this.#hooks = new BrokerHooks({
      limits,
      devices: this.#opts.devices,
      sessions: this.#sessions,
      auth: this.#auth,
      acl: () => this.#acl,
      onPublish: this.#opts.onPublish,
      holdAck: ackGate === undefined ? undefined : (client, packet) => ackGate.hold(client, packet),
      counters: this.#counters,
      limiter: this.#limiter,
      log: this.#log,
      connectedClients: () => this.#aedes?.connectedClients ?? 0,
    }))
    const options: AedesOptions = {
      connectTimeout: limits.connectTimeoutMs,
      drainTimeout: limits.drainTimeoutMs,
      // MQTT 3.1 caps client ids at 23 characters, but Mosquitto and clients in
      // the field use longer ones: held to maxClientIdBytes like 3.1.1 (hooks.ts).
      maxClientsIdLength: limits.maxClientIdBytes,
      maxTopicLevels: limits.maxTopicLevels,
      // MQTT 5 (aedes 2): advertised in CONNACK as the largest packet a client
      // may send: the largest payload plus room for a topic and properties.
      // The packet guard holds every packet to its own limits first
      // (payload, properties); this stays as aedes' backstop.
      maximumPacketSize: Math.max(limits.maxPayloadBytes + 131_072, limits.preConnectMaxBytes + 5),
      topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
      // what the inbound window (inbound-window.ts) enforces for QoS 2
      receiveMaximum: limits.maxInflightPerClient,
      ...hooks.aedesOptions(),
    }
    const persistence: unknown =
      typeof this.#opts.persistence === 'function'
        ? (this.#opts.persistence as () => unknown)()
        : this.#opts.persistence
    if (persistence !== undefined) options.persistence = persistence
    await this.#auth.start()
    const aedes = await Aedes.createBroker(options)
    this.#aedes = aedes
    const inbound = new InboundWindow(() => this.#opts.limits.maxInflightPerClient, this.#log)
    const withStore = aedes as Aedes & { persistence: object }
    withStore.persistence = inbound.wrap(withStore.persistence)
    nullPrototypeMaps(aedes)
    // After aedes stored a held publish (its chain emits 'publish' last): sync, then let the PUBACK out.
    if (ackGate !== undefined) aedes.on('publish', (packet) => ackGate.stored(packet))
    this.#watch(aedes, inbound)
    this.#sessions.start()
    try {
      for (const l of this.#opts.listeners) {
        signal.throwIfAborted()
        await this.#listeners.listen(aedes, l)
      }
    } catch (err) {
      await this.stop()
      throw err
    }
    this.#log.info({ listeners: this.#listeners.bound }, 'local broker listening')
  }

  /** The addresses actually bound (port 0 resolved). */
  listeners(): readonly BoundListener[] {
    return this.#listeners.bound
  }

  stats(): LocalBrokerStats {
    const c = this.#counters
    return {
      clients: this.#aedes?.connectedClients ?? 0,
      connectionsTotal: c.connectionsTotal,
      messagesReceived: c.received,
      messagesDelivered: c.delivered,
      refused: Object.fromEntries(c.refused),
      listeners: this.#listeners.bound,
      tlsRefused: Object.fromEntries(c.tlsRefused),
      devices: this.#sessions.size,
      denied: Object.fromEntries(c.denied),
    }
  }

  /**
   * Swaps the local CA's server certificate (and trust anchors) into every
   * mqtts listener that follows it. New handshakes use it; connected devices
   * keep their sessions.
   */
  updateTls(material: TlsMaterial): void {
    this.#listeners.updateTls(material)
  }

  /**
   * Swaps the gateway's renewed certificate (certs.acme) into the mqtts
   * listeners with serverCertificate 'acme', in place: new handshakes use it,
   * connected devices keep their sessions.
   */
  setServerCertificate(material: { readonly cert: string; readonly key: string }): void {
    this.#listeners.setServerCertificate(material)
  }

  /**
   * Replaces the revoked serials: new handshakes presenting one are refused,
   * and sessions authenticated by one are closed now.
   */
  setRevokedSerials(serials: Iterable<string>): void {
    this.#sessions.setRevokedSerials(serials)
  }

  /**
   * Puts another client ACL in force, e.g. after a config reload. Connected
   * clients get the new rules from their next packet on; subscriptions they
   * hold are not re-checked, but every delivery is.
   */
  setAcl(acl: ClientAcl, onDeniedPublish: 'drop' | 'disconnect' = this.#acl.onDeniedPublish): void {
    this.#acl = { rules: acl, onDeniedPublish }
  }

  /**
   * Publishes as a named identity (e.g. a Node-RED flow) the way a client's
   * PUBLISH is handled: through the client ACL (as user `identity.username`,
   * client id `identity.clientId`), then the capture (the buffer commit), then
   * delivery. Resolves once captured and routed; rejects with
   * EDGE_ERR_BROKER_ACL_DENIED when the ACL refuses it (nothing is stored),
   * EDGE_ERR_BROKER_STOPPED when the broker is not running, or the capture's
   * own error (nothing was acknowledged).
   */
  async publishAs(
    identity: { readonly username?: string; readonly clientId: string },
    topic: string,
    payload: Buffer | string,
    opts: { qos?: 0 | 1 | 2; retain?: boolean } = {},
  ): Promise<void> {
    const aedes = this.#aedes
    if (aedes === undefined || aedes.closed || this.#hooks === undefined) {
      throw new LocalBrokerError('EDGE_ERR_BROKER_STOPPED', 'broker is not running')
    }
    if (!this.#hooks.mayPublishAs(identity.username, identity.clientId, topic)) {
      this.#counters.deny('aclPublish')
      throw new LocalBrokerError(
        'EDGE_ERR_BROKER_ACL_DENIED',
        `${identity.username ?? 'anonymous'} may not publish to ${topic.slice(0, 200)}`,
      )
    }
    const packet = {
      cmd: 'publish' as const,
      topic,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      qos: opts.qos ?? 1,
      retain: opts.retain ?? false,
      dup: false,
    }
    this.#counters.received++
    await this.#opts.onPublish?.(packet, identity.clientId)
    await new Promise<void>((resolve, reject) =>
      aedes.publish(packet, (err?: Error) => (err ? reject(err) : resolve())),
    )
  }

  /**
   * Uses another password file (or none) from now on, e.g. after a config
   * reload; clients already connected stay. The file in force is also re-read
   * by itself whenever it changes. Rejects with EDGE_ERR_BROKER_PASSWORD_FILE
   * if the new file does not parse (the previous users stay in force).
   */
  setPasswordFile(path: string | undefined): Promise<void> {
    return this.#auth.setPath(path)
  }

  /** Closes the session of `clientId`, if connected; resolves true if there was one. */
  disconnectClient(clientId: string, reason = 'requested'): boolean {
    return this.#sessions.disconnect(clientId, reason)
  }

  /**
   * A device renewed its certificate over its session: the session now rests
   * on the new credential and lives until that one expires.
   */
  refreshCredential(clientId: string, credential: DeviceCredential): void {
    this.#sessions.refresh(clientId, credential)
  }

  /**
   * Publishes on behalf of the agent (bypasses the ACL); resolves once routed.
   * `properties` (MQTT 5, e.g. from an upstream) reach MQTT 5 subscribers; 3.1.1 ones never see them.
   */
  publish(
    topic: string,
    payload: Buffer | string,
    opts: { qos?: 0 | 1 | 2; retain?: boolean; properties?: AedesPublishPacket['properties'] | undefined } = {},
  ): Promise<void> {
    const aedes = this.#aedes
    if (aedes === undefined || aedes.closed)
      return Promise.reject(new LocalBrokerError('EDGE_ERR_BROKER_STOPPED', 'broker is not running'))
    return new Promise<void>((resolve, reject) => {
      aedes.publish(
        {
          cmd: 'publish',
          topic,
          payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
          qos: opts.qos ?? 1,
          retain: opts.retain ?? false,
          dup: false,
          ...(opts.properties === undefined ? undefined : { properties: opts.properties }),
        },
        (err?: Error) => (err ? reject(err) : resolve()),
      )
    })
  }

  /**
   * Subscribes on behalf of the agent, in-process (no session, no ACL, no
   * retained replay); resolves with the unsubscribe once the filter is active.
   */
  subscribe(
    filter: string,
    deliver: (msg: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }) => void,
  ): Promise<() => Promise<void>> {
    const aedes = this.#aedes
    if (aedes === undefined || aedes.closed)
      return Promise.reject(new LocalBrokerError('EDGE_ERR_BROKER_STOPPED', 'broker is not running'))
    const fn = (packet: AedesPublishPacket, cb: () => void): void => {
      cb()
      if (packet.topic.startsWith('$SYS/')) return
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
      deliver({ topic: packet.topic, payload, qos: packet.qos, retain: packet.retain })
    }
    return new Promise((resolve) => {
      aedes.subscribe(filter, fn, () =>
        resolve(
          () => new Promise<void>((done) => (aedes.closed ? done() : aedes.unsubscribe(filter, fn, () => done()))),
        ),
      )
    })
  }

  /**
   * Live reload: limits checked per connection (keepalive bounds, client id
   * length, pre-CONNECT bytes) and the device ACL apply at once, to connected
   * devices too (their next publish, subscribe or delivery). Limits built into
   * aedes or the listeners at start (RESTART_LIMITS) are taken only by a
   * restart: the agent reports them.
   */
  reconfigure(update: BrokerReconfigure): void {
    const devices = this.#opts.devices
    const nextDevices =
      devices === undefined || (update.acl === undefined && update.onDeniedPublish === undefined)
        ? devices
        : {
            ...devices,
            ...(update.acl === undefined ? {} : { acl: update.acl }),
            ...(update.onDeniedPublish === undefined ? {} : { onDeniedPublish: update.onDeniedPublish }),
          }
    this.#opts = {
      ...this.#opts,
      ...(update.limits === undefined ? {} : { limits: update.limits }),
      ...(nextDevices === undefined ? {} : { devices: nextDevices }),
    }
    this.#hooks?.reconfigure({ limits: this.#opts.limits, devices: nextDevices })
    if (update.acl !== undefined) this.#sessions.reconfigure(nextDevices)
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    this.#sessions.stop()
    this.#auth.stop()
    const aedes = this.#aedes
    // Stop accepting first, then close the clients with the broker; a closed
    // listener alone leaves aedes' clients up (moscajs/aedes#640).
    const closing = this.#listeners.close()
    const aedesClosed = aedes ? new Promise<void>((resolve) => aedes.close(() => resolve())) : Promise.resolve()
    // A closed listener still waits for every socket it accepted: ones in the
    // middle of a TLS handshake (up to connectTimeoutMs), ones handed to a
    // broker already closing. With hundreds of devices reconnecting, that
    // outlasted the agent's stop budget: after a short grace they are cut.
    let timer: NodeJS.Timeout | undefined
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS)))
    const settled = await Promise.race([
      Promise.all([aedesClosed, ...closing]).then(() => true),
      grace.then(() => false),
    ])
    clearTimeout(timer)
    if (!settled) {
      this.#listeners.destroyConnections()
      this.#log.info({ graceMs: STOP_GRACE_MS }, 'local broker: connections still open after the grace, closed')
    }
    await Promise.all([aedesClosed, ...closing])
    this.#limiter.flush()
    this.#log.info('local broker stopped')
  }

  #watch(aedes: Aedes, inbound: InboundWindow): void {
    aedes.on('connackSent', (packet, client) => {
      // MQTT 5 CONNACKs carry a reason code instead of a return code
      if ((packet.returnCode ?? (packet as { reasonCode?: number }).reasonCode) !== 0) return
      connectionGuard(client.conn)?.authenticated()
      const acks = connectionAcks(client.conn)
      if (acks !== undefined) restoreAcks((aedes as { persistence?: unknown }).persistence, client, acks)
    })
    aedes.on('clientError', (client, err) => {
      this.#limiter.info('clientError', { clientId: client.id, err: err.message }, 'client error, connection closed')
    })
    aedes.on('connectionError', (client, err) => {
      this.#limiter.info(
        'connectionError',
        { clientId: client.id, err: err.message },
        'connection error before CONNECT completed',
      )
    })
    aedes.on('keepaliveTimeout', (client) => {
      this.#limiter.info('keepaliveTimeout', { clientId: client.id }, 'client keepalive timed out')
    })
    aedes.on('client', (client) => {
      this.#sessions.connected(client)
      this.#log.debug({ clientId: client.id }, 'client connected')
    })
    aedes.on('clientDisconnect', (client) => {
      inbound.disconnected(client)
      this.#sessions.disconnected(client)
      this.#log.debug({ clientId: client.id }, 'client disconnected')
    })
  }
}

/**
 * GHSA-52qw-whmv-87c5, fixed in aedes 1.2 and not in 2.0.0-beta.1: its maps
 * keyed by client id and broker id are plain objects, so a client named
 * `constructor` finds Object's constructor as a connected client and the
 * process dies on an uncaught TypeError. Swapped for maps without a prototype
 * (the per-client ones in hooks.ts preConnect).
 */
function nullPrototypeMaps(aedes: Aedes): void {
  const b = aedes as unknown as { clients: object; brokers: object }
  b.clients = Object.assign(Object.create(null) as object, b.clients)
  b.brokers = Object.assign(Object.create(null) as object, b.brokers)
}
