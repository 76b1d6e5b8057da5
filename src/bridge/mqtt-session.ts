// One MQTT client session toward an upstream, carried over successive
// connections (MQTT 3.1.1 or 5), on mqtt-packet.
//
// Why not mqtt.js: its client replays its outgoing store one packet per
// acknowledgement and emits 'connect' only after the whole replay is acked
// (mqtt.js 5.16 client.js, startStreamProcess), so a reconnect over a
// long-latency link stalls for window × RTT; it keeps an offline queue and an
// outgoing store of its own beside ours; and it cannot set the MQTT 3.1.1
// bridge bit. The buffer (SQLite) is the source of truth here, and this
// session holds only the in-flight window.
//
// Invariants
// 1. In flight: a QoS 1/2 message stays in `#inflight` from its PUBLISH until
//    PUBACK / PUBCOMP (or an error reason code); its callback runs exactly
//    once, then. Nothing else is ever buffered here: publish() requires an
//    open connection and a free slot of the window.
// 2. Order: messages are written in publish() order; after a reconnect the
//    in-flight ones are resent first, in their original order, with their
//    original packet ids and DUP set when the session was resumed
//    [MQTT-4.4.0-1] (v5) / [MQTT-4.4.0-1] (3.1.1), as new publishes when it
//    was not. So duplicates after a link reset are at most the window.
// 3. Inbound: messages are handed to `onMessage` one at a time; PUBACK /
//    PUBREC go out only after it resolved, in arrival order
//    [MQTT-4.6.0-2]. A failed local delivery closes the connection, so the
//    upstream redelivers. QoS 2 inbound is delivered once per packet id
//    until PUBREL (method B of [MQTT-4.3.3]).
// 4. Liveness: a PINGREQ goes out when nothing was heard for ¾ keepalive, and
//    the connection is declared dead when nothing was heard for 1½ keepalive.
//
// Parts: mqtt-codec.ts (framing, the hot encoders), output-batch.ts (one write
// per tick), mqtt-inflight.ts (invariants 1-2: the in-flight window and its
// resend), mqtt-inbound.ts (invariant 3: the inbound delivery queue and QoS 2
// inbound state), keepalive.ts (invariant 4), mqtt-reasons.ts. This class
// keeps the connection: CONNECT / CONNACK, packet ids, dispatch, teardown.
import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import mqttPacket, {
  type IConnackPacket,
  type IConnectPacket,
  type IPublishPacket,
  type ISubscription,
  type Packet,
} from 'mqtt-packet'
import type { Logger } from 'pino'
import { BridgeError } from './errors.js'
import { INBOUND_ACK, MalformedLengthError, PacketFramer, encodeAck, encodePublish } from './mqtt-codec.js'
import { connackText, disconnectText } from './mqtt-reasons.js'
import { OutputBatch } from './output-batch.js'
import { Keepalive } from './keepalive.js'
import { MqttInbound, type InboundMessage } from './mqtt-inbound.js'
import { InflightWindow, type PublishCallback } from './mqtt-inflight.js'

export { isTransientReason } from './mqtt-reasons.js'
export type { InboundMessage } from './mqtt-inbound.js'
export type { PublishCallback } from './mqtt-inflight.js'

export type ProtocolVersion = 4 | 5

export interface WillMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
}

export interface MqttSessionOptions {
  readonly protocolVersion: ProtocolVersion
  readonly clientId: string
  readonly username?: string | undefined
  readonly password?: Buffer | undefined
  /** Seconds; 0 disables keepalive. */
  readonly keepaliveSec: number
  /** false resumes the upstream session (subscriptions, queued messages). */
  readonly cleanStart: boolean
  /** MQTT 5 Session Expiry Interval, seconds. */
  readonly sessionExpirySec: number
  readonly will?: WillMessage | undefined
  /** MQTT 3.1.1 only: set bit 7 of the protocol level (Mosquitto bridges' try_private). */
  readonly bridgeFlag: boolean
  /** CONNECT → CONNACK deadline, ms. */
  readonly connectTimeoutMs: number
  /** Our own in-flight cap; the window is min(this, the upstream's Receive Maximum). */
  readonly maxInflight: number
  /** Local delivery of an inbound message; the ack waits for it. */
  readonly onMessage: (msg: InboundMessage) => Promise<void>
  readonly logger: Logger
  readonly now?: () => number
}

