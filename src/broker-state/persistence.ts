// Broker state on better-sqlite3: the local broker's session state —
// retained messages, subscriptions of persistent sessions, their outgoing
// QoS 1/2 queues, inbound QoS 2 state and wills — lives in the agent's one
// SQLite database (tables prefixed `setupBroker`), so it survives a restart.
//
// Implements the async persistence interface that aedes 1.2 calls directly
// (`await persistence.setup(broker)`, then promise-returning methods and
// Readable streams), the same shape as aedes-persistence 11's
// asyncPersistence.js, and passes that package's abstract suite.
//
// The persistence interface of aedes over that state. Schema in schema.ts,
// packet codec in packet-codec.ts, statements in statements.ts, the
// bounded offline queues in offline-queues.ts.
//
// Invariants
// 1. Committed on resolve. Every write is one synchronous better-sqlite3
//    transaction; when a method's promise resolves its rows are committed.
//    On power loss: with durability 'full' the WAL is fsync'd within 200 ms
//    of any write (storage/database.ts, wal-sync.ts). aedes sends a QoS 1
//    PUBACK before it stores the message; the local broker holds that PUBACK
//    until the retained message or offline-queue copy is stored and synced
//    (LocalBroker's stateSync, hasQueuingSubscribers below), so only state
//    nobody was acknowledged for (subscriptions, deliveries) may lose its
//    last 200 ms. Several rows handed over at once (outgoingEnqueueCombi to N
//    subscribers, addSubscriptions, cleanSubscriptions) are one transaction.
// 2. Write-through. SQLite is written first and memory second: if a statement
//    throws, the in-memory index is left as it was.
// 3. Memory holds indexes, not data. In memory: the topic → subscriber trie of
//    QoS > 0 subscriptions (QlobberSub, exactly what aedes-persistence's
//    reference uses; aedes asks it on every QoS > 0 PUBLISH), per-client
//    offline-queue counters (rows, bytes) and the retained count. Retained
//    payloads, queued packets, inbound QoS 2 packets and wills are read from
//    SQLite when asked for, in pages, never a whole table at once.
// 4. Bounded queues. A client's outgoing queue holds at most
//    `maxOfflineMessagesPerClient` rows and `maxOfflineBytesPerClient` bytes;
//    an enqueue that exceeds either drops that client's oldest PUBLISH rows
//    (PUBREL rows, i.e. QoS 2 handshakes already half done, are never
//    dropped). Drops are counted and logged at a bounded rate.
// 5. Exact round trip. A packet comes back with the same own keys and values
//    it was stored with (undefined-valued keys included, which the abstract
//    suite checks): payload as a BLOB (string payloads stay strings), every
//    other field as JSON, with Buffers (e.g. MQTT 5 correlationData) and
//    `undefined` tagged.
// 6. The database is borrowed: destroy() forgets the statements and the index
//    but never closes the connection, which the agent shares with SqliteStore.
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { applyMigrations, BufferError, toBufferError } from '../storage/index.js'
import { SessionExpiryTable } from './session-expiry.js'
import { SessionFollower } from './session-follower.js'
import {
  type EnqueueOutcome,
  type EnqueueRow,
  OfflineQueues,
  type QueuedEncoding,
  queuedEncoding,
} from './offline-queues.js'
import { encodePacket } from './packet-codec.js'
import { BROKER_STATE_MIGRATIONS } from './schema.js'
import { AedesPacket, BrokerStateTables, stopped } from './tables.js'
import {
  decodeOutgoing,
  numberOrNull,
  type OutgoingRow,
  outgoingRows,
  prepareStatements,
  prepareTransactions,
  type Statements,
  streamError,
  stringOrNull,
  subscriberFromRow,
} from './statements.js'
import {
  DEFAULT_DROP_LOG_INTERVAL_MS,
  DEFAULT_MAX_OFFLINE_BYTES_PER_CLIENT,
  DEFAULT_MAX_OFFLINE_MESSAGES_PER_CLIENT,
  type BrokerStateOptions,
  type BrokerStateStats,
  type PersistedPacket,
  type PersistedSubscription,
  type PersistenceBroker,
  type PersistenceClient,
  type TopicSubscriber,
} from './types.js'

// CommonJS helpers from aedes' own dependency tree, with local types.

