// BrokerStatePersistence against aedes-persistence's own abstract suite, then the
// properties the suite does not look at: restart round trips on a real file,
// queue bounds, clean-session purge, counters.
//
// Glossary
//   abstract suite  aedes-persistence/abstract.js: the conformance tests every
//                   aedes persistence runs (node:test, t.plan + t.assert).
//   restart         a second BrokerStatePersistence on a second connection to the
//                   same file, set up with a broker object as aedes would.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, describe, test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import { pino } from 'pino'
import {
  BROKER_STATE_MIGRATIONS,
  BROKER_STATE_TABLES,
  BrokerStatePersistence,
  decodePacket,
  encodePacket,
  topicMatches,
  type PersistedPacket,
  type PersistenceBroker,
  type BrokerStateOptions,
} from '../../../src/broker-state/index.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

// abstract.js is CommonJS without type declarations: the part we call.
interface AbstractSuiteOptions {
  test: typeof test
  persistence: () => unknown
  /** The instance is async (aedes ≥ 1): the suite calls `await instance.setup(broker)`. */
  testAsync?: boolean
  waitForReady?: boolean
  buildEmitter?: () => unknown
}
const requireCjs = createRequire(import.meta.url)
const abstractPersistence = requireCjs('aedes-persistence/abstract.js') as (opts: AbstractSuiteOptions) => void

const silent = pino({ level: 'silent' })

// ---------------------------------------------------------------------------
// The abstract suite: one in-memory database per persistence instance.

const suiteDbs: Database.Database[] = []
after(() => {
  for (const db of suiteDbs) db.close()
})

abstractPersistence({
  test,
  testAsync: true,
  persistence: () => {
    const db = new Database(':memory:')
    suiteDbs.push(db)
    return new BrokerStatePersistence({ db, logger: silent })
  },
})

// ---------------------------------------------------------------------------
// Helpers for our own tests

function openFileDb(t: TestContext, file: string): Database.Database {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  t.after(() => {
    if (db.open) db.close()
  })
  return db
}

function fakeBroker(id = 'broker-1'): PersistenceBroker {
  return { id, counter: 0 }
}

async function started(
  db: Database.Database,
  broker: PersistenceBroker,
  opts: Partial<BrokerStateOptions> = {},
): Promise<BrokerStatePersistence> {
  const p = new BrokerStatePersistence({ db, logger: silent, ...opts })
  await p.setup(broker)
  return p
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of stream) out.push(x)
  return out
}

function publish(topic: string, payload: string, extra: Partial<PersistedPacket> = {}): PersistedPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false, ...extra }
}

function rowCount(db: Database.Database, table: string, clientId?: string): number {
  const sql =
    clientId === undefined ? `SELECT COUNT(*) FROM ${table}` : `SELECT COUNT(*) FROM ${table} WHERE client_id = ?`
  const stmt = db.prepare(sql).pluck()
  return (clientId === undefined ? stmt.get() : stmt.get(clientId)) as number
}

// ---------------------------------------------------------------------------

describe('packet encoding', () => {
  test('round-trips MQTT 5 properties, Buffers inside them and undefined-valued keys', () => {
    const packet = {
      cmd: 'publish',
      topic: 'a/b',
      payload: Buffer.from([0, 1, 2, 255]),
      qos: 2,
      retain: true,
      dup: false,
      messageId: undefined,
      brokerId: 'b',
      brokerCounter: 7,
      properties: {
        correlationData: Buffer.from('corr'),
        userProperties: { k: 'v', many: ['x', 'y'], __proto__key: 'p' },
        contentType: 'application/json',
        messageExpiryInterval: 60,
      },
    }
    const back = decodePacket(toRow(encodePacket(packet)))
    assert.deepEqual(back, packet)
    assert.ok(Buffer.isBuffer(back.payload))
    assert.ok('messageId' in back)
  })

  test('keeps a string payload a string and an absent payload absent', () => {
    const s = decodePacket(toRow(encodePacket({ cmd: 'publish', topic: 't', payload: 'héllo' })))
    assert.equal(s.payload, 'héllo')
    const pubrel = decodePacket(toRow(encodePacket({ cmd: 'pubrel', messageId: 3 })))
    assert.deepEqual(pubrel, { cmd: 'pubrel', messageId: 3 })
  })

  test('does not let a "__proto__" key from the wire change a prototype', () => {
    const props = JSON.parse('{"__proto__": {"polluted": true}}') as Record<string, unknown>
    const back = decodePacket(toRow(encodePacket({ topic: 't', properties: { userProperties: props } })))
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
    assert.equal(Object.getPrototypeOf(back.properties?.userProperties), Object.prototype)
  })

  function toRow(e: ReturnType<typeof encodePacket>) {
    return { header: e.header, payload: e.payload, payload_kind: e.payloadKind }
  }
})

