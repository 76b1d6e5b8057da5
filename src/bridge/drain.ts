// The drain of one upstream: buffer → upstream, and the upstream's acks back
// into the buffer. The only owner of the send window's state: the rows read
// ahead, the acks waiting to be written, the waiters for an empty window, and
// the rows the session gave up when the bridge stopped.
//
// Sending is eager: a slot freed by a PUBACK is refilled at once. Waiting for
// a larger chunk leaves the link idle between chunks: PUBACKs then trickle in
// behind delayed TCP ACKs and the upstream's Nagle (docs/benchmarks.md).
// Reading is batched: rows are taken from the store up to one window ahead
// and refilled when half of that is used, so the store is read once per half
// window instead of once per acknowledgement. Rows read ahead are in flight
// for the store (no other reader takes them) and keep their order: they go
// after the session's own resends and before anything taken later.
//
// Acknowledgements are written to the store in batches, once per turn of the
// event loop. A row leaves the store only once the upstream acknowledged it
// (or refused it for good, a counted drop): duplicates after a failure, never
// loss.
import type { Logger } from 'pino'
import type { MessageStore, StoredMessage } from '../buffer/index.js'
import type { EchoGuard } from './echo-guard.js'
import { isTransientReason } from './mqtt-reasons.js'
import type { ConnectInfo, MqttSession, OutboundMessage, ProtocolVersion } from './mqtt-session.js'
import type { TokenBucket } from './rate.js'
import type { UpstreamConnection } from './upstream-connection.js'

/** User properties on every message sent upstream over MQTT 5 (loop checks, end-to-end dedup). */
export const USER_PROP_VIA = 'edge-agent-via'
export const USER_PROP_ID = 'edge-agent-id'
const MAX_TAKE = 500

export interface DrainOptions {
  /** The store queue this drain empties (the upstream's name). */
  readonly queue: string
  readonly store: MessageStore
  readonly conn: UpstreamConnection
  readonly version: ProtocolVersion
  readonly agent: { readonly id: string; readonly site: string }
  /** False while forwarding must wait (loop detection undecided, or a loop). */
  readonly mayForward: () => boolean
  /** upstreams[].maxRatePerSec, when set. */
  readonly bucket: TokenBucket | undefined
  /** MQTT 3.1.1: messages of these rules are remembered by the echo guard. */
  readonly echoRules: ReadonlySet<string>
  readonly echo: EchoGuard
  /** A message the upstream refused for good (acknowledged in the store, counted). */
  readonly drop: (reason: 'too-large' | 'upstream-rejected', rule: string) => void
  readonly logger: Logger
  readonly now: () => number
}

export class Drain {
  readonly #o: DrainOptions
  readonly #conn: UpstreamConnection
  readonly #store: MessageStore
  #sent = 0
  #acked = 0
  #stopped = false
  #dirty = false
  #pumping = false
  #retryTimer: NodeJS.Timeout | undefined
  /** Rows taken from the store and not yet sent, in order (#ahead[#aheadHead] is next). */
  readonly #ahead: StoredMessage[] = []
  #aheadHead = 0
  /** Ids acknowledged upstream, to be deleted from the store in one batch. */
  #acks: number[] = []
  #ackScheduled = false
  #ackFlush: Promise<void> = Promise.resolve()
  /** Ids of in-flight rows the session gave up on stop (abandonInflight). */
  #abandoned: number[] = []
  #inflightWaiters: (() => void)[] = []

  constructor(options: DrainOptions) {
    this.#o = options
    this.#conn = options.conn
    this.#store = options.store
  }

  /** PUBLISH packets sent upstream (first sends). */
  get sent(): number {
    return this.#sent
  }

  /** Messages the upstream acknowledged. */
  get acked(): number {
    return this.#acked
  }