interface QlobberSubInstance {
  add(topic: string, value: TopicSubscriber): unknown
  remove(topic: string, value: { clientId: string; topic: string }): unknown
  match(topic: string): TopicSubscriber[]
  clear(): unknown
  readonly subscriptionsCount: number
}
type QlobberSubConstructor = new (options: {
  separator: string
  wildcard_one: string
  wildcard_some: string
  match_empty_levels: boolean
}) => QlobberSubInstance

const requireCjs = createRequire(import.meta.url)

/** Shared settled promises for the per-publish calls that find nothing to do. */
const NO_SUBSCRIBERS: Promise<TopicSubscriber[]> = Promise.resolve(Object.freeze([]) as unknown as TopicSubscriber[])
const DONE: Promise<void> = Promise.resolve()
// qlobber and aedes-packet come with aedes (aedes → aedes-persistence → qlobber,
// aedes → aedes-packet); both should be listed in package.json in their own right.
const QlobberSub = requireCjs('qlobber/aedes/qlobber-sub.js') as QlobberSubConstructor

// mqemitter in aedes runs with matchEmptyLevels ([MQTT-4.7.1-3]: '+' matches an
// empty level); the offline index must agree with live delivery.
const TRIE_OPTIONS = { separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true }

export class BrokerStatePersistence extends BrokerStateTables {
  #trie: QlobberSubInstance = new QlobberSub(TRIE_OPTIONS)
  readonly #queues: OfflineQueues

  #txEnqueue: ((rows: readonly EnqueueRow[]) => EnqueueOutcome) | undefined
  #sessions: SessionFollower | undefined

  /** No I/O: statements are prepared and state is loaded by setup(). */
  constructor(options: BrokerStateOptions) {
    const maxCount = options.maxOfflineMessagesPerClient ?? DEFAULT_MAX_OFFLINE_MESSAGES_PER_CLIENT
    const maxBytes = options.maxOfflineBytesPerClient ?? DEFAULT_MAX_OFFLINE_BYTES_PER_CLIENT
    const interval = options.dropLogIntervalMs ?? DEFAULT_DROP_LOG_INTERVAL_MS
    if (!Number.isInteger(maxCount) || maxCount < 1) {
      throw new BufferError(
        'EDGE_ERR_BUFFER_INVALID',
        `maxOfflineMessagesPerClient must be an integer >= 1, got ${maxCount}`,
      )
    }
    if (!Number.isInteger(maxBytes) || maxBytes < 1) {
      throw new BufferError(
        'EDGE_ERR_BUFFER_INVALID',
        `maxOfflineBytesPerClient must be an integer >= 1, got ${maxBytes}`,
      )
    }
    if (!(interval >= 0)) {
      throw new BufferError('EDGE_ERR_BUFFER_INVALID', `dropLogIntervalMs must be >= 0, got ${interval}`)
    }
    super(options.db, options.logger.child({ component: 'broker-state' }), options.now ?? Date.now)
    this.#queues = new OfflineQueues({ log: this.log, maxCount, maxBytes, dropLogIntervalMs: interval, now: this.now })
  }

  /** The broker given to setup() (aedes-persistence's abstract suite reads broker.id through it). */
  get broker(): PersistenceBroker | undefined {
    return this.setupBroker
  }

