// The local broker's own state (retained messages, persistent sessions and
// their offline queues, wills) in the same SQLite file as the message store.
// A component of its own so that the order is right both ways: the database
// opens before the broker asks aedes to set its persistence up, and the
// persistence lets go of the database after the broker closed and before the
// store closes the file.
import type { Logger } from 'pino'
import { SqlitePersistence, type SqliteStore, type SqlitePersistenceStats } from '../buffer/index.js'

export class BrokerState {
  readonly name = 'broker-state'
  #persistence: SqlitePersistence | undefined

  constructor(
    private readonly store: SqliteStore,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.#persistence ??= new SqlitePersistence({
      db: this.store.database.db,
      logger: this.logger.child({ component: 'broker-state' }),
    })
  }

  /** For LocalBroker's `persistence` option; valid once started. */
  get persistence(): SqlitePersistence | undefined {
    return this.#persistence
  }

  /** For LocalBroker's `stateSync`: will aedes store this publish? */
  needsSync(packet: { readonly topic: string; readonly retain: boolean }): boolean {
    return packet.retain || this.#persistence?.hasQueuingSubscribers(packet.topic) === true
  }

  /** Everything stored so far made durable (durability 'full'; at once otherwise). */
  sync(): Promise<void> {
    return this.store.database.syncWal()
  }

  stats(): SqlitePersistenceStats | undefined {
    return this.#persistence?.stats()
  }

  async stop(): Promise<void> {
    const p = this.#persistence
    this.#persistence = undefined
    await p?.destroy()
  }
}
