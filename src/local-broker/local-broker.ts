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
// broker state they stand for is synced in state-sync.ts. This file owns the
// listeners and the lifecycle.
import { createServer as createTcpServer, type Server as TcpServer, type Socket, type AddressInfo } from 'node:net'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
import { writeToStream } from 'mqtt-packet'
import { Aedes, type AedesOptions, type AedesPublishPacket } from 'aedes'
import type { Logger } from 'pino'
import { LocalBrokerError } from './errors.js'
import { PacketGuard, type GuardViolation } from './packet-guard.js'
import { AckTracker, connectionAcks, restoreAcks, trackAcks } from './ack-tracker.js'
import { guardConnection, connectionGuard } from './guard-connection.js'
import { LogLimiter } from './log-limiter.js'
import { BrokerCounters } from './counters.js'
import { DeviceSessions, setPeerCertificate } from './device-sessions.js'
import { BrokerHooks, type BrokerAcl } from './hooks.js'
import { AckGate } from './state-sync.js'
import { ClientAcl } from './client-acl.js'
import { Authenticator, setListenerPolicy } from './auth.js'
import type {
  BoundListener,
  BrokerReconfigure,
  ListenerOptions,
  LocalBrokerOptions,
  LocalBrokerStats,
} from './options.js'
import {
  checkPeer,
  classifyTlsError,
  mergeMaterial,
  parseAnchors,
  readListenerFiles,
  secureContextOptions,
  type DeviceCredential,
  type TlsMaterial,
  type TlsRefusal,
} from './tls.js'

