// The local broker's session state survives a restart: a real aedes broker on
// 127.0.0.1:0 with BrokerStatePersistence on a temp-file database, real mqtt.js
// clients. A "restart" closes the TCP server, the broker and the database
// connection, then opens a new connection to the same file, a new persistence
// and a new Aedes instance on a new port.
//
// Glossary
//   node        one incarnation of the broker: the agent's database (opened
//               with openDatabase() and both owners' migrations, as the agent
//               does) + BrokerStatePersistence + Aedes + net.Server (startNode),
//               closed by node.close()
//   published   the broker's 'publish' event for a topic: emitted after aedes
//               has stored the retained message / queued the offline copies
import assert from 'node:assert/strict'
import { type EventEmitter, once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { Aedes } from 'aedes'
import type Database from 'better-sqlite3'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import {
  BROKER_STATE_MIGRATIONS,
  BROKER_STATE_TABLES,
  createBrokerStatePersistence,
  type BrokerStatePersistence,
} from '../../../src/broker-state/index.js'
import { MESSAGE_STORE_MIGRATIONS } from '../../../src/buffer/index.js'
import { openDatabase } from '../../../src/storage/index.js'
import { CONNACK_ACCEPTED, client, connectPacket, publishPacket, rawConnection } from '../../helpers/mqtt-clients.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { collectMessages, nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'

const WAIT_MS = 5_000
const silent = pino({ level: 'silent' })

interface BrokerNode {
  broker: Aedes
  persistence: BrokerStatePersistence
  db: Database.Database
  port: number
  url: string
  /** Errors aedes emitted; a test fails if there are any. */
  errors: Error[]
  close(): Promise<void>
}

async function startNode(t: TestContext, file: string): Promise<BrokerNode> {
  // WAL + synchronous=FULL on every open; the file
  // also holds the message store's tables, as in the agent
  const lease = openDatabase(file, {
    logger: silent,
    migrations: [...MESSAGE_STORE_MIGRATIONS, ...BROKER_STATE_MIGRATIONS],
  })
  const db = lease.db
  const persistence = createBrokerStatePersistence({ db, logger: silent })
  const broker = await Aedes.createBroker({ persistence, heartbeatInterval: 60_000 })
  const errors: Error[] = []
  // aedes.d.ts types only aedes' own events; 'error' is EventEmitter's
  ;(broker as unknown as EventEmitter).on('error', (err: Error) => errors.push(err))
  const server = createServer(broker.handle)
  server.on('error', (err) => errors.push(err))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      // both: server.close() only stops accepting, broker.close() ends the clients
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()))
      await new Promise<void>((resolve) => broker.close(() => resolve()))
      await serverClosed
      await persistence.destroy()
      lease.close()
    })()
    return closing
  }
  t.after(close)
  return { broker, persistence, db, port, url: `mqtt://127.0.0.1:${port}`, errors, close }
}

/** Resolves when the broker has finished handling a PUBLISH on `topic` (stored, queued, forwarded). */
function published(broker: Aedes, topic: string): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      const onPublish = (packet: { topic: string }) => {
        if (packet.topic !== topic) return
        broker.removeListener('publish', onPublish)
        resolve()
      }
      broker.on('publish', onPublish)
    }),
    WAIT_MS,
    `the broker to handle a PUBLISH on ${topic}`,
  )
}

function disconnected(broker: Aedes, clientId: string): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      const onGone = (c: { id: string }) => {
        if (c.id !== clientId) return
        broker.removeListener('clientDisconnect', onGone)
        resolve()
      }
      broker.on('clientDisconnect', onGone)
    }),
    WAIT_MS,
    `client ${clientId} to be gone from the broker`,
  )
}

/** Starts connecting and returns at once, so that listeners see messages the broker sends right after CONNACK. */
function connectNow(
  t: TestContext,
  url: string,
  opts: IClientOptions,
): { c: MqttClient; connack: Promise<{ sessionPresent: boolean }> } {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: WAIT_MS, ...opts })
  c.on('error', () => undefined)
  t.after(() => c.endAsync(true).catch(() => undefined))
  const connack = withTimeout(
    new Promise<{ sessionPresent: boolean }>((resolve) =>
      c.once('connect', (p) => resolve({ sessionPresent: p.sessionPresent })),
    ),
    WAIT_MS,
    `CONNACK for ${String(opts.clientId)}`,
  )
  return { c, connack }
}

