// The two packets the bridge's hot path writes and reads thousands of times a
// second, encoded and framed here instead of by mqtt-packet.
//
// Why: mqtt-packet's writeToStream writes a PUBLISH as 8-12 separate chunks
// (header, each length, topic, each property...), each one a buffered request
// in the corked stream, plus a debug() call per field; its parser runs every
// 4-byte PUBACK through a BufferList. On the bridge benchmark that was a
// large share of all the agent allocated, and of its CPU in GC
// (docs/benchmarks.md, "Figures behind choices in the code").
//
// Scope: PUBLISH (MQTT 3.1.1 and 5, with the properties the bridge sets) and
// the four acknowledgements. Anything else, or a PUBLISH carrying a property
// not listed here, stays with mqtt-packet (encodePublish returns undefined).
import type { IPublishPacket } from 'mqtt-packet'

export type AckType = 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'

const ACK_HEADER: Record<AckType, number> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 }

/** First byte of an acknowledgement from the upstream → its type (PUBREL has flags 0b0010 [MQTT-3.6.1-1]). */
export const INBOUND_ACK: ReadonlyMap<number, AckType> = new Map([
  [0x40, 'puback'],
  [0x50, 'pubrec'],
  [0x62, 'pubrel'],
  [0x70, 'pubcomp'],
])

/**
 * PUBACK / PUBREC / PUBREL / PUBCOMP. Reason code 0 is left out (MQTT 5
 * allows it [MQTT-3.4.2-1]; 3.1.1 has none), so success is 4 bytes in both.
 */
export function encodeAck(type: AckType, messageId: number, reasonCode = 0, protocolVersion: 4 | 5 = 4): Buffer {
  const withCode = protocolVersion === 5 && reasonCode !== 0
  const buf = Buffer.allocUnsafe(withCode ? 5 : 4)
  buf[0] = ACK_HEADER[type]
  buf[1] = withCode ? 3 : 2
  buf.writeUInt16BE(messageId, 2)
  if (withCode) buf[4] = reasonCode
  return buf
}

type PublishProperties = NonNullable<IPublishPacket['properties']>

const KNOWN_PROPERTIES = new Set([
  'payloadFormatIndicator',
  'messageExpiryInterval',
  'contentType',
  'responseTopic',
  'correlationData',
  'userProperties',
])

/**
 * One PUBLISH as one Buffer, or undefined when it carries a property this
 * encoder does not write (the caller then uses mqtt-packet).
 */
export function encodePublish(p: IPublishPacket, protocolVersion: 4 | 5): Buffer | undefined {
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload
  const topicLen = Buffer.byteLength(p.topic)
  let propsLen = 0
  const props = protocolVersion === 5 ? p.properties : undefined
  if (props !== undefined) {
    for (const key in props) if (!KNOWN_PROPERTIES.has(key)) return undefined
    propsLen = propertiesLength(props)
  }
  let remaining = 2 + topicLen + (p.qos > 0 ? 2 : 0) + payload.length
  if (protocolVersion === 5) remaining += varIntSize(propsLen) + propsLen
  const buf = Buffer.allocUnsafe(1 + varIntSize(remaining) + remaining)
  buf[0] = 0x30 | (p.dup ? 0x08 : 0) | (p.qos << 1) | (p.retain ? 1 : 0)
  let o = writeVarInt(buf, 1, remaining)
  o = writeString(buf, o, p.topic, topicLen)
  if (p.qos > 0) o = buf.writeUInt16BE(p.messageId ?? 0, o)
  if (protocolVersion === 5) {
    o = writeVarInt(buf, o, propsLen)
    if (props !== undefined) o = writeProperties(buf, o, props)
  }
  payload.copy(buf, o)
  return buf
}

function propertiesLength(p: PublishProperties): number {
  let n = 0
  if (p.payloadFormatIndicator !== undefined) n += 2
  if (p.messageExpiryInterval !== undefined) n += 5
  if (p.contentType !== undefined) n += 3 + Buffer.byteLength(p.contentType)
  if (p.responseTopic !== undefined) n += 3 + Buffer.byteLength(p.responseTopic)
  if (p.correlationData !== undefined) n += 3 + p.correlationData.length
  const user = p.userProperties
  if (user !== undefined) {
    for (const key in user) {
      const v = user[key] as string | string[]
      const keyLen = Buffer.byteLength(key)
      if (typeof v === 'string') n += 5 + keyLen + Buffer.byteLength(v)
      else for (const one of v) n += 5 + keyLen + Buffer.byteLength(one)
    }
  }
  return n
}