  /**
   * Called by aedes' listen(). Creates the tables if needed, prepares the
   * statements and loads the in-memory index. Also:
   * - raises `broker.counter` past every brokerCounter still queued under
   *   `broker.id`, so a broker restarted with a fixed `id` does not hand out a
   *   (brokerId, brokerCounter) pair that outgoingUpdate() would confuse with
   *   an old queued row;
   * - re-stamps wills left under `broker.id` by a previous run (no client is
   *   connected yet, so they belong to sessions that died with it) with a
   *   broker id that is not alive, so aedes' will sweep publishes them, as it
   *   does for wills of any dead broker.
   */
  async setup(broker: PersistenceBroker): Promise<void> {
    if (this.destroyed) throw stopped()
    const started = this.now()
    this.setupBroker = broker
    try {
      applyMigrations(this.db, BROKER_STATE_MIGRATIONS, this.log)
      const s = prepareStatements(this.db)
      this.stmts = s
      this.tx = prepareTransactions(this.db, s)
      this.#txEnqueue = this.db.transaction((rows: readonly EnqueueRow[]) => this.#queues.enqueueRows(s, rows))

      const trie = new QlobberSub(TRIE_OPTIONS)
      for (const row of s.subsQosPositive.iterate()) trie.add(row.topic, subscriberFromRow(row))
      this.#trie = trie

      this.#queues.load(s)
      this.retainedCount = s.retainedCount.get() ?? 0

      const maxCounter = s.outMaxCounter.get(broker.id) ?? 0
      if (typeof broker.counter === 'number' && broker.counter < maxCounter) broker.counter = maxCounter
      const restamped = s.willRestamp.run(`${broker.id}:before-restart`, broker.id).changes
      const store = {
        stopped: () => this.destroyed,
        cleanIncoming: (c: PersistenceClient) => this.cleanIncoming(c),
        cleanSubscriptions: (c: PersistenceClient) => this.cleanSubscriptions(c),
        delWill: (c: PersistenceClient) => this.delWill(c),
      }
      this.#sessions = new SessionFollower(store, new SessionExpiryTable(this.db), this.log, () => this.now())
      const counted = this.#sessions.start(broker)

      this.log.info(
        {
          retained: this.retainedCount,
          subscriptions: trie.subscriptionsCount,
          queuedMessages: this.#queues.rows,
          clientsWithQueuedMessages: this.#queues.clients,
          staleWills: restamped,
          expiringSessions: counted,
          ms: this.now() - started,
        },
        'broker persistence loaded',
      )
    } catch (err) {
      this.stmts = undefined
      this.tx = undefined
      throw toBufferError(err, 'broker persistence setup')
    }
  }

  // -- subscriptions --------------------------------------------------------

  async addSubscriptions(client: PersistenceClient, subs: readonly PersistedSubscription[]): Promise<void> {
    const tx = this.transactions()
    const clientId = client.id
    try {
      tx.addSubscriptions(clientId, subs)
    } catch (err) {
      throw toBufferError(err, 'broker persistence add subscriptions')
    }
    // committed: now the index (same order as the rows, so the last write of a topic wins)
    for (const sub of subs) {
      if (sub.qos > 0) {
        this.#trie.add(sub.topic, { clientId, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl })
      } else {
        this.#trie.remove(sub.topic, { clientId, topic: sub.topic })
      }
    }
  }

  async removeSubscriptions(client: PersistenceClient, topics: readonly string[]): Promise<void> {
    const tx = this.transactions()
    const clientId = client.id
    let removed: string[]
    try {
      removed = tx.removeSubscriptions(clientId, topics)
    } catch (err) {
      throw toBufferError(err, 'broker persistence remove subscriptions')
    }
    for (const topic of removed) this.#trie.remove(topic, { clientId, topic })
  }

  /** A persistent session has a QoS > 0 subscription matching `topic` (a publish to it will be queued). Synchronous. */
  hasQueuingSubscribers(topic: string): boolean {
    return this.#trie.match(topic).length > 0
  }