describe('topicMatches', () => {
  const cases: [string, string, boolean][] = [
    ['a/b', 'a/b', true],
    ['a/+', 'a/b', true],
    ['a/+', 'a/', true], // [MQTT-4.7.1-3] empty level
    ['a/+', 'a/b/c', false],
    ['a/#', 'a', true], // [MQTT-4.7.1-2] parent level
    ['a/#', 'a/b/c', true],
    ['a/#', 'ab', false],
    ['#', '$SYS/x', false], // [MQTT-4.7.2-1]
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true],
    ['+/+/world/#', 'hello/there/world/creatures', true],
  ]
  for (const [filter, topic, expected] of cases) {
    test(`'${filter}' ${expected ? 'matches' : 'does not match'} '${topic}'`, () => {
      assert.equal(topicMatches(filter, topic), expected)
    })
  }
})

describe('BrokerStatePersistence on a file, across restarts', () => {
  test('keeps retained messages, subscriptions, queues, inbound QoS 2 and wills over a reopen', async (t) => {
    const file = join(tmpDir(t), 'agent.db')
    const db1 = openFileDb(t, file)
    const broker1 = fakeBroker('gw')
    const p1 = await started(db1, broker1)

    await p1.storeRetained(publish('cfg/a', 'A', { retain: true, qos: 0 }))
    await p1.addSubscriptions({ id: 'dev-1' }, [
      { topic: 'cmd/#', qos: 1, rh: 0, rap: false, nl: false },
      { topic: 'log', qos: 0 },
    ])
    await p1.outgoingEnqueueCombi(
      await p1.subscriptionsByTopic('cmd/x'),
      publish('cmd/x', 'go', { brokerId: 'gw', brokerCounter: 41, properties: { correlationData: Buffer.from('c') } }),
    )
    await p1.incomingStorePacket({ id: 'dev-2' }, publish('up/y', 'q2', { qos: 2, messageId: 9 }))
    await p1.putWill({ id: 'dev-3' }, { topic: 'dead/dev-3', payload: Buffer.from('bye'), qos: 1, retain: false })
    await p1.destroy()
    db1.close()

    const db2 = openFileDb(t, file)
    const broker2 = fakeBroker('gw') // same fixed broker id, counter back at 0
    const p2 = await started(db2, broker2)

    const retained = await drain(p2.createRetainedStreamCombi(['cfg/#']))
    assert.equal(retained.length, 1)
    assert.equal(retained[0]?.payload?.toString(), 'A')

    assert.deepEqual(await p2.subscriptionsByClient({ id: 'dev-1' }), [
      { topic: 'cmd/#', qos: 1, rh: 0, rap: false, nl: false },
      { topic: 'log', qos: 0, rh: undefined, rap: undefined, nl: undefined },
    ])
    assert.deepEqual(
      (await p2.subscriptionsByTopic('cmd/y')).map((s) => s.clientId),
      ['dev-1'],
      'the topic index is rebuilt from SQLite',
    )

    const queued = await drain(p2.outgoingStream({ id: 'dev-1' }))
    assert.equal(queued.length, 1)
    assert.equal(queued[0]?.topic, 'cmd/x')
    assert.deepEqual(queued[0]?.properties, { correlationData: Buffer.from('c') })
    assert.equal(broker2.counter, 41, 'broker counter raised past queued counters of the same broker id')

    const inbound = await p2.incomingGetPacket({ id: 'dev-2' }, { messageId: 9 })
    assert.equal(inbound.payload?.toString(), 'q2')

    const wills = await drain(p2.streamWill({ gw: Date.now() }))
    assert.equal(
      wills.length,
      1,
      "a will left under this broker's id by the previous run is streamed as a dead broker's",
    )
    assert.equal(wills[0]?.topic, 'dead/dev-3')
    assert.notEqual(wills[0]?.brokerId, 'gw')

    const { queuedBytes, ...counts } = p2.stats()
    assert.deepEqual(counts, {
      retainedMessages: 1,
      persistentSessions: 1,
      subscriptions: 2,
      queuedMessages: 1,
      clientsWithQueuedMessages: 1,
      droppedMessages: 0,
      droppedTooLarge: 0,
    })
    assert.equal(queuedBytes, db2.prepare('SELECT SUM(bytes) FROM broker_outgoing').pluck().get())
    await p2.destroy()
  })

  test('an empty retained payload deletes the retained message', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker())
    await p.storeRetained(publish('r', 'x', { retain: true }))
    assert.equal(p.stats().retainedMessages, 1)
    await p.storeRetained(publish('r', '', { retain: true }))
    assert.equal(p.stats().retainedMessages, 0)
    assert.equal(rowCount(db, 'broker_retained'), 0)
    await p.destroy()
  })

  test('returns each retained message once when several filters match it', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker())
    for (const topic of ['a', 'a/b', 'a/b/c', 'ab', 'b/x'])
      await p.storeRetained(publish(topic, topic, { retain: true }))
    const got = await drain(p.createRetainedStreamCombi(['a/#', 'a/+', 'a/b/c', '+/x']))
    assert.deepEqual(
      got.map((m) => m.topic),
      ['a', 'a/b', 'a/b/c', 'b/x'],
    )
    await p.destroy()
  })

  test('queues each copy at the lower of the message QoS and the subscription QoS', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'))
    await p.addSubscriptions({ id: 'q1' }, [{ topic: 'm/#', qos: 1 }])
    await p.addSubscriptions({ id: 'q2' }, [{ topic: 'm/#', qos: 2 }])
    await p.outgoingEnqueueCombi(
      await p.subscriptionsByTopic('m/x'),
      publish('m/x', 'v', { qos: 2, brokerId: 'gw', brokerCounter: 1 }),
    )
    const [atQos1] = await drain(p.outgoingStream({ id: 'q1' }))
    const [atQos2] = await drain(p.outgoingStream({ id: 'q2' }))
    assert.equal(atQos1?.qos, 1)
    assert.equal(atQos2?.qos, 2)
    assert.equal(rowCount(db, 'broker_outgoing'), 2)
    await p.destroy()
  })

  test('streams a queue longer than one page and stops at the rows present when the stream was made', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'))
    for (let i = 1; i <= 300; i++)
      await p.outgoingEnqueue({ clientId: 'c' }, publish('t', String(i), { brokerId: 'gw', brokerCounter: i }))
    const stream = p.outgoingStream({ id: 'c' })
    await p.outgoingEnqueue({ clientId: 'c' }, publish('t', 'late', { brokerId: 'gw', brokerCounter: 301 }))
    const got = await drain(stream)
    assert.equal(got.length, 300)
    assert.equal(got[0]?.payload?.toString(), '1')
    assert.equal(got[299]?.payload?.toString(), '300')
    await p.destroy()
  })
})