function writeProperties(buf: Buffer, o: number, p: PublishProperties): number {
  if (p.payloadFormatIndicator !== undefined) {
    buf[o++] = 0x01
    buf[o++] = p.payloadFormatIndicator ? 1 : 0
  }
  if (p.messageExpiryInterval !== undefined) {
    buf[o++] = 0x02
    o = buf.writeUInt32BE(p.messageExpiryInterval, o)
  }
  if (p.contentType !== undefined) {
    buf[o++] = 0x03
    o = writeString(buf, o, p.contentType, Buffer.byteLength(p.contentType))
  }
  if (p.responseTopic !== undefined) {
    buf[o++] = 0x08
    o = writeString(buf, o, p.responseTopic, Buffer.byteLength(p.responseTopic))
  }
  if (p.correlationData !== undefined) {
    buf[o++] = 0x09
    o = buf.writeUInt16BE(p.correlationData.length, o)
    o += p.correlationData.copy(buf, o)
  }
  const user = p.userProperties
  if (user !== undefined) {
    for (const key in user) {
      const v = user[key] as string | string[]
      const keyLen = Buffer.byteLength(key)
      if (typeof v === 'string') o = writeUserProperty(buf, o, key, keyLen, v)
      else for (const one of v) o = writeUserProperty(buf, o, key, keyLen, one)
    }
  }
  return o
}

function writeUserProperty(buf: Buffer, o: number, key: string, keyLen: number, value: string): number {
  buf[o++] = 0x26
  o = writeString(buf, o, key, keyLen)
  return writeString(buf, o, value, Buffer.byteLength(value))
}

function writeString(buf: Buffer, o: number, s: string, byteLength: number): number {
  o = buf.writeUInt16BE(byteLength, o)
  return o + buf.write(s, o, byteLength, 'utf8')
}

function varIntSize(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
}

function writeVarInt(buf: Buffer, o: number, n: number): number {
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    buf[o++] = byte
  } while (n > 0)
  return o
}

/**
 * Splits a byte stream into whole MQTT packets. `onPacket` gets the buffer
 * and the packet's bounds in it (no copy, no object per packet); what is
 * left of a packet cut across reads is kept for the next push().
 */
export class PacketFramer {
  /** Bytes of a packet cut across reads, and how many the packet needs in all (0: not known yet). */
  #parts: Buffer[] = []
  #partsLength = 0
  #need = 0

  /** Throws MalformedLengthError on a Remaining Length of more than 4 bytes [MQTT-1.5.5]. */
  push(chunk: Buffer, onPacket: (buf: Buffer, start: number, end: number) => void): void {
    let buf = chunk
    if (this.#parts.length > 0) {
      this.#parts.push(chunk)
      this.#partsLength += chunk.length
      // A large packet arriving in many reads is joined once, not once per read.
      if (this.#partsLength < this.#need) return
      buf = Buffer.concat(this.#parts, this.#partsLength)
      this.#parts = []
      this.#partsLength = 0
      this.#need = 0
    }
    let o = 0
    while (o + 2 <= buf.length) {
      let len = 0
      let mul = 1
      let i = o + 1
      let complete = false
      for (; i < buf.length && i <= o + 4; i++) {
        const b = buf[i] as number
        len += (b & 0x7f) * mul
        mul *= 128
        if ((b & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete) {
        if (i > o + 4) throw new MalformedLengthError()
        break
      }
      const end = i + 1 + len
      if (end > buf.length) {
        this.#need = end - o
        break
      }
      onPacket(buf, o, end)
      o = end
    }
    if (o < buf.length) {
      // Copied out so that a partial packet does not pin the whole read buffer.
      const rest = Buffer.from(buf.subarray(o))
      this.#parts.push(rest)
      this.#partsLength = rest.length
    }
  }
}

export class MalformedLengthError extends Error {
  constructor() {
    super('malformed Remaining Length (more than 4 bytes)')
    this.name = 'MalformedLengthError'
  }
}
