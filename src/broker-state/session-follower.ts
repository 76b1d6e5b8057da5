// The broker state following the broker's clients, for what aedes 2 beta
// keeps only in memory or no longer does (persistence.ts wires it in setup):
// - [MQTT-3.1.2-6] a clean session's inbound QoS 2 state ends with it. aedes
//   1.2 called cleanIncoming when such a client connected and went; aedes
//   2.0.0-beta.1 branched before that and never does (a second cleanup is
//   harmless);
// - MQTT 5 Session Expiry Interval: recorded at connect, deadline at
//   disconnect (session-expiry.ts), and sessions past their deadline whose
//   client is not connected ended by a sweep, at start and every second.
import type { Logger } from 'pino'
import type { SessionExpiryTable, ExpiryClient } from './session-expiry.js'
import type { PersistenceBroker, PersistenceClient } from './types.js'

interface FollowedClient extends ExpiryClient {
  readonly clean: boolean
  /** aedes 2, MQTT 5: Clean Start (client.clean then follows the Session Expiry Interval). */
  readonly _cleanStart?: boolean
}

/** What of the persistence the follower uses. */
export interface FollowedStore {
  readonly stopped: () => boolean
  cleanIncoming(client: PersistenceClient): Promise<void>
  cleanSubscriptions(client: PersistenceClient): Promise<void>
  delWill(client: PersistenceClient): Promise<unknown>
}

/** How often sessions past their MQTT 5 expiry deadline are looked for (one indexed query). */
const SESSION_SWEEP_MS = 1000

export class SessionFollower {
  readonly #store: FollowedStore
  readonly #expiry: SessionExpiryTable
  readonly #log: Logger
  readonly #now: () => number
  #timer: NodeJS.Timeout | undefined

  constructor(store: FollowedStore, expiry: SessionExpiryTable, log: Logger, now: () => number) {
    this.#store = store
    this.#expiry = expiry
    this.#log = log
    this.#now = now
  }

  /** Starts following `broker`; returns how many sessions had an expiry pending from the previous run. */
  start(broker: PersistenceBroker): number {
    const counted = this.#expiry.restarted(this.#now())
    this.#follow(broker)
    this.#sweep(broker)
    this.#timer = setInterval(() => this.#sweep(broker), SESSION_SWEEP_MS)
    this.#timer.unref()
    return counted
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  #follow(broker: PersistenceBroker): void {
    const events = broker as PersistenceBroker & { on?: (event: string, fn: (client: FollowedClient) => void) => void }
    if (typeof events.on !== 'function') return
    const clean = (client: FollowedClient): void => {
      this.#store.cleanIncoming(client).catch((err: unknown) => {
        this.#log.warn({ err, clientId: client.id }, 'broker persistence: clean session inbound cleanup failed')
      })
    }
    events.on('client', (client) => {
      if (this.#store.stopped()) return
      if (client.clean || client._cleanStart === true) clean(client)
      this.#quietly(client.id, 'session expiry record', () => this.#expiry.connected(client))
    })
    events.on('clientDisconnect', (client) => {
      if (this.#store.stopped()) return
      if (client.clean) clean(client)
      this.#quietly(client.id, 'session expiry deadline', () => this.#expiry.disconnected(client, this.#now()))
    })
  }

  /** Ends the sessions past their MQTT 5 Session Expiry deadline whose client is not connected. */
  #sweep(broker: PersistenceBroker): void {
    if (this.#store.stopped()) return
    let due: string[]
    try {
      due = this.#expiry.due(this.#now())
    } catch (err) {
      this.#log.warn({ err }, 'broker persistence: session expiry sweep failed')
      return
    }
    const connected = (broker as PersistenceBroker & { clients?: Record<string, unknown> }).clients
    const s = this.#store
    for (const clientId of due) {
      if (connected?.[clientId] === undefined) {
        const client = { id: clientId }
        void Promise.all([s.cleanSubscriptions(client), s.delWill(client), s.cleanIncoming(client)]).then(
          () => this.#log.info({ clientId }, 'broker persistence: session expired'),
          (err: unknown) => this.#log.warn({ err, clientId }, 'broker persistence: expired session cleanup failed'),
        )
      }
      this.#quietly(clientId, 'session expiry forget', () => this.#expiry.forget(clientId))
    }
  }

  #quietly(clientId: string, what: string, fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.#log.warn({ err, clientId, what }, 'broker persistence: session expiry write failed')
    }
  }
}
