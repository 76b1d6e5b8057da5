// The client's Maximum Packet Size on the way out. An MQTT 5 client may
// announce the largest packet it accepts; the server must not send a larger
// one, and discards such a message as if it had sent it [MQTT-3.1.2-24]
// [MQTT-3.1.2-25]. aedes 2 beta records the value (client.maximumPacketSize)
// but does not enforce it, so the broker's authorizeForward hook does.
import mqttPacket from 'mqtt-packet'

interface Forwarded {
  readonly topic: string
  readonly payload?: Buffer | string | Uint8Array
  readonly qos?: number
  readonly retain?: boolean
  readonly properties?: object
}

/** Bytes of a variable byte integer (MQTT 5 §1.5.5). */
function varintBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4
}

/** Whether `packet` sent to `client` would be larger than the client said it accepts. */
export function exceedsClientMaximum(client: object, packet: Forwarded): boolean {
  const max = (client as { maximumPacketSize?: number }).maximumPacketSize
  if (max === undefined) return false
  const p = packet.payload
  const payloadBytes = p === undefined ? 0 : typeof p === 'string' ? Buffer.byteLength(p) : p.length
  const qos = packet.qos ?? 0
  if (packet.properties === undefined || Object.keys(packet.properties).length === 0) {
    // topic length, topic, packet id, property length 0, payload
    const remaining = 2 + Buffer.byteLength(packet.topic) + (qos > 0 ? 2 : 0) + 1 + payloadBytes
    return 1 + varintBytes(remaining) + remaining > max
  }
  // With properties: encode once (the exact size; a rare path, only for a client that set a maximum).
  const bytes = mqttPacket.generate(
    {
      cmd: 'publish',
      topic: packet.topic,
      payload: (p ?? Buffer.alloc(0)) as Buffer,
      qos: qos as 0 | 1 | 2,
      retain: packet.retain ?? false,
      dup: false,
      ...(qos > 0 ? { messageId: 1 } : {}),
      properties: packet.properties,
    },
    { protocolVersion: 5 },
  )
  return bytes.length > max
}