export interface OutboundMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  readonly properties?: IPublishPacket['properties']
  /** Epoch ms the message expires at: a resend recomputes its Message Expiry Interval, or is not made. */
  readonly expiresAt?: number | null
}

export interface ConnectInfo {
  readonly sessionPresent: boolean
  /** min(maxInflight, upstream Receive Maximum) */
  readonly window: number
  readonly receiveMaximum: number
  readonly maximumQoS: 0 | 1 | 2
  readonly retainAvailable: boolean
  /** Largest packet the upstream accepts, bytes (MQTT 5); Infinity if not limited. */
  readonly maximumPacketSize: number
  readonly keepaliveSec: number
  readonly assignedClientId: string | undefined
  /** In-flight messages resent on this connection. */
  readonly resent: number
}

interface PendingSubscribe {
  readonly resolve: (granted: number[]) => void
  readonly reject: (err: Error) => void
}

export interface MqttSessionEvents {
  /** The connection ended (err: why; undefined after our own disconnect()). */
  close: [err: Error | undefined]
  /** The transport's write buffer emptied (see `writable`). */
  drain: []
}

export class MqttSession extends EventEmitter<MqttSessionEvents> {
  readonly #o: MqttSessionOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #inflight: InflightWindow
  readonly #subscribes = new Map<number, PendingSubscribe>()
  #nextId = 1
  #stream: Duplex | null = null
  #connected = false
  #info: ConnectInfo | null = null
  readonly #keepalive: Keepalive
  readonly #inbound: MqttInbound
  /** Set by disconnect(): the close that follows is ours, not an error. */
  #ending = false
  #password: Buffer | undefined
  #writeOpts: { protocolVersion: ProtocolVersion }
  /** Packets written this tick, sent together at its end. */
  readonly #out = new OutputBatch(() => this.#stream)

