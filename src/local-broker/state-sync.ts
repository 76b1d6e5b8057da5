// PUBACKs held until the broker state they stand for is durable. aedes sends
// a QoS 1 PUBACK before it stores the message (retained message, copies for
// offline persistent sessions); with a StateSync the connection is corked when
// such a publish is authorized, and uncorked once aedes stored it (its chain
// emits 'publish' last) and the store was synced: a power cut after the PUBACK
// cannot take what it acknowledged (test/integration/powercut/broker-state).
import type { Duplex } from 'node:stream'
import type { Client, PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { StateSync } from './options.js'

/** Never hold an ack for ever: past this the state is synced by the idle timer. */
const MAX_HOLD_MS = 5_000

export class AckGate {
  /** Held PUBACKs, by the publish's payload object (aedes' copy of the packet keeps it). */
  readonly #gates = new Map<unknown, () => void>()

  constructor(
    private readonly sync: StateSync,
    private readonly log: Logger,
  ) {}

  /** From authorizePublish, just before `done`: cork the connection so the PUBACK aedes writes next waits. */
  hold(client: Client, packet: PublishPacket): void {
    if (packet.qos === 0 || !this.sync.needed(packet)) return
    const conn = client.conn as Duplex
    // A backed-up socket makes aedes wait for 'drain' before it stores: corked, that never comes.
    if (conn.destroyed || conn.writableLength > conn.writableHighWaterMark / 2) return
    if (this.#gates.has(packet.payload)) return // a shared empty payload: cannot tell them apart
    conn.cork()
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      clearTimeout(timer)
      this.#gates.delete(packet.payload)
      if (!conn.destroyed) conn.uncork()
    }
    const timer = setTimeout(release, MAX_HOLD_MS)
    timer.unref()
    this.#gates.set(packet.payload, () => {
      this.sync.sync().then(release, (err: unknown) => {
        this.log.error({ err }, 'broker state sync failed')
        release()
      })
    })
  }

  /** aedes 'publish': the packet is stored; sync, then let its PUBACK out. */
  stored(packet: { readonly payload: unknown }): void {
    const open = this.#gates.get(packet.payload)
    if (open === undefined) return
    this.#gates.delete(packet.payload)
    open()
  }
}
