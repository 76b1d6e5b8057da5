// Which packet identifiers a client may acknowledge on its connection.
//
// MQTT 3.1.1 §4.3: a PUBACK or PUBREC answers a QoS 1/2 PUBLISH the broker
// sent, a PUBCOMP answers the broker's PUBREL, a PUBREL answers the broker's
// PUBREC. An acknowledgement of an identifier the session never used is a
// protocol violation, and [MQTT-4.8.0-1] says to close the connection; aedes
// 1.2 instead ignores an unknown PUBACK/PUBCOMP and answers an unknown PUBREC
// or PUBREL (lib/handlers/pubrec.js, pubrel.js).
//
// aedes keeps no per-connection record of the identifiers it sent (a clean
// session's QoS 1/2 deliveries never reach its persistence), and it sends from
// several places (deliveries, the resend of a persistent session, the PUBREL
// and PUBREC handlers) that all end in mqtt-packet's writeToStream. So the
// tracker reads the connection's outbound bytes, as the packet guard reads
// the inbound ones: it frames them, and records the identifier of each QoS 1/2
// PUBLISH, PUBREL and PUBREC the broker writes. Bytes are counted, never
// copied, except when a 2-byte field is split across two writes.
//
// Identifiers are remembered for the connection's lifetime, not only while in
// flight: a late duplicate acknowledgement of an identifier the broker did use
// (a client retransmit race) is tolerated, as Mosquitto tolerates it (it logs
// a warning and goes on); only identifiers never used are refused. Two bitsets
// of 8 KiB each, allocated on the first QoS 1/2 exchange, so an idle or
// QoS 0 connection costs a handful of numbers.
//
// MQTT 5 changes nothing here: a PUBLISH's properties follow its packet
// identifier, and acknowledgements carry their reason code and properties
// after it, so the identifier is read at the same place.
//
// Persistent sessions (cleanSession 0): the identifiers of the in-flight
// messages restored from the session are legitimate. The broker reads them
// from its persistence once CONNACK is sent (`restoring`); until that read
// ends (and between CONNECT and CONNACK) every acknowledgement is accepted.
// A PUBREL on a persistent session is always accepted: the client resends
// PUBREL after a reconnect [MQTT-4.4.0-1]
// and the broker must answer it with PUBCOMP [MQTT-4.3.3-2] even when the
// PUBCOMP it sent on the previous connection was lost and the id is gone.
import type { Duplex, Readable } from 'node:stream'
import { PUBLISH, PUBREC, PUBREL } from './packet-types.js'

// Outbound parser states
const O_TYPE = 0
const O_LENGTH = 1
const O_TOPIC_LENGTH = 2 // PUBLISH QoS 1/2: 2-byte topic length
const O_TOPIC = 3 // skipping the topic
const O_ID = 4 // 2-byte packet identifier
const O_SKIP = 5 // rest of the packet

const BITSET_BYTES = 65_536 / 8
const VARINT_WEIGHT = [1, 128, 16_384, 2_097_152]

export class AckTracker {
  /** Ids of QoS 1/2 PUBLISH and PUBREL the broker sent: answered by PUBACK, PUBREC, PUBCOMP. */
  #out: Uint8Array | null = null
  /** Ids of PUBREC the broker sent: answered by PUBREL. */
  #in: Uint8Array | null = null
  #persistent = false
  #restoring = false

  #state = O_TYPE
  #type = 0
  #remaining = 0
  #lengthBytes = 0
  #left = 0
  #qos = 0
  #topicLeft = 0
  #field = 0
  #fieldBytes = 0

  /**
   * The guard read a valid CONNECT. A persistent session's stored ids are not
   * known before CONNACK, so what a client pipelines behind such a CONNECT is
   * accepted; behind a clean session's CONNECT no id has been used yet.
   */
  connecting(persistent: boolean): void {
    this.sessionStarted(persistent)
  }

  /**
   * CONNACK 0 went out. For a persistent session, call `restored()` once the
   * session's stored in-flight ids have been passed to `used()`.
   */
  sessionStarted(persistent: boolean): void {
    this.#persistent = persistent
    this.#restoring = persistent
  }

  /** The restore of a persistent session's in-flight ids has ended (or failed). */
  restored(): void {
    this.#restoring = false
  }

  /** Marks `id` as sent by the broker in a QoS 1/2 PUBLISH or a PUBREL (e.g. restored from a persistent session). */
  used(id: number): void {
    if (id > 0 && id < 65_536) this.#out = mark(this.#out, id)
  }