interface TlsListener {
  readonly server: TlsServer
  readonly listener: ListenerOptions
  readonly requireClientCert: boolean
  /** Follows the local CA's material for what its own files do not give. */
  readonly followsLocalCa: boolean
  /** What the listener's own files gave (or the gateway certificate, for serverCertificate 'acme'). */
  own: Partial<TlsMaterial>
  anchors: X509Certificate[]
}

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
  #servers: { close(): Promise<void>; destroyConnections(): void }[] = []
  #bound: BoundListener[] = []
  #stopping: Promise<void> | undefined
  readonly #tlsListeners: TlsListener[] = []

  constructor(opts: LocalBrokerOptions) {
    this.#opts = opts
    this.#log = opts.logger.child({ component: 'local-broker' })
    this.#limiter = new LogLimiter(this.#log)
    this.#sessions = new DeviceSessions(opts.devices, this.#log, this.#counters)
    this.#acl = opts.acl ?? { rules: ClientAcl.off(), onDeniedPublish: 'drop' }
    this.#auth = new Authenticator(opts.auth ?? { maxFailedLogins: 5, failedLoginWindowMs: 60_000 }, this.#log)
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
      maxInflightInbound: limits.maxInflightPerClient,
      // MQTT 3.1 caps client ids at 23 characters, but Mosquitto and clients in
      // the field use longer ones: held to maxClientIdBytes like 3.1.1 (hooks.ts).
      maxClientsIdLength: limits.maxClientIdBytes,
      maxTopicLevels: limits.maxTopicLevels,
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
    // After aedes stored a held publish (its chain emits 'publish' last): sync, then let the PUBACK out.
    if (ackGate !== undefined) aedes.on('publish', (packet) => ackGate.stored(packet))
    this.#watch(aedes)
    this.#sessions.start()
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
    const c = this.#counters
    return {
      clients: this.#aedes?.connectedClients ?? 0,
      connectionsTotal: c.connectionsTotal,
      messagesReceived: c.received,
      messagesDelivered: c.delivered,
      refused: Object.fromEntries(c.refused),
      listeners: this.#bound,
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
    for (const t of this.#tlsListeners) {
      if (!t.followsLocalCa) continue
      const merged: TlsMaterial = {
        key: t.own.key ?? material.key,
        cert: t.own.cert ?? material.cert,
        ca: t.own.ca ?? material.ca,
      }
      t.server.setSecureContext(secureContextOptions(merged))
      t.anchors = parseAnchors(merged.ca)
    }
    const swapped = this.#tlsListeners.filter((t) => t.followsLocalCa).length
    if (swapped > 0) this.#log.info({ listeners: swapped }, 'tls material updated')
  }

  /**
   * Swaps the gateway's renewed certificate (certs.acme) into the mqtts
   * listeners with serverCertificate 'acme', in place: new handshakes use it,
   * connected devices keep their sessions.
   */
  setServerCertificate(material: { readonly cert: string; readonly key: string }): void {
    let swapped = 0
    for (const t of this.#tlsListeners) {
      if (t.listener.serverCertificate !== 'acme') continue
      t.own = { ...t.own, cert: material.cert, key: material.key }
      t.server.setSecureContext(secureContextOptions(mergeMaterial(t.own, this.#opts.tls?.())))
      swapped++
    }
    if (swapped > 0) this.#log.info({ listeners: swapped }, 'server certificate swapped')
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

  /** Publishes on behalf of the agent (bypasses the ACL); resolves once routed. */
  publish(topic: string, payload: Buffer | string, opts: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<void> {
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
    const closing = this.#servers.map((s) => s.close())
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
      for (const s of this.#servers) s.destroyConnections()
      this.#log.info({ graceMs: STOP_GRACE_MS }, 'local broker: connections still open after the grace, closed')
    }
    await Promise.all([aedesClosed, ...closing])
    this.#limiter.flush()
    this.#log.info('local broker stopped')
  }

  #watch(aedes: Aedes): void {
    aedes.on('connackSent', (packet, client) => {
      if (packet.returnCode !== 0) return
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
      this.#sessions.disconnected(client)
      this.#log.debug({ clientId: client.id }, 'client disconnected')
    })
  }

  /** Puts the guard in front of aedes for one connection. */
  #accept(
    aedes: Aedes,
    l: ListenerOptions,
    conn: Duplex,
    peer: { remoteAddress?: string | undefined; remotePort?: number | undefined },
    req?: IncomingMessage,
  ): void {
    const remoteAddress = peer.remoteAddress ?? '?'
    const remote = `${remoteAddress}:${peer.remotePort ?? 0}`
    setListenerPolicy(conn, {
      allowAnonymous: l.allowAnonymous ?? true,
      useIdentityAsUsername: l.useIdentityAsUsername ?? false,
      remoteAddress,
    })
    this.#counters.connectionsTotal++
    const acks = new AckTracker()
    const guard = new PacketGuard(
      {
        preConnectMaxBytes: this.#opts.limits.preConnectMaxBytes,
        maxPayloadBytes: this.#opts.limits.maxPayloadBytes,
      },
      acks,
    )
    trackAcks(conn, acks)
    guardConnection(conn, guard, (v) => this.#onViolation(v, remote))
    aedes.handle(conn, req)
  }

  #onViolation(v: GuardViolation, remote: string): void {
    const key = v.limit ?? v.reason
    this.#counters.refuse(key)
    const fields = {
      remote,
      clientId: v.clientId,
      reason: v.reason,
      rule: v.rule,
      detail: v.detail,
      limit: v.limit,
      returnCode: v.connackReturnCode,
      packetType: v.packetType,
      packetId: v.packetId,
    }
    if (v.reason === 'unsupported-protocol-version') {
      this.#limiter.warn(
        key,
        fields,
        'client refused: MQTT 5 and other protocol levels are not supported by the local broker (aedes speaks MQTT 3.1 and 3.1.1); connect with MQTT 3.1.1',
      )
    } else if (v.reason === 'unknown-packet-id') {
      this.#limiter.warn(key, fields, 'connection closed: acknowledgement of a packet id the session never used')
    } else if (v.limit) {
      this.#limiter.warn(key, fields, 'connection closed by limit')
    } else {
      this.#limiter.warn(key, fields, 'connection closed: protocol violation')
    }
  }

  /**
   * An mqtts listener: checks the client certificate after the handshake, then hands the socket to the guard and
   * aedes.
   */
  async #tlsServer(aedes: Aedes, l: ListenerOptions): Promise<TlsServer> {
    const requireClientCert = l.requireClientCert ?? true
    let material: TlsMaterial
    let own: Partial<TlsMaterial>
    try {
      own = await readListenerFiles(l)
      const gateway = l.serverCertificate === 'acme' ? this.#opts.serverCertificate?.() : undefined
      if (gateway !== undefined) own = { ...own, cert: gateway.cert, key: gateway.key }
      material = mergeMaterial(
        own,
        l.certFile !== undefined && l.keyFile !== undefined && l.caFile !== undefined ? undefined : this.#opts.tls?.(),
      )
    } catch (err) {
      throw new LocalBrokerError(
        'EDGE_ERR_BROKER_TLS',
        `mqtts listener ${l.host}:${l.port}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      )
    }
    const server = createTlsServer({
      ...secureContextOptions(material),
      handshakeTimeout: this.#opts.limits.connectTimeoutMs,
    })
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
        isRevoked: (serial) => this.#sessions.isRevoked(serial),
        now: this.#sessions.now(),
      })
      if (!check.ok) {
        this.#tlsRefusal(check.reason, { remote, serial: check.serial, certificateCn: check.cn })
        socket.destroy()
        return
      }
      setPeerCertificate(socket, check.cert ?? null)
      socket.setNoDelay(true)
      this.#accept(aedes, l, socket, socket)
    })
    server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      // Handshakes cut by stop() are not the client's fault.
      if (this.#stopping !== undefined) return
      this.#tlsRefusal(classifyTlsError(err), {
        remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`,
        err: err.message,
      })
    })
    return server
  }

  #tlsRefusal(reason: TlsRefusal, fields: Record<string, unknown>): void {
    this.#counters.refuseTls(reason)
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
        this.#accept(aedes, l, socket, socket)
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
        handleProtocols: (protocols) =>
          protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false,
      })
      wss.on('error', (err) => this.#log.error({ err }, 'websocket server error'))
      wss.on('connection', (ws, req) => {
        const stream = createWebSocketStream(ws)
        stream.on('error', () => stream.destroy())
        this.#accept(aedes, l, stream, req.socket, req)
      })
      server = http
    }
    server.maxConnections = maxSockets
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        reject(
          new LocalBrokerError(
            'EDGE_ERR_BROKER_LISTEN_FAILED',
            `cannot listen on ${l.protocol}://${l.host}:${l.port}: ${err.message}`,
            {
              cause: err,
            },
          ),
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
    // Every accepted socket (raw TCP, also under TLS and WebSocket), so that
    // stop() can cut the ones that outlive its grace.
    const sockets = new Set<Socket>()
    server.on('connection', (socket: Socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    })
    this.#servers.push({
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve())
          if ('closeAllConnections' in server) server.closeAllConnections()
        }),
      destroyConnections: () => {
        for (const s of sockets) s.destroy()
      },
    })
  }
}
