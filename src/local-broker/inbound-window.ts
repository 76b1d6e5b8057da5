// Inbound QoS 2 state that aedes 1.2 bounded and cleaned itself and aedes
// 2.0.0-beta.1 does not (the beta branched before those fixes):
// - maxInflightPerClient: a client that keeps sending new QoS 2 packet ids
//   and never sends PUBREL grows its stored inbound packets toward the 16-bit
//   id space; beyond the limit the store is refused, and aedes closes the
//   connection (the same effect as 1.2's maxInflightInbound).
// - a PUBREL for an id with nothing stored (a duplicate after a reconnect)
//   makes aedes 2's pubrel handler reject inside `.finally()`, an unhandled
//   rejection that would end the process: incomingDelPacket never rejects.
// It wraps the persistence aedes uses (a Proxy, so every other method is the
// persistence's own) and is told of connects and disconnects by local-broker.ts.
// (A clean session's inbound QoS 2 state, which 1.2 also wiped, is wiped by the
// broker state persistence itself: src/broker-state/persistence.ts.)
import type { Logger } from 'pino'

interface IncomingPersistence {
  incomingStorePacket(client: unknown, packet: { messageId?: number }): Promise<void>
  incomingDelPacket(client: unknown, packet: { messageId?: number }): Promise<void>
  cleanIncoming?(client: unknown): Promise<void>
}

interface WindowClient {
  readonly id: string
}

export class InboundWindow {
  readonly #slots = new WeakMap<object, Set<number>>()
  readonly #limit: () => number
  readonly #log: Logger

  constructor(limit: () => number, log: Logger) {
    this.#limit = limit
    this.#log = log
  }

  /** The persistence to hand to aedes in place of `target`. */
  wrap<T extends object>(target: T): T {
    const store = target as unknown as IncomingPersistence
    const own: Record<string | symbol, unknown> = {
      incomingStorePacket: (client: object, packet: { messageId?: number }) => this.#store(store, client, packet),
      incomingDelPacket: (client: object, packet: { messageId?: number }) => this.#release(store, client, packet),
    }
    return new Proxy(target, {
      get(t, key) {
        if (Object.hasOwn(own, key)) return own[key]
        const value: unknown = Reflect.get(t, key, t)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t) : value
      },
    })
  }

  /** A client went: its window goes with it (a resumed session starts a new one, as in aedes 1.2). */
  disconnected(client: object): void {
    this.#slots.delete(client)
  }

  #store(store: IncomingPersistence, client: object, packet: { messageId?: number }): Promise<void> {
    const id = packet.messageId ?? 0
    let slots = this.#slots.get(client)
    if (slots === undefined) this.#slots.set(client, (slots = new Set()))
    const limit = this.#limit()
    // Reserved synchronously: aedes dispatches a whole read chunk at once, so a
    // check after an await would let the whole chunk through.
    if (!slots.has(id) && slots.size >= limit) {
      return Promise.reject(
        new Error(`maxInflightPerClient exceeded: ${limit} inbound QoS 2 messages already await PUBREL`),
      )
    }
    slots.add(id)
    return store.incomingStorePacket(client, packet).catch((err: unknown) => {
      slots.delete(id)
      throw err
    })
  }

  #release(store: IncomingPersistence, client: object, packet: { messageId?: number }): Promise<void> {
    return store.incomingDelPacket(client, packet).then(
      () => {
        this.#slots.get(client)?.delete(packet.messageId ?? 0)
      },
      (err: unknown) => {
        // 'no such packet' is a duplicate PUBREL; its PUBCOMP is owed either way.
        // A failed delete keeps the slot: the packet is still stored.
        const code = (err as { code?: string }).code
        if (code !== 'EDGE_ERR_BUFFER_INVALID') {
          this.#log.warn({ err, clientId: (client as WindowClient).id }, 'inbound qos 2 release failed')
        } else {
          this.#slots.get(client)?.delete(packet.messageId ?? 0)
        }
      },
    )
  }
}
