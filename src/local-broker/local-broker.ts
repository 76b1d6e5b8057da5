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
import { createServer as createTcpServer, type Server as TcpServer, type Socket, type AddressInfo } from 'node:net'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
import { writeToStream } from 'mqtt-packet'
import { Aedes, type AedesOptions, type AuthenticateError, type Client, type PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import { LocalBrokerError } from './errors.js'
import { PacketGuard, guardConnection, connectionGuard, type GuardViolation } from './packet-guard.js'
import { LogLimiter } from './log-limiter.js'
import type { Acl, DeviceAcl } from './acl.js'
import {
  checkPeer,
  classifyTlsError,
  identityFor,
  mergeMaterial,
  normalizeSerial,
  parseAnchors,
  readListenerFiles,
  secureContextOptions,
  type DeviceCredential,
  type IdentityMode,
  type TlsMaterial,
  type TlsRefusal,
} from './tls.js'

export interface ListenerOptions {
  readonly protocol: 'mqtt' | 'ws' | 'mqtts'
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  /** WebSocket HTTP path, default '/mqtt'. */
  readonly path?: string
  /** mqtts: refuse clients without a certificate from the local CA. Default true. */
  readonly requireClientCert?: boolean
  /** mqtts: server certificate (PEM, with its chain) and key; default: issued by the local CA and rotated. */
  readonly certFile?: string
  readonly keyFile?: string
  /** mqtts: trust anchors for client certificates; default: the local CA. */
  readonly caFile?: string
}

export interface BrokerLimitOptions {
  readonly maxConnections: number
  readonly maxPayloadBytes: number
  readonly preConnectMaxBytes: number
  /** 0 = no lower bound. */
  readonly keepaliveMinSec: number
  /** 0 = no upper bound. */
  readonly keepaliveMaxSec: number
  readonly maxInflightPerClient: number
  readonly connectTimeoutMs: number
  readonly maxClientIdBytes: number
  readonly maxTopicLevels: number
  readonly drainTimeoutMs: number
}

/**
 * Called for every PUBLISH a device sends, before the broker acknowledges it.
 * The PUBACK/PUBREC waits for the returned promise; a rejection withholds it
 * and closes the connection, so that the device keeps the message and resends.
 */
/** The PUBACK waits for the returned promise (its value is ignored); a rejection withholds it. */
export type PublishInterceptor = (packet: Readonly<PublishPacket>, clientId: string) => Promise<unknown> | void

export interface StateSync {
  /** Whether aedes will store this publish (retained, or a persistent session subscribed). */
  needed(packet: Readonly<PublishPacket>): boolean
  /** Resolves once everything the broker stored so far is on stable storage. */
  sync(): Promise<void>
}

export interface LocalBrokerOptions {
  readonly listeners: readonly ListenerOptions[]
  readonly limits: BrokerLimitOptions
  readonly logger: Logger
  /**
   * aedes persistence, or a function returning it at start (when it needs a
   * database that is opened by an earlier component); default in memory.
   */
  readonly persistence?: unknown
  readonly onPublish?: PublishInterceptor
  /**
   * Durable broker state (retained messages, offline queues). aedes sends a
   * QoS 1 PUBACK before it stores the message; with this, a PUBACK that a
   * stored message needs is held (the connection corked) until `sync()`
   * after the store: a power cut after the PUBACK cannot take it.
   */
  readonly stateSync?: StateSync
  /** The local CA's TLS material for mqtts listeners without files of their own. */
  readonly tls?: () => TlsMaterial
  /** Certificate-identified devices: identity binding and topic isolation. */
  readonly devices?: DeviceOptions
}

/** Certificate-identified devices on mqtts listeners. */
export interface DeviceOptions {
  readonly acl: Acl
  /** Which certificate names the client id may match. */
  readonly identity: IdentityMode
  readonly maxIdBytes: number
  /** A PUBLISH outside the device's space: close the connection, or acknowledge and drop it. */
  readonly onDeniedPublish: 'disconnect' | 'drop'
  /** A device published on one of its request topics (e.g. a CSR); the message goes nowhere else. */
  readonly onRequest?: (req: DeviceRequest) => void
  /** Is this certificate serial revoked? Consulted at every handshake (with setRevokedSerials'). */
  readonly isRevoked?: (serial: string) => boolean
  /** Client ids that only a certificate-identified session may use (devices the CA knows). */
  readonly reservedClientId?: (clientId: string) => boolean
  /** Wall clock for credential expiry (the certs clock guard's trusted time). Default Date.now. */
  readonly now?: () => number
  /** How often sessions are checked for an expired credential, ms. Default 1000. */
  readonly sweepIntervalMs?: number
}

export interface DeviceRequest {
  readonly id: string
  readonly clientId: string
  readonly topic: string
  readonly payload: Buffer
  /** The session's current credential. */
  readonly credential: DeviceCredential
}

export interface BoundListener {
  readonly protocol: 'mqtt' | 'ws' | 'mqtts'
  readonly host: string
  readonly port: number
}

export interface LocalBrokerStats {
  readonly clients: number
  readonly connectionsTotal: number
  readonly messagesReceived: number
  readonly messagesDelivered: number
  /** Refused or closed connections by reason (limit name or protocol rule). */
  readonly refused: Readonly<Record<string, number>>
  readonly listeners: readonly BoundListener[]
  /** TLS connections refused before MQTT, by reason (tls.ts TlsRefusal). */
  readonly tlsRefused: Readonly<Record<string, number>>
  /** Certificate-identified sessions connected now. */
  readonly devices: number
  /** Publishes and subscriptions refused by the device ACL, and sessions closed by credential. */
  readonly denied: Readonly<Record<string, number>>
}

type LimitReason = 'maxConnections' | 'keepaliveMinSec' | 'keepaliveMaxSec' | 'maxClientIdBytes'
/** Identity refusals: no certificate, client id not the certificate's, a device's id taken by another, Will outside the space. */
type IdentityReason = 'certificateRequired' | 'identityMismatch' | 'identityInvalid' | 'clientIdReserved' | 'willDenied'
type RefusalReason = LimitReason | IdentityReason

const REFUSAL_CODES: Record<RefusalReason, AuthenticateError['returnCode']> = {
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

/** An identified session: who it is, what it may do, until when. */
interface DeviceSession {
  readonly id: string
  readonly acl: DeviceAcl
  /** Serials of the certificates that authenticated this session (handshake, then renewals over it). */
  readonly serials: Set<string>
  /** The newest of those credentials (the certificate it last renewed to). */
  current: DeviceCredential
  notAfter: number
}

/** Where dropped and consumed publishes go: nobody can receive it (authorizeForward). */
const SINK_TOPIC = '$edge/dropped'

const kRefusal = Symbol('edge-agent.refusal')
const kSession = Symbol('edge-agent.deviceSession')
const kPeer = Symbol('edge-agent.peerCertificate')
type AnnotatedClient = Client & { [kRefusal]?: RefusalReason; [kSession]?: DeviceSession }
/** On a TLS connection: the checked client certificate, or null if none was presented (allowed). */
type PeerConn = Duplex & { [kPeer]?: X509Certificate | null }

interface TlsListener {
  readonly server: TlsServer
  readonly listener: ListenerOptions
  readonly requireClientCert: boolean
  /** Follows the local CA's material for what its own files do not give. */
  readonly followsLocalCa: boolean
  /** What the listener's own files gave. */
  readonly own: Partial<TlsMaterial>
  anchors: X509Certificate[]
}

export class LocalBroker {
  readonly name = 'local-broker'
  readonly #opts: LocalBrokerOptions
  readonly #log: Logger
  readonly #limiter: LogLimiter
  #aedes: Aedes | undefined
  /** Held PUBACKs (stateSync), by the publish's payload object (aedes' copy of the packet keeps it). */
  readonly #storedGates = new Map<unknown, () => void>()
  #servers: { close(): Promise<void> }[] = []
  #bound: BoundListener[] = []
  #stopping: Promise<void> | undefined
  #connectionsTotal = 0
  #received = 0
  #delivered = 0
  readonly #refused = new Map<string, number>()
  readonly #tlsRefused = new Map<string, number>()
  readonly #denied = new Map<string, number>()
  readonly #tlsListeners: TlsListener[] = []
  /** Identified sessions by client id. */
  readonly #sessions = new Map<string, AnnotatedClient>()
  #revoked: ReadonlySet<string> = new Set()
  #sweep: NodeJS.Timeout | undefined

  constructor(opts: LocalBrokerOptions) {
    this.#opts = opts
    this.#log = opts.logger.child({ component: 'local-broker' })
    this.#limiter = new LogLimiter(this.#log)
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#aedes) return
    // mqtt-packet's number cache is a one-time 6.3 MB of Buffers for the 65,536
    // packet ids, measured to buy no throughput here (docs/benchmarks.md): on a
    // 1 GB gateway the memory matters more. Process-wide, by design of mqtt-packet.
    writeToStream.cacheNumbers = false
    const { limits } = this.#opts
    const options: AedesOptions = {
      connectTimeout: limits.connectTimeoutMs,
      drainTimeout: limits.drainTimeoutMs,
      maxInflightInbound: limits.maxInflightPerClient,
      // MQTT 3.1 caps client ids at 23 characters; 3.1.1 lengths are ours to set.
      maxClientsIdLength: 23,
      maxTopicLevels: limits.maxTopicLevels,
      preConnect: (client, packet, done) => {
        const reason = this.#identify(client as AnnotatedClient, packet) ?? this.#refusalFor(packet.keepalive ?? 0, packet.clientId)
        if (reason) (client as AnnotatedClient)[kRefusal] = reason
        done(null, true)
      },
      authenticate: (client, _username, _password, done) => {
        const reason = (client as AnnotatedClient)[kRefusal] ?? (this.#aedes !== undefined && this.#aedes.connectedClients >= limits.maxConnections ? 'maxConnections' : undefined)
        if (reason === undefined) return done(null, true)
        this.#count(reason)
        const err = Object.assign(new Error(`refused ${reason}`), { returnCode: REFUSAL_CODES[reason] }) as AuthenticateError
        if (isLimit(reason)) {
          this.#limiter.warn(reason, { clientId: client.id, limit: reason, value: this.#limitValue(reason), returnCode: err.returnCode }, 'connection refused by limit')
        } else {
          const peer = (client.conn as PeerConn)[kPeer]
          this.#limiter.warn(
            reason,
            { clientId: client.id.slice(0, 200), reason, certificateCn: peer ? cnOf(peer) : undefined, returnCode: err.returnCode },
            'device connection refused',
          )
        }
        done(err, false)
      },
      authorizePublish: (client, packet, done) => {
        if (client === null) return done(null)
        const session = (client as AnnotatedClient)[kSession]
        if (session !== undefined) {
          const decision = session.acl.publish(packet.topic)
          if (decision === 'request') return this.#request(client, session, packet, done)
          if (decision === 'deny') return this.#denyPublish(client, session.id, packet, done)
        } else if (this.#opts.devices?.acl.reservedForAgent(packet.topic) === true) {
          return this.#denyPublish(client, undefined, packet, done)
        }
        // Devices may not publish into the broker's own namespace (aedes#597).
        if (packet.topic.startsWith('$')) {
          this.#count('reservedTopic')
          this.#limiter.warn('reservedTopic', { clientId: client.id, topic: packet.topic.slice(0, 200) }, 'publish to a $ topic refused')
          return done(new Error('publishing to $ topics is not allowed'))
        }
        this.#received++
        const hold = this.#opts.onPublish?.(packet, client.id)
        if (hold === undefined) {
          this.#holdAckUntilStored(client, packet)
          return done(null)
        }
        hold.then(
          () => {
            // One commit resolves the holds of many publishes at once: their
            // PUBACKs leave in one write per device instead of one each.
            corkForTick((client as unknown as { conn: Duplex }).conn)
            this.#holdAckUntilStored(client, packet)
            done(null)
          },
          (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
        )
      },
      authorizeSubscribe: (client, sub, done) => {
        const session = client === null ? undefined : (client as AnnotatedClient)[kSession]
        if (session === undefined || session.acl.subscribe(sub.topic)) return done(null, sub)
        this.#deny('aclSubscribe')
        this.#limiter.warn('aclSubscribe', { deviceId: session.id, filter: sub.topic.slice(0, 200) }, 'subscription outside the device topic space refused')
        done(null, null) // SUBACK 0x80 for this filter [MQTT-3.9.3]
      },
      authorizeForward: (client, packet) => {
        if (packet.topic === SINK_TOPIC) return undefined
        const session = (client as AnnotatedClient | null)?.[kSession]
        // Re-checked on delivery: retained messages and restored sessions too.
        if (session !== undefined && !session.acl.receive(packet.topic)) return undefined
        this.#delivered++
        return packet
      },
    }
    const persistence: unknown = typeof this.#opts.persistence === 'function' ? (this.#opts.persistence as () => unknown)() : this.#opts.persistence
    if (persistence !== undefined) options.persistence = persistence
    const aedes = await Aedes.createBroker(options)
    this.#aedes = aedes
    // After aedes stored a held publish (its chain emits 'publish' last): sync, then let the PUBACK out.
    aedes.on('publish', (packet) => {
      const release = this.#storedGates.get(packet.payload)
      if (release === undefined) return
      this.#storedGates.delete(packet.payload)
      release()
    })
    this.#watch(aedes)
    if (this.#opts.devices !== undefined) {
      this.#sweep = setInterval(() => this.#sweepSessions(), this.#opts.devices.sweepIntervalMs ?? 1000)
      this.#sweep.unref()
    }
    try {
      for (const l of this.#opts.listeners) {
        signal.throwIfAborted()
        await this.#listen(aedes, l)
      }
    } catch (err) {
      await this.stop()
      throw err
    }
    this.#log.info({ listeners: this.#bound }, 'local broker listening')
  }

  /** The addresses actually bound (port 0 resolved). */
  listeners(): readonly BoundListener[] {
    return this.#bound
  }

  stats(): LocalBrokerStats {
    return {
      clients: this.#aedes?.connectedClients ?? 0,
      connectionsTotal: this.#connectionsTotal,
      messagesReceived: this.#received,
      messagesDelivered: this.#delivered,
      refused: Object.fromEntries(this.#refused),
      listeners: this.#bound,
      tlsRefused: Object.fromEntries(this.#tlsRefused),
      devices: this.#sessions.size,
      denied: Object.fromEntries(this.#denied),
    }
  }

  /**
   * Swaps the local CA's server certificate (and trust anchors) into every
   * mqtts listener that follows it. New handshakes use it; connected devices
   * keep their sessions.
   */
  updateTls(material: TlsMaterial): void {
    for (const t of this.#tlsListeners) {
      if (!t.followsLocalCa) continue
      const merged: TlsMaterial = { key: t.own.key ?? material.key, cert: t.own.cert ?? material.cert, ca: t.own.ca ?? material.ca }
      t.server.setSecureContext(secureContextOptions(merged))
      t.anchors = parseAnchors(merged.ca)
    }
    const swapped = this.#tlsListeners.filter((t) => t.followsLocalCa).length
    if (swapped > 0) this.#log.info({ listeners: swapped }, 'tls material updated')
  }

  /**
   * Replaces the revoked serials: new handshakes presenting one are refused,
   * and sessions authenticated by one are closed now.
   */
  setRevokedSerials(serials: Iterable<string>): void {
    this.#revoked = new Set([...serials].map(normalizeSerial))
    for (const client of [...this.#sessions.values()]) {
      const session = client[kSession]
      if (session !== undefined && [...session.serials].some((s) => this.#revoked.has(s))) this.#closeSession(client, 'revoked')
    }
  }

  /** Closes the session of `clientId`, if connected; resolves true if there was one. */
  disconnectClient(clientId: string, reason = 'requested'): boolean {
    const client = this.#sessions.get(clientId)
    if (client === undefined) return false
    this.#closeSession(client, reason)
    return true
  }

  /**
   * A device renewed its certificate over its session: the session now rests
   * on the new credential and lives until that one expires.
   */
  refreshCredential(clientId: string, credential: DeviceCredential): void {
    const session = this.#sessions.get(clientId)?.[kSession]
    if (session === undefined) return
    session.serials.add(normalizeSerial(credential.serial))
    session.notAfter = Math.max(session.notAfter, credential.notAfter)
    if (credential.notBefore >= session.current.notBefore) session.current = { ...credential, serial: normalizeSerial(credential.serial) }
  }

  /** Publishes on behalf of the agent (bypasses the ACL); resolves once routed. */
  publish(topic: string, payload: Buffer | string, opts: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<void> {
    const aedes = this.#aedes
    if (aedes === undefined || aedes.closed) return Promise.reject(new LocalBrokerError('EDGE_ERR_BROKER_STOPPED', 'broker is not running'))
    return new Promise<void>((resolve, reject) => {
      aedes.publish(
        { cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos: opts.qos ?? 1, retain: opts.retain ?? false, dup: false },
        (err?: Error) => (err ? reject(err) : resolve()),
      )
    })
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    if (this.#sweep !== undefined) clearInterval(this.#sweep)
    const aedes = this.#aedes
    // Stop accepting first, then close the clients with the broker; a closed
    // listener alone leaves aedes' clients up (moscajs/aedes#640).
    const closing = this.#servers.map((s) => s.close())
    if (aedes) await new Promise<void>((resolve) => aedes.close(() => resolve()))
    await Promise.all(closing)
    this.#limiter.flush()
    this.#log.info('local broker stopped')
  }

  #refusalFor(keepalive: number, clientId: string): RefusalReason | undefined {
    const { limits } = this.#opts
    if (limits.keepaliveMaxSec > 0 && (keepalive === 0 || keepalive > limits.keepaliveMaxSec)) return 'keepaliveMaxSec'
    if (limits.keepaliveMinSec > 0 && keepalive < limits.keepaliveMinSec) return 'keepaliveMinSec'
    if (Buffer.byteLength(clientId) > limits.maxClientIdBytes) return 'maxClientIdBytes'
    return undefined
  }

  /**
   * Binds a connection's certificate to the MQTT session (preConnect). On a
   * TLS connection with a certificate the client id must be the certificate's
   * identity (an empty one takes the CN); without one, a client id that
   * belongs to a device is refused, so nobody takes over a device's session.
   */
  #identify(client: AnnotatedClient, packet: { clientId: string; will?: { topic: string } | undefined }): RefusalReason | undefined {
    const devices = this.#opts.devices
    const peer = (client.conn as PeerConn)[kPeer]
    if (peer === undefined || peer === null) {
      if (devices === undefined) return undefined
      const taken = this.#sessions.has(packet.clientId) || devices.reservedClientId?.(packet.clientId) === true
      return taken ? 'clientIdReserved' : undefined
    }
    if (devices === undefined) return undefined
    const result = identityFor(peer, packet.clientId, devices.identity, devices.maxIdBytes)
    if (!result.ok) return result.reason === 'identity-mismatch' ? 'identityMismatch' : 'identityInvalid'
    const acl = devices.acl.forDevice(result.id)
    // A Will is a publish made later on the device's behalf: check it now [MQTT-3.1.2-8].
    if (packet.will !== undefined && acl.publish(packet.will.topic) !== 'allow') return 'willDenied'
    if (packet.clientId === '') packet.clientId = result.id // clientId := CN
    client[kSession] = { id: result.id, acl, serials: new Set([result.credential.serial]), current: result.credential, notAfter: result.credential.notAfter }
    return undefined
  }

  /** stateSync: cork the connection so the PUBACK aedes writes next waits for the store and its sync. */
  #holdAckUntilStored(client: Client, packet: PublishPacket): void {
    const ss = this.#opts.stateSync
    if (ss === undefined || packet.qos === 0 || !ss.needed(packet)) return
    const conn = (client as unknown as { conn: Duplex }).conn
    // A backed-up socket makes aedes wait for 'drain' before it stores: corked, that never comes.
    if (conn.destroyed || conn.writableLength > conn.writableHighWaterMark / 2) return
    if (this.#storedGates.has(packet.payload)) return // a shared empty payload: cannot tell them apart
    conn.cork()
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      clearTimeout(timer)
      this.#storedGates.delete(packet.payload)
      if (!conn.destroyed) conn.uncork()
    }
    // Never hold an ack for ever: past this the state is synced by the idle timer.
    const timer = setTimeout(release, 5_000)
    timer.unref()
    this.#storedGates.set(packet.payload, () => {
      ss.sync().then(release, (err: unknown) => {
        this.#opts.logger.error({ err }, 'broker state sync failed')
        release()
      })
    })
  }

  #request(client: Client, session: DeviceSession, packet: PublishPacket, done: (err?: Error | null) => void): void {
    const topic = packet.topic
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
    // Consumed here: acknowledged, neither delivered nor stored nor bridged.
    packet.topic = SINK_TOPIC
    packet.retain = false
    done(null)
    try {
      this.#opts.devices?.onRequest?.({ id: session.id, clientId: client.id, topic, payload, credential: session.current })
    } catch (err) {
      this.#log.error({ err, deviceId: session.id, topic }, 'device request handler failed')
    }
  }

  #denyPublish(client: Client, deviceId: string | undefined, packet: PublishPacket, done: (err?: Error | null) => void): void {
    const mode = deviceId === undefined ? 'disconnect' : (this.#opts.devices?.onDeniedPublish ?? 'disconnect')
    this.#deny('aclPublish')
    this.#limiter.warn(
      'aclPublish',
      { deviceId, clientId: client.id.slice(0, 200), topic: packet.topic.slice(0, 200), action: mode },
      'publish outside the device topic space refused',
    )
    if (mode === 'disconnect') return done(new Error('publish outside the device topic space'))
    // MQTT 3.1.1 has no negative PUBACK: acknowledge and drop [MQTT-3.3.5-2].
    packet.topic = SINK_TOPIC
    packet.retain = false
    done(null)
  }

  #sweepSessions(): void {
    const now = this.#opts.devices?.now?.() ?? Date.now()
    for (const client of [...this.#sessions.values()]) {
      const session = client[kSession]
      if (session !== undefined && session.notAfter <= now) this.#closeSession(client, 'credentialExpired')
    }
  }

  #closeSession(client: AnnotatedClient, reason: string): void {
    const session = client[kSession]
    this.#sessions.delete(client.id)
    this.#deny(reason)
    this.#log.warn({ deviceId: session?.id, clientId: client.id, reason }, 'device session closed')
    client.close()
  }

  #deny(reason: string): void {
    this.#denied.set(reason, (this.#denied.get(reason) ?? 0) + 1)
  }

  #limitValue(reason: LimitReason): number {
    return this.#opts.limits[reason]
  }

  #count(reason: string): void {
    this.#refused.set(reason, (this.#refused.get(reason) ?? 0) + 1)
  }

  #watch(aedes: Aedes): void {
    aedes.on('connackSent', (packet, client) => {
      if (packet.returnCode === 0) connectionGuard(client.conn as Duplex)?.authenticated()
    })
    aedes.on('clientError', (client, err) => {
      this.#limiter.info('clientError', { clientId: client.id, err: err.message }, 'client error, connection closed')
    })
    aedes.on('connectionError', (client, err) => {
      this.#limiter.info('connectionError', { clientId: client.id, err: err.message }, 'connection error before CONNECT completed')
    })
    aedes.on('keepaliveTimeout', (client) => {
      this.#limiter.info('keepaliveTimeout', { clientId: client.id }, 'client keepalive timed out')
    })
    aedes.on('client', (client) => {
      if ((client as AnnotatedClient)[kSession] !== undefined) this.#sessions.set(client.id, client as AnnotatedClient)
      this.#log.debug({ clientId: client.id }, 'client connected')
    })
    aedes.on('clientDisconnect', (client) => {
      if (this.#sessions.get(client.id) === client) this.#sessions.delete(client.id)
      this.#log.debug({ clientId: client.id }, 'client disconnected')
    })
  }

  /** Puts the guard in front of aedes for one connection. */
  #accept(aedes: Aedes, conn: Duplex, remote: string, req?: IncomingMessage): void {
    this.#connectionsTotal++
    const guard = new PacketGuard({
      preConnectMaxBytes: this.#opts.limits.preConnectMaxBytes,
      maxPayloadBytes: this.#opts.limits.maxPayloadBytes,
    })
    guardConnection(conn, guard, (v) => this.#onViolation(v, remote))
    aedes.handle(conn, req)
  }

  #onViolation(v: GuardViolation, remote: string): void {
    const key = v.limit ?? v.reason
    this.#count(key)
    const fields = { remote, clientId: v.clientId, reason: v.reason, rule: v.rule, detail: v.detail, limit: v.limit, returnCode: v.connackReturnCode }
    if (v.reason === 'unsupported-protocol-version') {
      this.#limiter.warn(key, fields, 'client refused: MQTT 5 and other protocol levels are not supported by the local broker (aedes speaks MQTT 3.1 and 3.1.1); connect with MQTT 3.1.1')
    } else if (v.limit) {
      this.#limiter.warn(key, fields, 'connection closed by limit')
    } else {
      this.#limiter.warn(key, fields, 'connection closed: protocol violation')
    }
  }

  /** An mqtts listener: checks the client certificate after the handshake, then hands the socket to the guard and aedes. */
  async #tlsServer(aedes: Aedes, l: ListenerOptions): Promise<TlsServer> {
    const requireClientCert = l.requireClientCert ?? true
    let material: TlsMaterial
    let own: Partial<TlsMaterial>
    try {
      own = await readListenerFiles(l)
      material = mergeMaterial(own, l.certFile !== undefined && l.keyFile !== undefined && l.caFile !== undefined ? undefined : this.#opts.tls?.())
    } catch (err) {
      throw new LocalBrokerError('EDGE_ERR_BROKER_TLS', `mqtts listener ${l.host}:${l.port}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    const server = createTlsServer({ ...secureContextOptions(material), handshakeTimeout: this.#opts.limits.connectTimeoutMs })
    const entry: TlsListener = {
      server,
      listener: l,
      requireClientCert,
      followsLocalCa: l.certFile === undefined || l.keyFile === undefined || l.caFile === undefined,
      own,
      anchors: parseAnchors(material.ca),
    }
    this.#tlsListeners.push(entry)
    server.on('secureConnection', (socket: TLSSocket) => {
      const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`
      const check = checkPeer(socket, {
        requireClientCert,
        anchors: entry.anchors,
        isRevoked: (serial) => this.#revoked.has(serial) || this.#opts.devices?.isRevoked?.(serial) === true,
        now: this.#opts.devices?.now?.() ?? Date.now(),
      })
      if (!check.ok) {
        this.#tlsRefusal(check.reason, { remote, serial: check.serial, certificateCn: check.cn })
        socket.destroy()
        return
      }
      ;(socket as PeerConn)[kPeer] = check.cert ?? null
      socket.setNoDelay(true)
      this.#accept(aedes, socket, remote)
    })
    server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      this.#tlsRefusal(classifyTlsError(err), { remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, err: err.message })
    })
    return server
  }

  #tlsRefusal(reason: TlsRefusal, fields: Record<string, unknown>): void {
    this.#tlsRefused.set(reason, (this.#tlsRefused.get(reason) ?? 0) + 1)
    this.#limiter.warn(`tls:${reason}`, { ...fields, reason }, 'tls connection refused')
  }

  async #listen(aedes: Aedes, l: ListenerOptions): Promise<void> {
    const maxSockets = this.#opts.limits.maxConnections + Math.max(64, Math.ceil(this.#opts.limits.maxConnections / 10))
    let server: TcpServer | HttpServer
    if (l.protocol === 'mqtts') {
      server = await this.#tlsServer(aedes, l)
    } else if (l.protocol === 'mqtt') {
      const tcp = createTcpServer((socket: Socket) => {
        socket.setNoDelay(true)
        this.#accept(aedes, socket, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`)
      })
      server = tcp
    } else {
      const http = createHttpServer((_req, res) => {
        res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: upgrade required\n')
      })
      // `ws` is loaded only when a WebSocket listener is configured.
      const { WebSocketServer, createWebSocketStream } = await import('ws')
      const wss = new WebSocketServer({
        server: http,
        path: l.path ?? '/mqtt',
        maxPayload: this.#opts.limits.maxPayloadBytes + 65536 + 16,
        handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false),
      })
      wss.on('error', (err) => this.#log.error({ err }, 'websocket server error'))
      wss.on('connection', (ws, req) => {
        const stream = createWebSocketStream(ws)
        stream.on('error', () => stream.destroy())
        this.#accept(aedes, stream, `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`, req)
      })
      server = http
    }
    server.maxConnections = maxSockets
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        reject(
          new LocalBrokerError('EDGE_ERR_BROKER_LISTEN_FAILED', `cannot listen on ${l.protocol}://${l.host}:${l.port}: ${err.message}`, {
            cause: err,
          }),
        )
      }
      server.once('error', onError)
      server.listen(l.port, l.host, () => {
        server.off('error', onError)
        resolve()
      })
    })
    // Errors after listening (EMFILE on accept…) are logged; a failed listen was thrown above.
    server.on('error', (err) => this.#log.error({ err, listener: l }, 'listener error'))
    const address = server.address() as AddressInfo
    this.#bound.push({ protocol: l.protocol, host: l.host, port: address.port })
    this.#servers.push({
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve())
          if ('closeAllConnections' in server) server.closeAllConnections()
        }),
    })
  }
}

function isLimit(reason: RefusalReason): reason is LimitReason {
  return reason === 'maxConnections' || reason === 'keepaliveMinSec' || reason === 'keepaliveMaxSec' || reason === 'maxClientIdBytes'
}

function cnOf(cert: X509Certificate): string {
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='))
  return line === undefined ? '' : line.slice(3, 203)
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