function rowsOf(db: Database.Database, table: string, clientId: string): number {
  return db.prepare(`SELECT COUNT(*) FROM ${table} WHERE client_id = ?`).pluck().get(clientId) as number
}

test('a retained message survives a full broker restart', async (t) => {
  const file = join(tmpDir(t), 'agent.db')
  const a = await startNode(t, file)
  const pub = await client(t, a.url, { clientId: 'pub-retained' })
  const stored = published(a.broker, 'config/gw-1')
  await pub.publishAsync('config/gw-1', 'setpoint=42', { qos: 1, retain: true })
  await stored
  await pub.endAsync()
  await a.close()

  const b = await startNode(t, file)
  const sub = await client(t, b.url, { clientId: 'sub-retained' })
  const got = nextMessage(sub, 'config/gw-1', WAIT_MS)
  await sub.subscribeAsync('config/#', { qos: 1 })
  const m = await got
  assert.equal(m.payload.toString(), 'setpoint=42')
  assert.equal(m.retain, true)
  assert.deepEqual([...a.errors, ...b.errors], [])
})

test('a persistent session gets the QoS 1 and QoS 2 messages published while it was away, across a restart', async (t) => {
  const file = join(tmpDir(t), 'agent.db')
  const a = await startNode(t, file)

  // 1. the device subscribes in a persistent session, then goes away
  const dev = await client(t, a.url, { clientId: 'edge-dev-1', clean: false })
  await dev.subscribeAsync({ 'sensors/#': { qos: 1 }, 'alarms/#': { qos: 2 } })
  const gone = disconnected(a.broker, 'edge-dev-1')
  await dev.endAsync()
  await gone

  // 2. messages for it arrive while it is offline
  const pub = await client(t, a.url, { clientId: 'pub-a' })
  const handled = Promise.all([
    published(a.broker, 'sensors/q1'),
    published(a.broker, 'sensors/q2'),
    published(a.broker, 'alarms/fire'),
  ])
  await pub.publishAsync('sensors/q1', 'one', { qos: 1 })
  await pub.publishAsync('sensors/q2', 'two', { qos: 2 })
  await pub.publishAsync('alarms/fire', 'three', { qos: 2 })
  await handled
  assert.equal(a.persistence.stats().queuedMessages, 3)
  await pub.endAsync()

  // 3. the broker restarts
  await a.close()
  const b = await startNode(t, file)

  // 4. one more while the device is still away: the subscription index was reloaded from SQLite
  const pubB = await client(t, b.url, { clientId: 'pub-b' })
  const handledB = published(b.broker, 'sensors/q3')
  await pubB.publishAsync('sensors/q3', 'four', { qos: 1 })
  await handledB
  assert.equal(b.persistence.stats().queuedMessages, 4)

  // 5. the device comes back to its session and gets everything, in order
  const { c: back, connack } = connectNow(t, b.url, { clientId: 'edge-dev-1', clean: false })
  const got = collectMessages(back, 4, (topic) => topic.startsWith('sensors/') || topic.startsWith('alarms/'), WAIT_MS)
  assert.equal((await connack).sessionPresent, true)
  const messages = await got
  assert.deepEqual(messages.map((m) => [m.topic, m.payload.toString(), m.qos]).sort(), [
    ['alarms/fire', 'three', 2],
    ['sensors/q1', 'one', 1],
    ['sensors/q2', 'two', 1], // QoS 2 publish, QoS 1 subscription: delivered at QoS 1 [MQTT-3.8.4-6]
    ['sensors/q3', 'four', 1],
  ])
  // mqtt.js hands a QoS 2 message over on PUBREL, so only the QoS 1 ones show the queue order
  assert.deepEqual(
    messages.filter((m) => m.qos === 1).map((m) => m.topic),
    ['sensors/q1', 'sensors/q2', 'sensors/q3'],
  )

  // 6. PUBACK / PUBREC-PUBREL-PUBCOMP empty the queue
  await waitFor(() => b.persistence.stats().queuedMessages === 0, WAIT_MS, 'the queue to be acknowledged away')
  assert.equal(rowsOf(b.db, 'broker_outgoing', 'edge-dev-1'), 0)
  assert.equal(rowsOf(b.db, 'broker_subscriptions', 'edge-dev-1'), 2, 'the session itself stays')
  assert.deepEqual([...a.errors, ...b.errors], [])
})