describe('offline queue bounds', () => {
  function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = []
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
        cb()
      },
    })
    return { logger: pino({ level: 'warn' }, sink), lines }
  }

  test('drops the oldest messages beyond maxOfflineMessagesPerClient, counts them and logs at a bounded rate', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    let now = 1_000_000
    const { logger, lines } = capture()
    const p = await started(db, fakeBroker('gw'), {
      logger,
      maxOfflineMessagesPerClient: 3,
      dropLogIntervalMs: 10_000,
      now: () => now,
    })
    const subs = [{ clientId: 'slow' }, { clientId: 'other' }]
    for (let i = 1; i <= 5; i++)
      await p.outgoingEnqueueCombi(subs, publish('t', String(i), { brokerId: 'gw', brokerCounter: i }))

    const kept = await drain(p.outgoingStream({ id: 'slow' }))
    assert.deepEqual(
      kept.map((m) => m.payload?.toString()),
      ['3', '4', '5'],
    )
    assert.equal(p.stats().droppedMessages, 4, 'two per client')
    assert.equal(p.stats().queuedMessages, 6)
    await new Promise<void>((resolve) => setImmediate(resolve)) // let pino's sink run
    assert.equal(lines.length, 1, 'one warning per interval')
    assert.equal(lines[0]?.msg, 'offline messages dropped')

    now += 10_000
    await p.outgoingEnqueue({ clientId: 'slow' }, publish('t', '6', { brokerId: 'gw', brokerCounter: 6 }))
    await new Promise<void>((resolve) => setImmediate(resolve))
    assert.equal(lines.length, 2)
    assert.equal(lines[1]?.dropped, 4, 'the second line sums the drops since the first')
    assert.equal(lines[1]?.queueFull, 4)
    await p.destroy()
  })

  test('drops by bytes too, and refuses a message larger than the whole byte bound', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'), { maxOfflineBytesPerClient: 4096 })
    const kb = 'x'.repeat(1000)
    for (let i = 1; i <= 6; i++)
      await p.outgoingEnqueue({ clientId: 'c' }, publish('t', kb, { brokerId: 'gw', brokerCounter: i }))
    const stats = p.stats()
    assert.ok(stats.queuedBytes <= 4096, `queued ${stats.queuedBytes} bytes`)
    assert.equal(stats.queuedMessages, 3)
    assert.equal(stats.droppedMessages, 3)

    await p.outgoingEnqueue({ clientId: 'c' }, publish('t', 'y'.repeat(5000), { brokerId: 'gw', brokerCounter: 7 }))
    assert.equal(p.stats().queuedMessages, 3, 'the oversized message is not queued')
    assert.equal(p.stats().droppedMessages, 4)
    assert.equal(p.stats().droppedTooLarge, 1)
    assert.equal(rowCount(db, 'broker_outgoing', 'c'), 3)
    await p.destroy()
  })

  test('never drops a PUBREL row, and a PUBREC for a dropped PUBLISH still records its PUBREL', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'), { maxOfflineMessagesPerClient: 2 })
    const c = { id: 'c' }
    await p.outgoingEnqueue({ clientId: 'c' }, publish('t', '1', { qos: 2, brokerId: 'gw', brokerCounter: 1 }))
    await p.outgoingUpdate(c, publish('t', '1', { qos: 2, brokerId: 'gw', brokerCounter: 1, messageId: 11 }))
    await p.outgoingUpdate(c, { cmd: 'pubrel', messageId: 11 })
    await p.outgoingEnqueue({ clientId: 'c' }, publish('t', '2', { qos: 2, brokerId: 'gw', brokerCounter: 2 }))
    await p.outgoingUpdate(c, publish('t', '2', { qos: 2, brokerId: 'gw', brokerCounter: 2, messageId: 12 }))
    await p.outgoingEnqueue({ clientId: 'c' }, publish('t', '3', { qos: 2, brokerId: 'gw', brokerCounter: 3 }))
    // '2' (in flight) was dropped for '3'; its PUBREC arrives anyway
    await p.outgoingUpdate(c, { cmd: 'pubrel', messageId: 12 })
    const q = await drain(p.outgoingStream(c))
    assert.deepEqual(
      q.map((m) => `${m.cmd}:${m.messageId ?? '-'}`),
      ['pubrel:11', 'publish:-', 'pubrel:12'],
    )
    // and an update for the dropped PUBLISH is not an error (it would disconnect the client)
    await p.outgoingUpdate(c, publish('t', '2', { qos: 2, brokerId: 'gw', brokerCounter: 2, messageId: 12 }))
    await p.destroy()
  })
})