  constructor(options: MqttSessionOptions) {
    super()
    this.#o = options
    this.#log = options.logger
    this.#now = options.now ?? Date.now
    this.#writeOpts = { protocolVersion: options.protocolVersion }
    this.#password = options.password
    this.#keepalive = new Keepalive(this.#now)
    this.#inflight = new InflightWindow(
      (stream, packet) => this.#write(stream, packet),
      options.protocolVersion,
      this.#log,
    )
    this.#inbound = new MqttInbound({
      onMessage: options.onMessage,
      write: (stream, packet) => this.#write(stream, packet),
      fail: (stream, err) => this.#teardown(stream, err),
      logger: options.logger,
    })
  }

  /** Password for the next CONNECT (read from a file by the caller at each attempt). */
  setPassword(password: Buffer | undefined): void {
    this.#password = password
  }

  get connected(): boolean {
    return this.#connected
  }

  get info(): ConnectInfo | null {
    return this.#info
  }

  /** QoS 1/2 messages awaiting their acknowledgement (across connections). */
  get inflight(): number {
    return this.#inflight.size
  }

  /** False while the transport holds more than 1 MiB unsent (QoS 0 has no window); wait for 'drain'. */
  get writable(): boolean {
    const s = this.#stream
    return s !== null && this.#connected && s.writableLength + this.#out.bytes < 1_048_576
  }

  /** Free slots of the window now (0 while disconnected). */
  get quota(): number {
    if (!this.#connected || this.#info === null) return 0
    return Math.max(0, this.#info.window - this.#inflight.size)
  }

  /**
   * Runs CONNECT / CONNACK over an open transport, then resends what was in
   * flight. Rejects (and destroys the stream) on refusal, timeout or close.
   */
  connect(stream: Duplex): Promise<ConnectInfo> {
    if (this.#stream !== null) throw new BridgeError('EDGE_ERR_BRIDGE_PROTOCOL', 'session already has a connection')
    this.#stream = stream
    this.#ending = false
    const o = this.#o
    const parser = mqttPacket.parser({ protocolVersion: o.protocolVersion })
    const framer = new PacketFramer()
    return new Promise<ConnectInfo>((resolve, reject) => {
      let settled = false
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        reject(err)
        this.#teardown(stream, err)
      }
      const timer = setTimeout(
        () => fail(new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', `no CONNACK within ${o.connectTimeoutMs} ms`)),
        o.connectTimeoutMs,
      )
      const malformed = (err: Error): void => {
        const e = new BridgeError('EDGE_ERR_BRIDGE_PROTOCOL', `malformed packet from upstream: ${err.message}`, {
          cause: err,
        })
        if (!settled) fail(e)
        else this.#teardown(stream, e)
      }
      parser.on('error', malformed)
      parser.on('packet', (packet: Packet) => {
        if (this.#stream !== stream) return
        this.#keepalive.heard()
        if (!settled) {
          if (packet.cmd !== 'connack') {
            fail(
              new BridgeError(
                'EDGE_ERR_BRIDGE_PROTOCOL',
                `expected CONNACK, got ${packet.cmd.toUpperCase()} [MQTT-3.2.0-1]`,
              ),
            )
            return
          }
          const refusal = connackRefusal(o.protocolVersion, packet)
          if (refusal !== undefined) {
            fail(refusal)
            return
          }
          settled = true
          clearTimeout(timer)
          resolve(this.#onConnack(stream, packet))
          return
        }
        this.#handle(stream, packet)
      })
      // Whole packets only reach the parser; the acknowledgements of our own
      // publishes (most of what arrives) are read here without it.
      const onPacket = (buf: Buffer, start: number, end: number): void => {
        if (settled && end - start === 4 && buf[start + 1] === 2 && this.#stream === stream) {
          const type = INBOUND_ACK.get(buf[start] as number)
          if (type !== undefined && type !== 'pubrel') {
            this.#keepalive.heard()
            this.#inflight.onAck(stream, type, buf.readUInt16BE(start + 2), 0)
            return
          }
        }
        parser.parse(buf.subarray(start, end))
      }
      stream.on('data', (chunk: Buffer) => {
        try {
          framer.push(chunk, onPacket)
        } catch (err) {
          if (err instanceof MalformedLengthError) malformed(err)
          else throw err
        }
      })
      stream.on('error', (err: Error) => {
        const e =
          err instanceof BridgeError
            ? err
            : new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', err.message, { cause: err })
        if (!settled) fail(e)
        else this.#teardown(stream, e)
      })
      const closed = (): void => {
        const e = this.#ending
          ? undefined
          : new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'connection closed by the upstream')
        if (!settled) fail(e ?? new BridgeError('EDGE_ERR_BRIDGE_STOPPED', 'disconnected before CONNACK'))
        else this.#teardown(stream, e)
      }
      stream.on('close', closed)
      // A FIN from the upstream ends the session as a close would (a stream
      // that allows half-open connections would otherwise linger).
      stream.on('end', closed)
      stream.on('drain', () => {
        if (this.#stream === stream) this.emit('drain')
      })

      const connect = connectPacket(o, this.#password)
      this.#write(stream, connect)
    })
  }

  #onConnack(stream: Duplex, packet: IConnackPacket): ConnectInfo {
    const o = this.#o
    const p = packet.properties ?? {}
    const sessionPresent = packet.sessionPresent && !o.cleanStart
    const receiveMaximum = p.receiveMaximum ?? 65535
    const keepaliveSec = p.serverKeepAlive ?? o.keepaliveSec
    if (!sessionPresent) this.#inbound.sessionLost()
    this.#connected = true
    // Resend what was in flight, in order, before anything new [MQTT-4.4.0-1].
    const { resent, expired } = this.#inflight.resend(stream, sessionPresent, this.#now())
    const info: ConnectInfo = {
      sessionPresent,
      window: Math.max(1, Math.min(o.maxInflight, receiveMaximum)),
      receiveMaximum,
      maximumQoS: (p.maximumQoS ?? 2) as 0 | 1 | 2,
      retainAvailable: p.retainAvailable ?? true,
      maximumPacketSize: p.maximumPacketSize ?? Infinity,
      keepaliveSec,
      assignedClientId: p.assignedClientIdentifier,
      resent,
    }
    this.#info = info
    this.#startKeepalive(stream, keepaliveSec)
    for (const cb of expired) {
      cb(new BridgeError('EDGE_ERR_BRIDGE_EXPIRED', 'message expired before it could be sent again'), 0)
    }
    return info
  }

  /**
   * Sends one message. QoS 0: written, callback at once. QoS 1/2: callback on
   * PUBACK / PUBCOMP, on an error reason code, or with EDGE_ERR_BRIDGE_STOPPED
   * from abandonInflight(). Throws if not connected (callers check quota).
   */
  publish(msg: OutboundMessage, cb: PublishCallback): void {
    const stream = this.#stream
    if (!this.#connected || stream === null) throw new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'not connected')
    const info = this.#info
    const packet: IPublishPacket = {
      cmd: 'publish',
      topic: msg.topic,
      payload: msg.payload,
      qos: msg.qos,
      retain: msg.retain,
      dup: false,
    }
    if (this.#o.protocolVersion === 5 && msg.properties !== undefined) packet.properties = msg.properties
    if (msg.qos > 0) packet.messageId = this.#allocateId()
    const bytes = encodePacket(packet, this.#writeOpts)
    // Checked on the bytes as sent [MQTT-3.1.2-24]. An id not put in flight stays free.
    if (info !== null && bytes.length > info.maximumPacketSize) {
      cb(
        new BridgeError('EDGE_ERR_BRIDGE_UPSTREAM_REJECTED', 'message larger than the upstream Maximum Packet Size', {
          reasonCode: 0x95,
        }),
        0x95,
      )
      return
    }
    if (msg.qos === 0) {
      this.#out.push(bytes)
      cb(undefined, 0)
      return
    }
    this.#inflight.add(packet, cb, msg.expiresAt ?? null)
    this.#out.push(bytes)
  }

  /** Subscribes; resolves with the granted QoS / reason code per filter (≥ 0x80 = refused). */
  subscribe(subscriptions: ISubscription[]): Promise<number[]> {
    const stream = this.#stream
    if (!this.#connected || stream === null)
      return Promise.reject(new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'not connected'))
    const subs = this.#o.protocolVersion === 5 ? subscriptions : subscriptions.map(({ topic, qos }) => ({ topic, qos }))
    const id = this.#allocateId()
    return new Promise<number[]>((resolve, reject) => {
      this.#subscribes.set(id, { resolve, reject })
      this.#write(stream, { cmd: 'subscribe', messageId: id, subscriptions: subs })
    })
  }

  /**
   * Graceful end: DISCONNECT and close. With `withWill` (MQTT 5), reason 0x04
   * asks the upstream to publish the Will anyway. In-flight entries stay, for
   * a later connection or abandonInflight().
   */
  async disconnect(opts: { withWill?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const stream = this.#stream
    if (stream === null) return
    if (this.#connected) {
      const packet: Packet =
        this.#o.protocolVersion === 5
          ? { cmd: 'disconnect', reasonCode: opts.withWill === true ? 0x04 : 0x00 }
          : { cmd: 'disconnect' }
      this.#write(stream, packet)
      this.#out.flush()
    }
    this.#connected = false
    this.#ending = true
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        stream.destroy()
        resolve()
      }, opts.timeoutMs ?? 2_000)
      stream.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
      stream.end()
    })
    this.#teardown(stream, undefined)
  }

  /** Abrupt end of the current connection (e.g. keepalive timeout). */
  destroy(err?: Error): void {
    const stream = this.#stream
    if (stream === null) return
    this.#teardown(stream, err ?? new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'connection destroyed'))
  }

  /**
   * Gives up every in-flight message (bridge stopping): each callback gets EDGE_ERR_BRIDGE_STOPPED. Returns how many.
   */
  abandonInflight(): number {
    return this.#inflight.abandon()
  }

  // ---------------------------------------------------------------------------

  #allocateId(): number {
    for (let i = 0; i < 65535; i++) {
      const id = this.#nextId
      this.#nextId = id === 65535 ? 1 : id + 1
      if (!this.#inflight.has(id) && !this.#subscribes.has(id)) return id
    }
    // Unreachable while the window is below 65535 (it is capped at 65535 - 1 by the schema).
    throw new BridgeError('EDGE_ERR_BRIDGE_PROTOCOL', 'no free packet identifier')
  }

  #write(stream: Duplex, packet: Packet): void {
    if (stream.destroyed) return
    this.#out.push(encodePacket(packet, this.#writeOpts))
  }

  #handle(stream: Duplex, packet: Packet): void {
    switch (packet.cmd) {
      case 'puback':
      case 'pubrec':
      case 'pubcomp':
        this.#inflight.onAck(stream, packet.cmd, packet.messageId ?? 0, packet.reasonCode ?? 0)
        return
      case 'suback': {
        const pending = this.#subscribes.get(packet.messageId ?? 0)
        if (pending === undefined) return
        this.#subscribes.delete(packet.messageId ?? 0)
        pending.resolve((packet.granted as number[]).map((g) => (typeof g === 'number' ? g : 0x80)))
        return
      }
      case 'publish':
        this.#inbound.publish(stream, packet)
        return
      case 'pubrel':
        this.#inbound.pubrel(stream, packet.messageId ?? 0)
        return
      case 'pingresp':
        return
      case 'disconnect': {
        const code = packet.reasonCode ?? 0
        this.#teardown(
          stream,
          new BridgeError('EDGE_ERR_BRIDGE_UPSTREAM_REJECTED', `upstream disconnected us (${disconnectText(code)})`, {
            reasonCode: code,
          }),
        )
        return
      }
      default:
        this.#teardown(
          stream,
          new BridgeError('EDGE_ERR_BRIDGE_PROTOCOL', `unexpected ${packet.cmd.toUpperCase()} from the upstream`),
        )
    }
  }

  #startKeepalive(stream: Duplex, keepaliveSec: number): void {
    this.#keepalive.start(keepaliveSec, {
      ping: () => {
        if (this.#stream === stream) this.#write(stream, { cmd: 'pingreq' })
      },
      dead: (silentMs) => {
        const why = `nothing heard from the upstream for ${Math.round(silentMs / 1000)} s (keepalive)`
        if (this.#stream === stream) this.#teardown(stream, new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', why))
      },
    })
  }

  #teardown(stream: Duplex, err: Error | undefined): void {
    if (this.#stream !== stream) return
    this.#stream = null
    this.#out.clear()
    const wasConnected = this.#connected || this.#info !== null
    this.#connected = false
    this.#info = null
    this.#keepalive.stop()
    this.#inbound.reset()
    const subErr = err ?? new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', 'disconnected')
    for (const s of this.#subscribes.values()) s.reject(subErr)
    this.#subscribes.clear()
    stream.removeAllListeners('data')
    stream.on('error', () => undefined)
    if (!stream.destroyed) stream.destroy()
    if (wasConnected) this.emit('close', err)
  }
}

