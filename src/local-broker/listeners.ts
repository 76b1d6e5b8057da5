// The local broker's listeners (TCP, TLS, WebSocket): binding them, putting
// the packet guard in front of aedes for every accepted connection, checking
// a device's certificate after the TLS handshake and before any MQTT byte, and
// swapping TLS material in place. local-broker.ts owns the lifecycle and asks
// this part to bind at start and to close (or cut) its sockets at stop.
import { createServer as createTcpServer, type Server as TcpServer, type Socket, type AddressInfo } from 'node:net'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
import type { Aedes } from 'aedes'
import type { Logger } from 'pino'
import { LocalBrokerError } from './errors.js'
import { PacketGuard, type GuardViolation } from './packet-guard.js'
import { guardConnection } from './guard-connection.js'
import { MQTT5_CONNECT } from './guard-connect.js'
import { AckTracker, trackAcks } from './ack-tracker.js'
import type { LogLimiter } from './log-limiter.js'
import type { BrokerCounters } from './counters.js'
import { setPeerCertificate, type DeviceSessions } from './device-sessions.js'
import { setListenerPolicy } from './auth.js'
import type { BoundListener, ListenerOptions, LocalBrokerOptions, MqttVersion } from './options.js'
import {
  checkPeer,
  classifyTlsError,
  mergeMaterial,
  parseAnchors,
  readListenerFiles,
  secureContextOptions,
  type TlsMaterial,
  type TlsRefusal,
} from './tls.js'

const ALL_VERSIONS: readonly MqttVersion[] = ['3.1', '3.1.1', '5']

/** A listener as logs name it: protocol://host:port (the configured port). */
export function listenerName(l: ListenerOptions): string {
  return `${l.protocol}://${l.host}:${l.port}`
}

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

export interface ListenersOptions {
  /** The broker's options in force (limits change on reconfigure). */
  readonly options: () => LocalBrokerOptions
  readonly sessions: DeviceSessions
  readonly counters: BrokerCounters
  readonly limiter: LogLimiter
  readonly log: Logger
  /** True once the broker is stopping (handshakes cut then are not the client's fault). */
  readonly stopping: () => boolean
}

export class Listeners {
  readonly #o: ListenersOptions
  readonly #servers: { close(): Promise<void>; destroyConnections(): void }[] = []
  readonly #bound: BoundListener[] = []
  readonly #tlsListeners: TlsListener[] = []

  constructor(options: ListenersOptions) {
    this.#o = options
  }

  /** The addresses actually bound (port 0 resolved). */
  get bound(): readonly BoundListener[] {
    return this.#bound
  }

  /** Stops accepting; resolves once every listener has closed (its accepted sockets too). */
  close(): Promise<void>[] {
    return this.#servers.map((s) => s.close())
  }

  /** Cuts every socket still open (stop()'s grace is over). */
  destroyConnections(): void {
    for (const s of this.#servers) s.destroyConnections()
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
    if (swapped > 0) this.#o.log.info({ listeners: swapped }, 'tls material updated')
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
      t.server.setSecureContext(secureContextOptions(mergeMaterial(t.own, this.#o.options().tls?.())))
      swapped++
    }
    if (swapped > 0) this.#o.log.info({ listeners: swapped }, 'server certificate swapped')
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
    const mqttVersions = l.mqttVersions ?? ALL_VERSIONS
    setListenerPolicy(conn, {
      allowAnonymous: l.allowAnonymous ?? true,
      useIdentityAsUsername: l.useIdentityAsUsername ?? false,
      remoteAddress,
      mqttVersions,
      listener: listenerName(l),
      versionsKey: this.#versionsKey(l),
    })
    this.#o.counters.connectionsTotal++
    const acks = new AckTracker()
    const guard = new PacketGuard(
      {
        preConnectMaxBytes: this.#o.options().limits.preConnectMaxBytes,
        maxPayloadBytes: this.#o.options().limits.maxPayloadBytes,
      },
      acks,
    )
    trackAcks(conn, acks)
    guardConnection(conn, guard, (v) => this.#onViolation(v, remote, l), { mqtt5: mqttVersions.includes('5') })
    aedes.handle(conn, req)
  }

  /** Where a listener's mqttVersions is configured, as a config key path. */
  #versionsKey(l: ListenerOptions): string {
    const i = this.#o.options().listeners.indexOf(l)
    return `broker.listeners[${i < 0 ? '?' : i}].mqttVersions`
  }

  #onViolation(v: GuardViolation, remote: string, l: ListenerOptions): void {
    const key = v.limit ?? v.reason
    this.#o.counters.refuse(key)
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
    if (v.reason === 'unsupported-protocol-version' && v.detail === MQTT5_CONNECT) {
      // V5-STAND-DOWN: only reached for a listener whose mqttVersions leaves MQTT 5 out
      this.#o.limiter.warn(
        key,
        {
          ...fields,
          returnCode: 0x84,
          listener: listenerName(l),
          mqttVersion: '5',
          mqttVersions: l.mqttVersions,
          key: this.#versionsKey(l),
        },
        'client refused: MQTT version not accepted on this listener; add it to the listener mqttVersions to allow it',
      )
    } else if (v.reason === 'unsupported-protocol-version') {
      this.#o.limiter.warn(
        key,
        fields,
        'client refused: unknown MQTT protocol level; the local broker speaks MQTT 3.1, 3.1.1 and 5',
      )
    } else if (v.reason === 'unknown-packet-id') {
      this.#o.limiter.warn(key, fields, 'connection closed: acknowledgement of a packet id the session never used')
    } else if (v.limit) {
      this.#o.limiter.warn(key, fields, 'connection closed by limit')
    } else {
      this.#o.limiter.warn(key, fields, 'connection closed: protocol violation')
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
      const gateway = l.serverCertificate === 'acme' ? this.#o.options().serverCertificate?.() : undefined
      if (gateway !== undefined) own = { ...own, cert: gateway.cert, key: gateway.key }
      material = mergeMaterial(
        own,
        l.certFile !== undefined && l.keyFile !== undefined && l.caFile !== undefined
          ? undefined
          : this.#o.options().tls?.(),
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
      handshakeTimeout: this.#o.options().limits.connectTimeoutMs,
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
        isRevoked: (serial) => this.#o.sessions.isRevoked(serial),
        now: this.#o.sessions.now(),
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
      if (this.#o.stopping()) return
      this.#tlsRefusal(classifyTlsError(err), {
        remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`,
        err: err.message,
      })
    })
    return server
  }

  #tlsRefusal(reason: TlsRefusal, fields: Record<string, unknown>): void {
    this.#o.counters.refuseTls(reason)
    this.#o.limiter.warn(`tls:${reason}`, { ...fields, reason }, 'tls connection refused')
  }

  /** Binds one listener; throws EDGE_ERR_BROKER_LISTEN_FAILED (or _TLS) when it cannot. */
  async listen(aedes: Aedes, l: ListenerOptions): Promise<void> {
    const maxSockets =
      this.#o.options().limits.maxConnections + Math.max(64, Math.ceil(this.#o.options().limits.maxConnections / 10))
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
        maxPayload: this.#o.options().limits.maxPayloadBytes + 65536 + 16,
        handleProtocols: (protocols) =>
          protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false,
      })
      wss.on('error', (err) => this.#o.log.error({ err }, 'websocket server error'))
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
    server.on('error', (err) => this.#o.log.error({ err, listener: l }, 'listener error'))
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