  /** Something changed (rows appended, a slot or the transport freed, forwarding allowed): send what can go. */
  kick(): void {
    this.#dirty = true
    if (!this.#pumping) void this.#pump()
  }

  /** The link went down: waiters for an empty window give up waiting. */
  disconnected(): void {
    this.#notifyInflight()
  }

  /** Stops sending and reading; what is in flight may still be acknowledged. */
  stop(): void {
    this.#stopped = true
    clearTimeout(this.#retryTimer)
  }

  /** Resolves once nothing is in flight, the link is down, or after `ms`. */
  waitInflightEmpty(ms: number): Promise<void> {
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

  /**
   * After the connection closed: rows read ahead and rows still in flight go
   * back to the store for the next start, pending acks are written. Returns
   * how many rows went back.
   */
  async close(): Promise<number> {
    const left = this.#unsentAhead()
    this.#conn.session.abandonInflight()
    for (const id of this.#abandoned) left.push(id)
    this.#abandoned = []
    this.#flushAcksNow()
    await this.#ackFlush
    if (left.length > 0) {
      await this.#store.release(left).catch((err: unknown) => {
        this.#o.logger.debug({ err }, 'release on stop failed (buffer already stopped)')
      })
    }
    return left.length
  }

  #canSend(): boolean {
    return !this.#stopped && this.#conn.session.connected && this.#o.mayForward()
  }

  /** Sends while the window has room, from rows read ahead of the window. */
  async #pump(): Promise<void> {
    this.#pumping = true
    let failed = false
    try {
      while (this.#dirty && this.#canSend()) {
        this.#dirty = false
        const session = this.#conn.session
        this.#sendAhead(session)
        const window = session.info?.window ?? 1
        const ahead = this.#ahead.length - this.#aheadHead
        if (ahead > window >> 1) break
        const batch = await this.#store.takeBatch(this.#o.queue, Math.min(MAX_TAKE, window - ahead))
        if (batch.length === 0) break
        for (const m of batch) this.#ahead.push(m)
        this.#dirty = true
      }
    } catch (err) {
      failed = true
      this.#o.logger.error({ err }, 'reading the buffer failed, retrying')
      this.#retryLater(1_000)
    } finally {
      this.#pumping = false
    }
    // A kick that came while the last read was pending (e.g. a row appended
    // while it found none) would otherwise wait for the next event: for QoS 0
    // there may be none.
    if (this.#dirty && !failed && this.#canSend()) queueMicrotask(() => this.kick())
  }

  /** Sends read-ahead rows while the window, the transport and the rate limit allow. */
  #sendAhead(session: MqttSession): void {
    const ahead = this.#ahead
    const bucket = this.#o.bucket
    let expired: StoredMessage[] | undefined
    const now = this.#o.now()
    while (this.#aheadHead < ahead.length && this.#canSend()) {
      const m = ahead[this.#aheadHead] as StoredMessage
      // Expired while read ahead (e.g. across an outage): never sent, on 3.1.1 too.
      if (m.expiresAt !== null && m.expiresAt <= now) {
        this.#aheadHead++
        ;(expired ??= []).push(m)
        continue
      }
      if (m.qos > 0 && session.quota === 0) break
      if (!session.writable) break
      if (bucket !== undefined && !bucket.tryTake()) {
        this.#retryLater(bucket.msUntilToken())
        break
      }
      this.#aheadHead++
      this.#send(m, now)
    }
    if (expired !== undefined) this.#dropExpired(expired)
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
    if (this.#retryTimer !== undefined || this.#stopped) return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      this.kick()
    }, ms)
    this.#retryTimer.unref()
  }