  /** May the client send an acknowledgement of this type (4 to 7) with this id? */
  accepts(type: number, id: number): boolean {
    if (type === PUBREL) return this.#persistent || has(this.#in, id)
    if (this.#restoring) return true
    return has(this.#out, id)
  }

  /** Observes bytes the broker writes to the connection. */
  sent(chunk: string | Uint8Array, encoding?: BufferEncoding): void {
    if (typeof chunk === 'string') {
      // mqtt-packet writes topics (and string payloads) as strings: count them uncopied where no field is read
      const length = Buffer.byteLength(chunk, encoding)
      if (this.#state === O_SKIP && length <= this.#left) return this.#skipped(length)
      if (this.#state === O_TOPIC && length <= this.#topicLeft) return this.#topicSkipped(length)
      chunk = Buffer.from(chunk, encoding)
    }
    const n = chunk.length
    let i = 0
    while (i < n) {
      switch (this.#state) {
        case O_TYPE: {
          const b = chunk[i++]!
          this.#type = b >> 4
          this.#qos = (b >> 1) & 3
          this.#remaining = 0
          this.#lengthBytes = 0
          this.#state = O_LENGTH
          break
        }
        case O_LENGTH: {
          const b = chunk[i++]!
          this.#remaining += (b & 0x7f) * (VARINT_WEIGHT[this.#lengthBytes] ?? 0)
          this.#lengthBytes++
          if ((b & 0x80) === 0) this.#onLength()
          break
        }
        case O_TOPIC_LENGTH:
        case O_ID:
          this.#field = (this.#field << 8) | chunk[i++]!
          this.#left--
          if (++this.#fieldBytes === 2) this.#onField()
          break
        case O_TOPIC: {
          const take = Math.min(this.#topicLeft, n - i)
          i += take
          this.#topicSkipped(take)
          break
        }
        default: {
          const take = Math.min(this.#left, n - i)
          i += take
          this.#skipped(take)
        }
      }
    }
  }

  #onLength(): void {
    this.#left = this.#remaining
    this.#field = 0
    this.#fieldBytes = 0
    const type = this.#type
    if (type === PUBLISH && this.#qos !== 0 && this.#left >= 4) this.#state = O_TOPIC_LENGTH
    else if ((type === PUBREC || type === PUBREL) && this.#left >= 2) this.#state = O_ID
    else this.#state = this.#left === 0 ? O_TYPE : O_SKIP
  }

  #onField(): void {
    const value = this.#field
    this.#field = 0
    this.#fieldBytes = 0
    if (this.#state === O_TOPIC_LENGTH) {
      this.#topicLeft = value
      // a topic running past the packet is not ours to judge: count the packet out
      this.#state = value + 2 > this.#left ? O_SKIP : value === 0 ? O_ID : O_TOPIC
      return
    }
    if (this.#type === PUBREC) this.#in = mark(this.#in, value)
    else this.#out = mark(this.#out, value)
    this.#state = this.#left === 0 ? O_TYPE : O_SKIP
  }

  #topicSkipped(count: number): void {
    this.#topicLeft -= count
    this.#left -= count
    if (this.#topicLeft === 0) this.#state = O_ID
  }

  #skipped(count: number): void {
    this.#left -= count
    if (this.#left === 0) this.#state = O_TYPE
  }
}

function mark(set: Uint8Array | null, id: number): Uint8Array {
  const s = set ?? new Uint8Array(BITSET_BYTES)
  s[id >> 3]! |= 1 << (id & 7)
  return s
}

function has(set: Uint8Array | null, id: number): boolean {
  return set !== null && (set[id >> 3]! & (1 << (id & 7))) !== 0
}

const kTracker = Symbol('edge-agent.ackTracker')
type TrackedConnection = Duplex & { [kTracker]?: AckTracker }

/** Lets `tracker` see every byte written to `conn` (wraps its `write`). Install before `broker.handle(conn)`. */
export function trackAcks(conn: Duplex, tracker: AckTracker): void {
  const c = conn as TrackedConnection
  if (c[kTracker] !== undefined) throw new TypeError('connection is already tracked')
  c[kTracker] = tracker
  const write = c.write
  // Fixed parameters, not a rest array: this runs for every packet the broker sends.
  c.write = function trackedWrite(this: TrackedConnection, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    if (typeof chunk === 'string' || chunk instanceof Uint8Array) {
      tracker.sent(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined)
    }
    return (write as (chunk: unknown, encoding?: unknown, cb?: unknown) => boolean).call(this, chunk, encoding, cb)
  } as Duplex['write']
}

/** The tracker installed on `conn` by trackAcks. */
export function connectionAcks(conn: Duplex): AckTracker | undefined {
  return (conn as TrackedConnection)[kTracker]
}

interface OutgoingStore {
  outgoingStream?(client: unknown): Readable
}

/**
 * CONNACK 0 went out to `client`: starts its session in `tracker` and, for a
 * persistent session, marks the ids of the in-flight messages in the broker's
 * persistence (`store`, aedes's `persistence`) as used.
 *
 * aedes 2 (MQTT 5) sets `clean` from the Session Expiry Interval (will the
 * session outlive this connection) and keeps Clean Start in `_cleanStart`: a
 * CONNECT with Clean Start 0 may resume a stored session even when it asks
 * for expiry 0, so such a session counts as persistent here.
 */
export function restoreAcks(
  store: unknown,
  client: { clean: boolean; _cleanStart?: boolean },
  tracker: AckTracker,
): void {
  const persistent = !client.clean || client._cleanStart === false
  tracker.sessionStarted(persistent)
  if (!persistent) return
  let stream: Readable | undefined
  try {
    stream = (store as OutgoingStore | undefined)?.outgoingStream?.(client)
  } catch {
    stream = undefined
  }
  if (stream === undefined) {
    tracker.restored()
    return
  }
  const done = (): void => tracker.restored()
  stream.on('data', (p: { messageId?: unknown }) => {
    if (typeof p.messageId === 'number') tracker.used(p.messageId)
  })
  stream.once('end', done)
  stream.once('error', done)
  stream.once('close', done)
}