/** CONNECT for this session: MQTT 5 with its Session Expiry, 3.1.1 with the bridge bit if asked. */
function connectPacket(o: MqttSessionOptions, password: Buffer | undefined): IConnectPacket {
  const connect: IConnectPacket & { bridgeMode?: boolean } = {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: o.protocolVersion,
    clean: o.cleanStart,
    clientId: o.clientId,
    keepalive: o.keepaliveSec,
  }
  if (o.username !== undefined) connect.username = o.username
  if (password !== undefined) connect.password = password
  if (o.will !== undefined) connect.will = { ...o.will }
  if (o.protocolVersion === 5) {
    connect.properties = { sessionExpiryInterval: o.sessionExpirySec }
  } else if (o.bridgeFlag) {
    connect.bridgeMode = true
  }
  return connect
}

/** The error for a CONNACK that refuses the connection, undefined when it accepts it. */
function connackRefusal(v: ProtocolVersion, packet: IConnackPacket): BridgeError | undefined {
  const code = v === 5 ? (packet.reasonCode ?? 0) : (packet.returnCode ?? 0)
  if (v === 5 ? code < 0x80 : code === 0) return undefined
  return new BridgeError(
    'EDGE_ERR_BRIDGE_UPSTREAM_REJECTED',
    `upstream refused the connection (${connackText(v, code)})`,
    {
      reasonCode: code,
    },
  )
}

/** The hot packets (PUBLISH, acks) by mqtt-codec.ts, the rest by mqtt-packet. */
function encodePacket(packet: Packet, opts: { protocolVersion: ProtocolVersion }): Buffer {
  const v = opts.protocolVersion
  let buf: Buffer | undefined
  if (packet.cmd === 'publish') buf = encodePublish(packet, v)
  else if (packet.cmd === 'puback' || packet.cmd === 'pubrec' || packet.cmd === 'pubrel' || packet.cmd === 'pubcomp') {
    if (packet.properties === undefined) buf = encodeAck(packet.cmd, packet.messageId ?? 0, packet.reasonCode ?? 0, v)
  }
  return buf ?? mqttPacket.generate(packet, opts)
}
