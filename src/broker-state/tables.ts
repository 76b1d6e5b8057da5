// The part of the broker state's aedes persistence that needs no in-memory
// index: retained messages, the read side of subscriptions, inbound QoS 2
// packets and wills, all answered from SQLite. BrokerStatePersistence
// (persistence.ts) extends it with setup, the subscription trie and the
// bounded outgoing queues; the invariants are listed there.
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import type BetterSqlite3 from 'better-sqlite3'
import type { Logger } from 'pino'
import { BufferError, toBufferError } from '../storage/index.js'
import { decodePacket, encodePacket } from './packet-codec.js'
import {
  decodeWill,
  numberOrNull,
  retainedMatches,
  type Statements,
  streamError,
  stringOrNull,
  type Transactions,
  type WillRow,
  willsOfDeadBrokers,
} from './statements.js'
import type { PersistedPacket, PersistedSubscription, PersistenceBroker, PersistenceClient } from './types.js'

type Database = BetterSqlite3.Database
type AedesPacketConstructor = new (original: PersistedPacket, broker?: PersistenceBroker) => PersistedPacket

// aedes-packet comes with aedes (aedes → aedes-packet); it should be listed in
// package.json in its own right.
export const AedesPacket = createRequire(import.meta.url)('aedes-packet') as AedesPacketConstructor

export abstract class BrokerStateTables {
  protected stmts: Statements | undefined
  protected tx: Transactions | undefined
  protected destroyed = false
  protected retainedCount = 0
  /** The broker given to setup(). */
  protected setupBroker: PersistenceBroker | undefined

  constructor(
    protected readonly db: Database,
    protected readonly log: Logger,
    protected readonly now: () => number,
  ) {}

  // -- retained -------------------------------------------------------------

  async storeRetained(packet: PersistedPacket): Promise<void> {
    const s = this.ready()
    const topic = packet.topic ?? ''
    const payload = packet.payload
    const empty = payload === undefined || payload.length === 0
    try {
      if (empty) {
        const removed = s.retainedDelete.run(topic).changes
        this.retainedCount -= removed
        return
      }
      const existed = this.transactions().storeRetained(topic, encodePacket(packet), this.now())
      this.retainedCount += 1 - existed
    } catch (err) {
      throw toBufferError(err, 'broker persistence store retained')
    }
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern])
  }

  /** Retained messages matching any of `patterns`, each once, in topic order. */
  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    let s: Statements
    try {
      s = this.ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(retainedMatches(s, patterns))
  }

  // -- subscriptions, read side ---------------------------------------------

  async subscriptionsByClient(client: PersistenceClient): Promise<PersistedSubscription[]> {
    const s = this.ready()
    const rows = s.subsByClient.all(client.id)
    return rows.map((r) => {
      const sub: PersistedSubscription = {
        topic: r.topic,
        qos: r.qos,
        rh: r.rh ?? undefined,
        rap: r.rap === null ? undefined : r.rap === 1,
        nl: r.nl === null ? undefined : r.nl === 1,
      }
      if (r.subscription_identifier !== null) sub.subscriptionIdentifier = r.subscription_identifier
      return sub
    })
  }

  /** QoS > 0 subscriptions (subsCount) and clients with any stored subscription (clientsCount). */
  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    const s = this.ready()
    const c = s.subCounts.get()
    return { subsCount: c?.qosSubs ?? 0, clientsCount: c?.clients ?? 0 }
  }

  /** Readable of client ids holding a subscription with exactly this filter. */
  getClientList(topic: string): Readable {
    let s: Statements
    try {
      s = this.ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(s.clientsByTopic.all(topic))
  }

  // -- incoming (QoS 2 received, awaiting PUBREL) ---------------------------

  async incomingStorePacket(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.ready()
    const stored = new AedesPacket(packet)
    stored.messageId = packet.messageId
    const enc = encodePacket(stored)
    try {
      s.inUpsert.run(
        client.id,
        numberOrNull(packet.messageId) ?? 0,
        enc.header,
        enc.payload,
        enc.payloadKind,
        this.now(),
      )
    } catch (err) {
      throw toBufferError(err, 'broker persistence incoming store')
    }
  }

  async incomingGetPacket(
    client: PersistenceClient,
    packet: { messageId?: number | undefined },
  ): Promise<PersistedPacket> {
    const s = this.ready()
    const row = s.inGet.get(client.id, numberOrNull(packet.messageId) ?? -1)
    if (row === undefined) throw noSuchPacket()
    return decodePacket(row)
  }

  async incomingDelPacket(client: PersistenceClient, packet: { messageId?: number | undefined }): Promise<void> {
    const s = this.ready()
    let changes: number
    try {
      changes = s.inDelete.run(client.id, numberOrNull(packet.messageId) ?? -1).changes
    } catch (err) {
      throw toBufferError(err, 'broker persistence incoming delete')
    }
    if (changes === 0) throw noSuchPacket()
  }

  /** Every inbound QoS 2 packet of the client (aedes: clean session start and end, [MQTT-3.1.2-6]). */
  async cleanIncoming(client: PersistenceClient): Promise<void> {
    const s = this.ready()
    try {
      s.inDeleteClient.run(client.id)
    } catch (err) {
      throw toBufferError(err, 'broker persistence clean incoming')
    }
  }

  // -- wills ------------------------------------------------------------------

  /** Stores the will stamped with this broker's id and the client id (set on `packet`, as the reference does). */
  async putWill(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.ready()
    packet.brokerId = this.setupBroker?.id
    packet.clientId = client.id
    const enc = encodePacket(packet)
    try {
      s.willUpsert.run(client.id, stringOrNull(packet.brokerId), enc.header, enc.payload, enc.payloadKind, this.now())
    } catch (err) {
      throw toBufferError(err, 'broker persistence put will')
    }
  }

  async getWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    const s = this.ready()
    const row = s.willGet.get(client.id)
    return row === undefined ? undefined : decodeWill(row)
  }

  async delWill(client: PersistenceClient): Promise<PersistedPacket | undefined> {
    const s = this.ready()
    let row: WillRow | undefined
    try {
      row = s.willDelete.get(client.id)
    } catch (err) {
      throw toBufferError(err, 'broker persistence delete will')
    }
    return row === undefined ? undefined : decodeWill(row)
  }

  /** Wills whose broker is not in `brokers` (aedes: the brokers it heard a heartbeat from). */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    let s: Statements
    try {
      s = this.ready()
    } catch (err) {
      return streamError(err as Error)
    }
    return Readable.from(willsOfDeadBrokers(s, brokers))
  }

  // -- internals ----------------------------------------------------------------

  protected ready(): Statements {
    if (this.destroyed) throw stopped()
    const s = this.stmts
    if (s === undefined) {
      throw new BufferError('EDGE_ERR_BUFFER_STOPPED', 'broker persistence used before setup()')
    }
    return s
  }

  protected transactions(): Transactions {
    this.ready()
    const tx = this.tx
    if (tx === undefined) throw stopped()
    return tx
  }
}

export function stopped(): BufferError {
  return new BufferError('EDGE_ERR_BUFFER_STOPPED', 'broker persistence destroyed')
}

function noSuchPacket(): BufferError {
  // An expected answer, not a fault: aedes asks for an inbound QoS 2 packet to
  // learn whether it is a duplicate.
  return new BufferError('EDGE_ERR_BUFFER_INVALID', 'no such packet')
}
