// The local broker's own state (retained messages, persistent sessions and
// their offline queues, wills) in the same SQLite file as the message store.
// A component of its own so that the order is right both ways: the database
// opens before the broker asks aedes to set its persistence up, and the
// persistence lets go of the database after the broker closed and before the
// store closes the file.
import type { Logger } from 'pino'
import type { SqliteDatabase } from '../storage/index.js'
import { BrokerStatePersistence } from './persistence.js'
import type { BrokerStateStats } from './types.js'

/** Whoever opened the shared file (the buffer's SqliteStore); its lease is valid once it started. */
export interface DatabaseOwner {
  readonly database: SqliteDatabase
}

export class BrokerState {
  readonly name = 'broker-state'
  #persistence: BrokerStatePersistence | undefined

  constructor(
    private readonly owner: DatabaseOwner,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    // The persistence adds its own component to the logger.
    this.#persistence ??= new BrokerStatePersistence({ db: this.owner.database.db, logger: this.logger })
  }

  /** For LocalBroker's `persistence` option; valid once started. */
  get persistence(): BrokerStatePersistence | undefined {
    return this.#persistence
  }

  /** For LocalBroker's `stateSync`: will aedes store this publish? */
  needsSync(packet: { readonly topic: string; readonly retain: boolean }): boolean {
    return packet.retain || this.#persistence?.hasQueuingSubscribers(packet.topic) === true
  }

  /** Everything stored so far made durable (durability 'full'; at once otherwise). */
  sync(): Promise<void> {
    return this.owner.database.syncWal()
  }

  stats(): BrokerStateStats | undefined {
    return this.#persistence?.stats()
  }

  async stop(): Promise<void> {
    const p = this.#persistence
    this.#persistence = undefined
    await p?.destroy()
  }
}