  /** QoS > 0 subscriptions matching a published topic: answered from memory. */
  subscriptionsByTopic(topic: string): Promise<TopicSubscriber[]> {
    try {
      this.ready()
    } catch (err) {
      return Promise.reject(err)
    }
    // aedes asks for every QoS > 0 publish; with no persistent subscription
    // (the usual gateway) there is nothing to walk and nothing to allocate.
    if (this.#trie.subscriptionsCount === 0) return NO_SUBSCRIBERS
    return Promise.resolve(this.#trie.match(topic))
  }

  /**
   * The session is discarded (aedes: CONNECT with clean=true): its
   * subscriptions and its outgoing queue go, in one transaction. aedes would
   * otherwise drain the queue row by row right after ([MQTT-3.1.2-6]).
   */
  async cleanSubscriptions(client: PersistenceClient): Promise<void> {
    const tx = this.transactions()
    const clientId = client.id
    let rows: { topic: string; qos: number }[]
    try {
      rows = tx.cleanSession(clientId)
    } catch (err) {
      throw toBufferError(err, 'broker persistence clean subscriptions')
    }
    for (const r of rows) if (r.qos > 0) this.#trie.remove(r.topic, { clientId, topic: r.topic })
    this.#queues.set(clientId, { count: 0, bytes: 0 })
  }

  // -- outgoing -------------------------------------------------------------

  async outgoingEnqueue(sub: { clientId: string; qos?: number | undefined }, packet: PersistedPacket): Promise<void> {
    this.#enqueue([sub], packet)
  }

  /**
   * One transaction for every subscriber: aedes calls this once per QoS > 0
   * PUBLISH with the subscriptionsByTopic() result. Each copy is stored at
   * min(packet QoS, subscription QoS).
   */
  outgoingEnqueueCombi(
    subs: readonly { clientId: string; qos?: number | undefined }[],
    packet: PersistedPacket,
  ): Promise<void> {
    try {
      this.ready()
      if (subs.length === 0) return DONE
      this.#enqueue(subs, packet)
      return DONE
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * aedes calls this before writing a queued packet (to record the messageId
   * it assigned) and on PUBREC (to replace the PUBLISH by its PUBREL). The
   * row is the first, in queue order, that either comes from the same broker
   * with the same brokerCounter (the messageId is set), or carries the same
   * messageId under another broker id (the row is replaced by `packet`), the
   * same rule as the reference implementation. Differences, both to keep a
   * bounded queue from disconnecting clients: an unknown PUBLISH (its row was
   * dropped by the bound) is a no-op, and an unknown PUBREL is appended, since
   * the QoS 2 handshake it continues still has to survive a restart.
   */
  async outgoingUpdate(client: PersistenceClient, packet: PersistedPacket): Promise<void> {
    const s = this.ready()
    const clientId = client.id
    const messageId = numberOrNull(packet.messageId)
    const brokerId = stringOrNull(packet.brokerId)
    try {
      if (brokerId !== null) {
        const row = s.outFindForUpdate.get({
          clientId,
          brokerId,
          brokerCounter: numberOrNull(packet.brokerCounter),
          messageId,
        })
        if (row !== undefined) {
          if (row.same === 1) {
            if (messageId !== null) s.outSetMessageId.run(messageId, row.seq)
          } else {
            this.#replaceRow(s, clientId, row, packet)
          }
          return
        }
      } else if (messageId !== null) {
        const byMessage = s.outFindByMessage.get(clientId, messageId)
        if (byMessage !== undefined) {
          this.#replaceRow(s, clientId, byMessage, packet)
          return
        }
      }
      if (packet.cmd === 'pubrel' && messageId !== null) {
        this.log.debug({ clientId, messageId }, 'pubrel for an unqueued message appended')
        this.#enqueue([{ clientId }], packet, 'pubrel')
        return
      }
      this.log.debug(
        { clientId, messageId, brokerCounter: packet.brokerCounter },
        'outgoing update for an unqueued packet ignored',
      )
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing update')
    }
  }

  /**
   * Removes the first queued row with `packet.messageId` (PUBACK, PUBCOMP)
   * and resolves with it, or with undefined if there is none. A packet whose
   * messageId is not assigned yet (aedes does this when it dedupes a message
   * matched by two of the client's subscriptions) removes the unassigned copy
   * with the same brokerId/brokerCounter.
   */
  async outgoingClearMessageId(
    client: PersistenceClient,
    packet: PersistedPacket | number,
  ): Promise<PersistedPacket | undefined> {
    const s = this.ready()
    if (typeof packet !== 'object' || packet === null) return undefined
    const clientId = client.id
    const messageId = numberOrNull(packet.messageId)
    try {
      let row: OutgoingRow | undefined
      if (messageId !== null) {
        row = s.outClearByMessage.get(clientId, messageId)
      } else {
        const brokerId = stringOrNull(packet.brokerId)
        const counter = numberOrNull(packet.brokerCounter)
        if (brokerId !== null && counter !== null) row = s.outClearUnassigned.get(clientId, brokerId, counter)
      }
      if (row === undefined) return undefined
      this.#queues.adjust(clientId, -1, -row.bytes)
      return decodeOutgoing(row)
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing clear')
    }
  }

  /**
   * The client's queue as it is now (rows enqueued after this call are not
   * included), oldest first, read in pages of 128 rows.
   */
  outgoingStream(client: PersistenceClient): Readable {
    let s: Statements
    try {
      s = this.ready()
    } catch (err) {
      return streamError(err as Error)
    }
    const clientId = client.id
    const last = s.outMaxSeq.get(clientId) ?? 0
    return Readable.from(outgoingRows(s, clientId, last))
  }

  // -- lifecycle and observability ---------------------------------------------

  /**
   * Forgets statements and the in-memory index. Idempotent. Does not close the
   * database, which belongs to the agent.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    this.#queues.flushDropLog()
    this.#sessions?.stop()
    this.#sessions = undefined
    this.destroyed = true
    this.stmts = undefined
    this.tx = undefined
    this.#txEnqueue = undefined
    this.#trie.clear()
    this.#queues.clear()
  }

  /** Counters for metrics; the two subscription figures cost one indexed COUNT query. */
  stats(): BrokerStateStats {
    const s = this.stmts
    const c = s?.subCounts.get()
    return {
      retainedMessages: this.retainedCount,
      persistentSessions: c?.clients ?? 0,
      subscriptions: c?.subs ?? 0,
      queuedMessages: this.#queues.rows,
      queuedBytes: this.#queues.bytes,
      clientsWithQueuedMessages: this.#queues.clients,
      droppedMessages: this.#queues.dropped,
      droppedTooLarge: this.#queues.droppedBy('too-large'),
    }
  }

  // -- internals ----------------------------------------------------------------

  /**
   * Queue `packet` for each target, bounds applied, in one transaction.
   * A PUBLISH is stored at min(packet QoS, subscription QoS) when the target
   * carries its subscription's QoS ([MQTT-3.8.4-6]: aedes does not downgrade
   * messages it replays from the queue, only live ones). `pubrel`: a PUBREL
   * appended by outgoingUpdate, stored as given and exempt from eviction (it
   * continues a message the queue already paid for).
   */
  #enqueue(
    targets: readonly { clientId: string; qos?: number | undefined }[],
    packet: PersistedPacket,
    kind: 'publish' | 'pubrel' = 'publish',
  ): void {
    this.ready()
    const tx = this.#txEnqueue
    if (tx === undefined) throw stopped()
    // The reference stores a fresh aedes Packet: the fields aedes keeps, with
    // messageId reset (assigned later by outgoingUpdate).
    const base = kind === 'publish' ? new AedesPacket(packet) : packet
    const baseQos = typeof base.qos === 'number' ? base.qos : 0
    const byQos = new Map<number, QueuedEncoding>()
    const rows: EnqueueRow[] = []
    for (const target of targets) {
      const qos =
        kind === 'publish' && typeof target.qos === 'number' && target.qos >= 1 && target.qos < baseQos
          ? target.qos
          : baseQos
      let e = byQos.get(qos)
      if (e === undefined) {
        e = queuedEncoding(qos === baseQos ? base : { ...base, qos }, kind === 'publish')
        byQos.set(qos, e)
      }
      if (e.enc.bytes > this.#queues.maxBytes) {
        // can never fit: refusing it is the only way to keep the bound
        this.#queues.recordDrop(target.clientId, 1, 'too-large')
        continue
      }
      rows.push({ clientId: target.clientId, e })
    }
    if (rows.length === 0) return
    let outcome: EnqueueOutcome
    try {
      outcome = tx(rows)
    } catch (err) {
      throw toBufferError(err, 'broker persistence outgoing enqueue')
    }
    this.#queues.applyOutcome(outcome)
  }

  #replaceRow(s: Statements, clientId: string, row: { seq: number; bytes: number }, packet: PersistedPacket): void {
    const enc = encodePacket(packet)
    s.outReplace.run(
      typeof packet.cmd === 'string' ? packet.cmd : 'publish',
      stringOrNull(packet.brokerId),
      numberOrNull(packet.brokerCounter),
      numberOrNull(packet.messageId),
      enc.header,
      enc.payload,
      enc.payloadKind,
      enc.bytes,
      row.seq,
    )
    this.#queues.adjust(clientId, 0, enc.bytes - row.bytes)
  }
}

/** Factory form of `new BrokerStatePersistence(options)`; pass the result to `Aedes.createBroker({ persistence })`. */
export function createBrokerStatePersistence(options: BrokerStateOptions): BrokerStatePersistence {
  return new BrokerStatePersistence(options)
}