test('an online persistent session with overlapping subscriptions keeps no queued rows once it acknowledged', async (t) => {
  // aedes queues one copy per matching subscription, delivers one and clears
  // the other by (brokerId, brokerCounter) while its messageId is unassigned
  const file = join(tmpDir(t), 'agent.db')
  const a = await startNode(t, file)
  const dev = await client(t, a.url, { clientId: 'overlap-dev', clean: false })
  await dev.subscribeAsync({ 'plant/#': { qos: 1 }, 'plant/line1': { qos: 1 } })
  const pub = await client(t, a.url, { clientId: 'overlap-pub' })
  const got = nextMessage(dev, 'plant/line1', WAIT_MS)
  await pub.publishAsync('plant/line1', 'x', { qos: 1 })
  assert.equal((await got).payload.toString(), 'x')
  await waitFor(() => rowsOf(a.db, 'broker_outgoing', 'overlap-dev') === 0, WAIT_MS, 'both queued copies to be cleared')
  assert.equal(a.persistence.stats().queuedMessages, 0)
  assert.deepEqual(a.errors, [])
})

test('a clean session leaves no rows behind', async (t) => {
  const file = join(tmpDir(t), 'agent.db')
  const a = await startNode(t, file)

  const c = await client(t, a.url, {
    clientId: 'clean-dev',
    clean: true,
    will: { topic: 'wills/clean-dev', payload: Buffer.from('gone'), qos: 1, retain: false },
  })
  assert.equal(rowsOf(a.db, 'broker_wills', 'clean-dev'), 1, 'the will is stored while connected')
  await c.subscribeAsync('loop/#', { qos: 2 })
  const echo = nextMessage(c, 'loop/x', WAIT_MS)
  await c.publishAsync('loop/x', 'q2', { qos: 2 })
  await echo

  const gone = disconnected(a.broker, 'clean-dev')
  await c.endAsync()
  await gone
  for (const table of BROKER_STATE_TABLES.filter((name) => name !== 'broker_retained')) {
    await waitFor(() => rowsOf(a.db, table, 'clean-dev') === 0, WAIT_MS, `no ${table} rows for clean-dev`)
  }
  assert.deepEqual(a.errors, [])
})

test('a clean session cut in the middle of an inbound QoS 2 handshake leaves no rows behind', async (t) => {
  const file = join(tmpDir(t), 'agent.db')
  const a = await startNode(t, file)

  const raw = await rawConnection(t, a.port)
  raw.socket.write(connectPacket({ clientId: 'half-open' }))
  await raw.waitForBytes(CONNACK_ACCEPTED.length, WAIT_MS)
  const stored = published(a.broker, 'up/q2')
  raw.socket.write(publishPacket('up/q2', Buffer.from('never released'), 2, 7))
  await stored
  await raw.waitForBytes(CONNACK_ACCEPTED.length + 4, WAIT_MS) // PUBREC
  assert.equal(rowsOf(a.db, 'broker_incoming', 'half-open'), 1, 'the QoS 2 packet awaits PUBREL')

  const gone = disconnected(a.broker, 'half-open')
  raw.socket.destroy() // no PUBREL, no DISCONNECT
  await gone
  await waitFor(
    () => rowsOf(a.db, 'broker_incoming', 'half-open') === 0,
    WAIT_MS,
    'the inbound QoS 2 state of the clean session to go',
  )
  assert.deepEqual(a.errors, [])
})
