// MQTT 5 properties through both stores: what a device sent comes back
// exactly (binary correlation data, repeated user property keys), the byte
// estimate counts them as stored, rows of the older shape still read, and a
// handed-out row that expired leaves as a counted drop.
import assert from 'node:assert/strict'
import { describe, test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import {
  BUFFER_FILE_NAME,
  BufferError,
  estimateMessageBytes,
  type MessageProperties,
  type MessageStore,
  MemoryStore,
  SqliteStore,
} from '../../../src/buffer/index.js'
import { encodeProperties } from '../../../src/buffer/message-properties.js'
import { type Clock, fakeClock, silentLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

/** 0x00, bytes that are not UTF-8 (0xff, 0xfe, a lone continuation byte 0x80), and a truncated sequence (0xe2 0x82). */
const CORRELATION = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0x00, 0xe2, 0x82])

const ALL: MessageProperties = {
  contentType: 'application/json; charset=utf-8',
  payloadFormatIndicator: true,
  responseTopic: 'plant/line-1/reply/7',
  correlationData: CORRELATION,
  userProperties: { unit: '°C', tag: ['a', 'b', 'a'], empty: '', zeta: 'last' },
}

function sqliteFactory(t: TestContext, now: () => number, dataDir = tmpDir(t, 'edge-buffer-props-')) {
  return async (): Promise<SqliteStore> => {
    const store = new SqliteStore({ dataDir, logger: silentLogger(), now, minFreeBytes: 0, batchWindowMs: 1 })
    await store.start(AbortSignal.timeout(5000))
    t.after(() => store.stop())
    return store
  }
}

const stores: Array<[string, (t: TestContext, now: () => number) => Promise<MessageStore>]> = [
  [
    'MemoryStore',
    async (t, now) => {
      const store = new MemoryStore({ now })
      await store.start(AbortSignal.timeout(5000))
      t.after(() => store.stop())
      return store
    },
  ],
  ['SqliteStore', (t, now) => sqliteFactory(t, now)()],
]

function assertSameProperties(got: MessageProperties | undefined, want: MessageProperties): void {
  assert.ok(got !== undefined, 'properties came back')
  assert.equal(got.contentType, want.contentType)
  assert.equal(got.payloadFormatIndicator, want.payloadFormatIndicator)
  assert.equal(got.responseTopic, want.responseTopic)
  assert.ok(got.correlationData instanceof Uint8Array)
  assert.equal(
    Buffer.from(got.correlationData).toString('hex'),
    Buffer.from(want.correlationData ?? []).toString('hex'),
  )
  assert.deepEqual({ ...got.userProperties }, { ...want.userProperties })
  assert.deepEqual(Object.keys(got.userProperties ?? {}), Object.keys(want.userProperties ?? {}), 'key order kept')
}

for (const [name, make] of stores) {
  describe(`MQTT 5 properties: ${name}`, () => {
    let clock: Clock

    test('every carried property comes back exactly, binary correlation data and repeated keys included', async (t) => {
      clock = fakeClock()
      const store = await make(t, clock)
      await store.append({ queue: 'up', topic: 't/1', payload: Buffer.from('x'), qos: 1, properties: ALL })
      const [m] = await store.takeBatch('up', 10)
      assertSameProperties(m?.properties, ALL)
    })

    test('the byte estimate counts the properties as stored', async (t) => {
      clock = fakeClock()
      const store = await make(t, clock)
      const payload = Buffer.from('x')
      await store.append({ queue: 'up', topic: 't/1', payload, qos: 1, rule: 'r', properties: ALL })
      await store.append({ queue: 'up', topic: 't/2', payload, qos: 1, rule: 'r' })
      const [withProps, without] = await store.takeBatch('up', 10)
      const json = encodeProperties(ALL)
      assert.ok(json !== null && json.includes(CORRELATION.toString('base64')))
      const base = { queue: 'up', topic: 't/1', payload, rule: 'r' }
      assert.equal(withProps?.size, estimateMessageBytes({ ...base, propertiesJson: json }))
      assert.equal(without?.size, estimateMessageBytes({ ...base, topic: 't/2', propertiesJson: null }))
      assert.ok((withProps?.size ?? 0) > (without?.size ?? 0) + CORRELATION.length)
      assert.equal(store.stats().totals.bytes, (withProps?.size ?? 0) + (without?.size ?? 0))
    })

    test('a message without properties, or with empty ones, has none', async (t) => {
      clock = fakeClock()
      const store = await make(t, clock)
      await store.append({ queue: 'up', topic: 't/1', payload: Buffer.from('x'), qos: 0 })
      await store.append({ queue: 'up', topic: 't/2', payload: Buffer.from('x'), qos: 0, properties: {} })
      await store.append({
        queue: 'up',
        topic: 't/3',
        payload: Buffer.from('x'),
        qos: 0,
        properties: { userProperties: {} },
      })
      const rows = await store.takeBatch('up', 10)
      assert.deepEqual(
        rows.map((r) => r.properties),
        [undefined, undefined, undefined],
      )
    })

    test('properties the upstream encoder could not write are refused at append, nothing stored', async (t) => {
      clock = fakeClock()
      const store = await make(t, clock)
      const bad: unknown[] = [
        { userProperties: { n: 5 } },
        { userProperties: { list: ['ok', 7] } },
        { contentType: 42 },
        { correlationData: 'not binary' },
        { correlationData: Buffer.alloc(65536) },
      ]
      for (const properties of bad) {
        await assert.rejects(
          store.append({
            queue: 'up',
            topic: 't/1',
            payload: Buffer.from('x'),
            qos: 1,
            properties: properties as MessageProperties,
          }),
          (err: unknown) => err instanceof BufferError && err.code === 'EDGE_ERR_BUFFER_INVALID',
          JSON.stringify(properties),
        )
      }
      assert.equal(store.stats().totals.messages, 0)
    })

    test('a handed-out row dropped as expired is counted under expired, by rule', async (t) => {
      clock = fakeClock()
      const store = await make(t, clock)
      const { id } = await store.append({
        queue: 'up',
        topic: 't/1',
        payload: Buffer.from('x'),
        qos: 1,
        rule: 'telemetry',
        expiresAt: clock() + 1000,
      })
      const [m] = await store.takeBatch('up', 10)
      assert.equal(m?.id, id)
      await store.drop([id as number], 'expired')
      const s = store.stats()
      assert.equal(s.totals.messages, 0)
      assert.equal(s.drops.byReason.expired, 1)
      assert.deepEqual(s.drops.byRule['telemetry'], { expired: 1 })
    })
  })
}