  /**
   * Rows that expired before they were sent: deleted and counted by the
   * store as drops 'expired', like the rows its own sweep and takeBatch drop.
   */
  #dropExpired(rows: readonly StoredMessage[]): void {
    this.#o.logger.debug({ rows: rows.length, rule: rows[0]?.rule }, 'messages expired before sending, dropped')
    const ids = rows.map((m) => m.id)
    this.#store.drop(ids, 'expired').catch(() => this.#store.release(ids).catch(() => undefined))
  }

  #send(m: StoredMessage, now: number): void {
    const session = this.#conn.session
    const info = session.info as ConnectInfo
    const msg: OutboundMessage = {
      topic: m.topic,
      payload: m.payload,
      qos: Math.min(m.qos, info.maximumQoS) as 0 | 1 | 2,
      retain: m.retain && info.retainAvailable,
      properties: this.#o.version === 5 ? this.#properties(m, now) : undefined,
      expiresAt: m.expiresAt,
    }
    if (this.#o.version === 4 && this.#o.echoRules.has(m.rule)) this.#o.echo.sent(m.topic, m.payload)
    this.#sent++
    session.publish(msg, (err, code) => {
      if (err === undefined) {
        this.#acked++
        this.#ackLater(m.id)
        return
      }
      if (err.code === 'EDGE_ERR_BRIDGE_STOPPED') {
        this.#abandoned.push(m.id)
        return
      }
      if (err.code === 'EDGE_ERR_BRIDGE_EXPIRED') {
        // In flight across an outage and expired before the resend.
        this.#dropExpired([m])
        return
      }
      if (isTransientReason(code)) {
        // e.g. quota exceeded: give it back and try again a little later.
        this.#store.release([m.id]).catch(() => undefined)
        this.#retryLater(1_000)
        return
      }
      this.#o.drop(code === 0x95 ? 'too-large' : 'upstream-rejected', m.rule)
      this.#o.logger.warn({ topic: m.topic, reasonCode: code, rule: m.rule }, 'upstream refused a message, dropped')
      // Through the store: deleted and counted in the same transaction, with a loss report.
      this.#store.drop([m.id], 'upstream-rejected').catch(() => this.#store.release([m.id]).catch(() => undefined))
    })
  }

  /**
   * The upstream PUBLISH's properties: the device's, unchanged, plus ours
   * (via, id), and what is left of the message's lifetime. A via already
   * there (a message from an agent below) is kept and ours added, so that
   * every agent on the way recognises the message as its own.
   */
  #properties(m: StoredMessage, now: number): NonNullable<OutboundMessage['properties']> {
    const user = Object.create(null) as Record<string, string | string[]>
    const p = m.properties
    const carried = p?.userProperties
    if (carried !== undefined) {
      for (const k of Object.keys(carried)) {
        const v = carried[k] as string | readonly string[]
        user[k] = typeof v === 'string' ? v : [...v]
      }
    }
    const via = user[USER_PROP_VIA]
    user[USER_PROP_VIA] =
      via === undefined
        ? this.#o.agent.id
        : typeof via === 'string'
          ? [via, this.#o.agent.id]
          : [...via, this.#o.agent.id]
    user[USER_PROP_ID] = `${this.#o.agent.site}/${m.id}`
    const props: NonNullable<OutboundMessage['properties']> = { userProperties: user }
    // Whole seconds, rounded up: never shorter than what is left (a row is not sent once expired).
    if (m.expiresAt !== null) props.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - now) / 1000))
    if (p === undefined) return props
    if (p.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = p.payloadFormatIndicator
    if (p.contentType !== undefined) props.contentType = p.contentType
    if (p.responseTopic !== undefined) props.responseTopic = p.responseTopic
    if (p.correlationData !== undefined) props.correlationData = toBuffer(p.correlationData)
    return props
  }

  #ackLater(id: number): void {
    this.#acks.push(id)
    if (!this.#ackScheduled) {
      this.#ackScheduled = true
      setImmediate(() => this.#flushAcksNow())
    }
    this.#notifyInflight()
    this.kick()
  }

  #flushAcksNow(): void {
    this.#ackScheduled = false
    if (this.#acks.length === 0) return
    const ids = this.#acks
    this.#acks = []
    this.#ackFlush = this.#store.ack(ids).catch((err: unknown) => {
      // The rows stay and are sent again later: duplicates, never loss.
      this.#o.logger.error({ err, rows: ids.length }, 'acknowledging rows in the buffer failed')
    })
  }

  #notifyInflight(): void {
    for (const w of [...this.#inflightWaiters]) w()
  }
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}
