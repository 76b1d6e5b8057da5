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
import { createServer as createTcpServer, type Server as TcpServer, type Socket, type AddressInfo } from 'node:net'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import { Aedes, type AedesOptions, type AuthenticateError, type Client, type PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import { LocalBrokerError } from './errors.js'
import { PacketGuard, guardConnection, connectionGuard, type GuardViolation } from './packet-guard.js'
import { LogLimiter } from './log-limiter.js'

export interface ListenerOptions {
  readonly protocol: 'mqtt' | 'ws'
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  /** WebSocket HTTP path, default '/mqtt'. */
  readonly path?: string
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
export type PublishInterceptor = (packet: Readonly<PublishPacket>, clientId: string) => Promise<void> | void

export interface LocalBrokerOptions {
  readonly listeners: readonly ListenerOptions[]
  readonly limits: BrokerLimitOptions
  readonly logger: Logger
  /** aedes persistence; default aedes' in-memory one. */
  readonly persistence?: unknown
  readonly onPublish?: PublishInterceptor
}

export interface BoundListener {
  readonly protocol: 'mqtt' | 'ws'
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
}

type RefusalReason = 'maxConnections' | 'keepaliveMinSec' | 'keepaliveMaxSec' | 'maxClientIdBytes'

const REFUSAL_CODES: Record<RefusalReason, AuthenticateError['returnCode']> = {
  maxConnections: 3, // server unavailable
  // MQTT 3.1.1 has no code for an unacceptable keepalive; Mosquitto answers
  // identifier rejected, and so do we, with a log line that says why.
  keepaliveMinSec: 2,
  keepaliveMaxSec: 2,
  maxClientIdBytes: 2,
}

const kRefusal = Symbol('edge-agent.refusal')
type AnnotatedClient = Client & { [kRefusal]?: RefusalReason }

export class LocalBroker {
  readonly name = 'local-broker'
  readonly #opts: LocalBrokerOptions
  readonly #log: Logger
  readonly #limiter: LogLimiter
  #aedes: Aedes | undefined
  #servers: { close(): Promise<void> }[] = []
  #bound: BoundListener[] = []
  #stopping: Promise<void> | undefined
  #connectionsTotal = 0
  #received = 0
  #delivered = 0
  readonly #refused = new Map<string, number>()

  constructor(opts: LocalBrokerOptions) {
    this.#opts = opts
    this.#log = opts.logger.child({ component: 'local-broker' })
    this.#limiter = new LogLimiter(this.#log)
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#aedes) return
    const { limits } = this.#opts
    const options: AedesOptions = {
      connectTimeout: limits.connectTimeoutMs,
      drainTimeout: limits.drainTimeoutMs,
      maxInflightInbound: limits.maxInflightPerClient,
      // MQTT 3.1 caps client ids at 23 characters; 3.1.1 lengths are ours to set.
      maxClientsIdLength: 23,
      maxTopicLevels: limits.maxTopicLevels,
      preConnect: (client, packet, done) => {
        const reason = this.#refusalFor(packet.keepalive ?? 0, packet.clientId)
        if (reason) (client as AnnotatedClient)[kRefusal] = reason
        done(null, true)
      },
      authenticate: (client, _username, _password, done) => {
        const reason = (client as AnnotatedClient)[kRefusal] ?? (this.#aedes !== undefined && this.#aedes.connectedClients >= limits.maxConnections ? 'maxConnections' : undefined)
        if (reason === undefined) return done(null, true)
        this.#count(reason)
        const err = Object.assign(new Error(`limit ${reason}`), { returnCode: REFUSAL_CODES[reason] }) as AuthenticateError
        this.#limiter.warn(reason, { clientId: client.id, limit: reason, value: this.#limitValue(reason), returnCode: err.returnCode }, 'connection refused by limit')
        done(err, false)
      },
      authorizePublish: (client, packet, done) => {
        if (client === null) return done(null)
        // Devices may not publish into the broker's own namespace (aedes#597).
        if (packet.topic.startsWith('$')) {
          this.#count('reservedTopic')
          this.#limiter.warn('reservedTopic', { clientId: client.id, topic: packet.topic.slice(0, 200) }, 'publish to a $ topic refused')
          return done(new Error('publishing to $ topics is not allowed'))
        }
        this.#received++
        const hold = this.#opts.onPublish?.(packet, client.id)
        if (hold === undefined) return done(null)
        hold.then(
          () => done(null),
          (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
        )
      },
      authorizeForward: (_client, packet) => {
        this.#delivered++
        return packet
      },
    }
    if (this.#opts.persistence !== undefined) options.persistence = this.#opts.persistence
    const aedes = await Aedes.createBroker(options)
    this.#aedes = aedes
    this.#watch(aedes)
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
    }
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
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

  #limitValue(reason: RefusalReason): number {
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
    aedes.on('client', (client) => this.#log.debug({ clientId: client.id }, 'client connected'))
    aedes.on('clientDisconnect', (client) => this.#log.debug({ clientId: client.id }, 'client disconnected'))
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

  async #listen(aedes: Aedes, l: ListenerOptions): Promise<void> {
    const maxSockets = this.#opts.limits.maxConnections + Math.max(64, Math.ceil(this.#opts.limits.maxConnections / 10))
    let server: TcpServer | HttpServer
    if (l.protocol === 'mqtt') {
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
    server.on('error', (err) => this.#log.error({ err, listener: l }, 'listener error'))
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