describe('MQTT 5 properties: SqliteStore file', () => {
  test('properties survive a restart exactly', async (t) => {
    const clock = fakeClock()
    const dataDir = tmpDir(t, 'edge-buffer-props-restart-')
    const first = await sqliteFactory(t, clock, dataDir)()
    await first.append({ queue: 'up', topic: 't/1', payload: Buffer.from('x'), qos: 1, properties: ALL })
    await first.stop()
    const second = await sqliteFactory(t, clock, dataDir)()
    const [m] = await second.takeBatch('up', 10)
    assertSameProperties(m?.properties, ALL)
  })

  test('rows written in the older shape still read, and text that does not parse leaves the message without properties', async (t) => {
    const clock = fakeClock()
    const dataDir = tmpDir(t, 'edge-buffer-props-old-')
    const first = await sqliteFactory(t, clock, dataDir)()
    for (const topic of ['t/old-user', 't/old-full', 't/garbled'])
      await first.append({ queue: 'up', topic, payload: Buffer.from('x'), qos: 1, properties: { contentType: 'x' } })
    await first.stop()
    const db = new Database(`${dataDir}/${BUFFER_FILE_NAME}`)
    const set = db.prepare('UPDATE buffer_messages SET properties = ? WHERE topic = ?')
    // The shape before device properties were carried: user properties only, or
    // with content type and base64 correlation data.
    set.run('{"userProperties":{"k":["1","2"],"site":"A"}}', 't/old-user')
    set.run('{"contentType":"text/plain","correlationData":"AP8=","userProperties":{"a":"1"}}', 't/old-full')
    set.run('{not json', 't/garbled')
    db.close()
    const second = await sqliteFactory(t, clock, dataDir)()
    const rows = await second.takeBatch('up', 10)
    assert.deepEqual(
      rows.map((r) => r.topic),
      ['t/old-user', 't/old-full', 't/garbled'],
    )
    assert.deepEqual({ ...rows[0]?.properties?.userProperties }, { k: ['1', '2'], site: 'A' })
    assert.equal(rows[1]?.properties?.contentType, 'text/plain')
    assert.equal(Buffer.from(rows[1]?.properties?.correlationData ?? []).toString('hex'), '00ff')
    assert.deepEqual({ ...rows[1]?.properties?.userProperties }, { a: '1' })
    assert.equal(rows[2]?.properties, undefined)
  })

  test('a handed-out row dropped as expired gets a loss report in its place, sent next', async (t) => {
    const clock = fakeClock()
    const store = await sqliteFactory(t, clock)()
    store.setLossReports(new Map([['up', { topic: 'x/drops', site: 's', ruleFilters: { r: 't/#' } }]]))
    await store.append({ queue: 'up', topic: 't/1', payload: Buffer.from('x'), qos: 1, rule: 'r' })
    await store.append({ queue: 'up', topic: 't/2', payload: Buffer.from('y'), qos: 1, rule: 'r' })
    const [first] = await store.takeBatch('up', 1)
    await store.drop([first?.id as number], 'expired')
    const next = await store.takeBatch('up', 10)
    assert.deepEqual(
      next.map((m) => m.topic),
      ['x/drops', 't/2'],
    )
    const report = JSON.parse(next[0]?.payload.toString() ?? '{}') as Record<string, unknown>
    assert.equal(report['reason'], 'expired')
    assert.equal(report['count'], 1)
  })
})