describe('sessions', () => {
  test('cleanSubscriptions removes the subscriptions and the queue of the session in one go', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'))
    await p.addSubscriptions({ id: 'c' }, [{ topic: 'x/#', qos: 1 }])
    await p.outgoingEnqueueCombi(
      await p.subscriptionsByTopic('x/1'),
      publish('x/1', 'a', { brokerId: 'gw', brokerCounter: 1 }),
    )
    await p.addSubscriptions({ id: 'keep' }, [{ topic: 'x/#', qos: 1 }])
    await p.cleanSubscriptions({ id: 'c' })
    assert.equal(rowCount(db, 'broker_subscriptions', 'c'), 0)
    assert.equal(rowCount(db, 'broker_outgoing', 'c'), 0)
    assert.deepEqual(
      (await p.subscriptionsByTopic('x/1')).map((s) => s.clientId),
      ['keep'],
    )
    assert.equal(p.stats().queuedMessages, 0)
    await p.destroy()
  })

  test('a failed write leaves the in-memory index unchanged', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker('gw'))
    db.exec(`CREATE TRIGGER refuse BEFORE INSERT ON broker_subscriptions BEGIN SELECT RAISE(ABORT, 'refused'); END`)
    await assert.rejects(p.addSubscriptions({ id: 'c' }, [{ topic: 'x', qos: 1 }]), { name: 'BufferError' })
    assert.deepEqual(await p.subscriptionsByTopic('x'), [])
    await p.destroy()
  })

  test('rejects every call after destroy() with EDGE_ERR_BUFFER_STOPPED, and destroy() is idempotent', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker())
    await p.destroy()
    await p.destroy()
    await assert.rejects(p.subscriptionsByTopic('x'), { code: 'EDGE_ERR_BUFFER_STOPPED' })
    await assert.rejects(drain(p.outgoingStream({ id: 'c' })), { code: 'EDGE_ERR_BUFFER_STOPPED' })
    assert.ok(db.open, 'the shared connection stays open')
  })

  test('creates only broker_ tables, through the database migration hook', async (t) => {
    const db = openFileDb(t, join(tmpDir(t), 'agent.db'))
    const p = await started(db, fakeBroker())
    const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all()
    assert.deepEqual(tables, [...BROKER_STATE_TABLES, 'schema_migrations'].sort())
    assert.deepEqual(
      db.prepare('SELECT id FROM schema_migrations').pluck().all(),
      BROKER_STATE_MIGRATIONS.map((m) => m.id),
    )
    await p.destroy()
    const again = await started(db, fakeBroker())
    assert.equal(
      db.prepare('SELECT COUNT(*) FROM schema_migrations').pluck().get(),
      BROKER_STATE_MIGRATIONS.length,
      'a second setup() applies nothing',
    )
    await again.destroy()
  })
})
