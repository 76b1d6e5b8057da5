// The MessageStore contract, written once and run against every
// implementation (MQTT.js abstract_store style): test/unit/buffer/
// message-store-contract.test.ts runs it for MemoryStore and SqliteStore.
//
// Glossary
//   makeStore | factory returning a STARTED store whose cleanup is registered on t
//   S         | bytes charged for one message of the shape msg() builds (all equal)
//   clock     | injected `now`; TTL tests move it instead of sleeping
import assert from 'node:assert/strict'
import { describe, test, type TestContext } from 'node:test'
import {
  type AppendInput,
  type AppendResult,
  BufferError,
  type CommitInfo,
  estimateMessageBytes,
  type MessageStore,
  type StoredMessage,
} from '../../src/buffer/index.js'
import { type Clock, fakeClock, prng } from './buffer-support.js'
import { withTimeout } from './wait.js'

export interface ContractStoreOptions {
  /** Byte cap; default large. */
  readonly maxBytes?: number
  readonly now: () => number
}

export type MakeStore = (t: TestContext, options: ContractStoreOptions) => Promise<MessageStore>

const PAYLOAD = Buffer.alloc(50, 0x61)

/** A message of fixed size S: queue 'up', 6-char topics, 50-byte payload, 2-char rule. */
function msg(topic: string, extra: Partial<AppendInput> = {}): AppendInput {
  return { queue: 'up', topic, payload: PAYLOAD, qos: 1, rule: 'r1', ...extra }
}
const S = estimateMessageBytes({ queue: 'up', topic: 't/0000', payload: PAYLOAD, rule: 'r1', propertiesJson: null })

function topicOf(i: number): string {
  return `t/${String(i).padStart(4, '0')}`
}

async function expectBufferError(p: Promise<unknown>, code: string): Promise<BufferError> {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof BufferError, `expected BufferError, got ${String(err)}`)
    assert.equal(err.code, code)
    return err
  }
  assert.fail(`expected rejection with ${code}`)
}

const ids = (ms: readonly StoredMessage[]): number[] => ms.map((m) => m.id)

function idOf(r: AppendResult): number {
  assert.equal(typeof r.id, 'number', 'append stored the message')
  return r.id as number
}

function nextCommit(store: MessageStore, pred: (c: CommitInfo) => boolean): Promise<CommitInfo> {
  let listener: ((c: CommitInfo) => void) | undefined
  return withTimeout(
    new Promise<CommitInfo>((resolve) => {
      listener = (c) => {
        if (pred(c)) resolve(c)
      }
      store.on('commit', listener)
    }),
    2000,
    'a matching commit',
  ).finally(() => {
    if (listener !== undefined) store.off('commit', listener)
  })
}

export function messageStoreContract(name: string, makeStore: MakeStore): void {
  describe(`MessageStore contract: ${name}`, () => {
    let clock: Clock
    const make = (t: TestContext, maxBytes?: number): Promise<MessageStore> => {
      clock = fakeClock()
      return makeStore(t, { now: clock, ...(maxBytes === undefined ? {} : { maxBytes }) })
    }

    test('resolves appends with increasing ids and hands them out FIFO', async (t) => {
      const store = await make(t)
      const results = await Promise.all([0, 1, 2, 3].map((i) => store.append(msg(topicOf(i)))))
      const got = results.map((r) => r.id as number)
      assert.deepEqual(
        [...got].sort((a, b) => a - b),
        got,
      )
      assert.equal(new Set(got).size, 4)
      const batch = await store.takeBatch('up', 10)
      assert.deepEqual(ids(batch), got)
      assert.equal(batch[0]?.topic, 't/0000')
      assert.deepEqual(batch[0]?.payload, PAYLOAD)
      assert.equal(batch[0]?.qos, 1)
      assert.equal(batch[0]?.size, S)
    })

    test('keeps queues apart', async (t) => {
      const store = await make(t)
      await store.append(msg('t/a', { queue: 'a' }))
      await store.append(msg('t/b', { queue: 'b' }))
      assert.deepEqual(
        (await store.takeBatch('a', 10)).map((m) => m.queue),
        ['a'],
      )
      assert.deepEqual(
        (await store.takeBatch('b', 10)).map((m) => m.queue),
        ['b'],
      )
      assert.deepEqual(await store.takeBatch('c', 10), [])
    })

    test('hands out higher priority first and FIFO within a priority', async (t) => {
      const store = await make(t)
      const a = await store.append(msg('t/a', { priority: 0 }))
      const b = await store.append(msg('t/b', { priority: 5 }))
      const c = await store.append(msg('t/c', { priority: 0 }))
      const d = await store.append(msg('t/d', { priority: 5 }))
      assert.deepEqual(ids(await store.takeBatch('up', 10)), [b.id, d.id, a.id, c.id])
    })

    test('never lets a higher priority overtake an older message of the same topic', async (t) => {
      const store = await make(t)
      const low = await store.append(msg('t/x', { priority: 0 }))
      const other = await store.append(msg('t/y', { priority: 3 }))
      const high = await store.append(msg('t/x', { priority: 9 }))
      const batch = await store.takeBatch('up', 10)
      // t/x's new message inherits the priority of its queued predecessor: it stays behind it.
      assert.deepEqual(ids(batch), [other.id, low.id, high.id])
      assert.equal(batch[2]?.priority, 0)
      // Given back, the old one still leads its successor.
      await store.release([idOf(low), idOf(high)])
      assert.deepEqual(ids(await store.takeBatch('up', 10)), [low.id, high.id])
      // Once the topic's older rows are gone, its new priority applies.
      await store.ack([idOf(low), idOf(high), idOf(other)])
      const later = await store.append(msg('t/x', { priority: 9 }))
      const lower = await store.append(msg('t/z', { priority: 1 }))
      const next = await store.takeBatch('up', 10)
      assert.deepEqual(ids(next), [later.id, lower.id])
      assert.equal(next[0]?.priority, 9)
    })

    test('a lower priority for a topic applies at once, and the older rows still lead', async (t) => {
      const store = await make(t)
      const a = await store.append(msg('t/x', { priority: 5 }))
      const b = await store.append(msg('t/x', { priority: 1 }))
      const c = await store.append(msg('t/x', { priority: 5 }))
      const batch = await store.takeBatch('up', 10)
      assert.deepEqual(ids(batch), [a.id, b.id, c.id])
      assert.deepEqual(
        batch.map((m) => m.priority),
        [5, 1, 1],
      )
    })

    test('respects max and does not hand out in-flight messages twice', async (t) => {
      const store = await make(t)
      for (let i = 0; i < 5; i++) await store.append(msg(topicOf(i)))
      const first = await store.takeBatch('up', 2)
      const second = await store.takeBatch('up', 2)
      const third = await store.takeBatch('up', 2)
      assert.equal(first.length, 2)
      assert.equal(second.length, 2)
      assert.equal(third.length, 1)
      assert.equal(new Set([...ids(first), ...ids(second), ...ids(third)]).size, 5)
      assert.deepEqual(await store.takeBatch('up', 2), [])
      assert.equal(store.stats().totals.inFlight, 5)
    })

    test('deletes acknowledged messages and ignores unknown ids', async (t) => {
      const store = await make(t)
      for (let i = 0; i < 3; i++) await store.append(msg(topicOf(i)))
      const batch = await store.takeBatch('up', 2)
      await store.ack([...ids(batch), 999_999])
      const st = store.stats()
      assert.equal(st.totals.messages, 1)
      assert.equal(st.totals.acked, 2)
      assert.equal(st.totals.inFlight, 0)
      assert.equal(st.totals.bytes, S)
      assert.deepEqual(
        (await store.peek('up')).map((m) => m.topic),
        [topicOf(2)],
      )
      await store.ack([])
    })

    test('makes released messages eligible again at their original position', async (t) => {
      const store = await make(t)
      const r = await Promise.all([0, 1, 2, 3].map((i) => store.append(msg('t/same', { payload: Buffer.from([i]) }))))
      const first = await store.takeBatch('up', 2)
      assert.deepEqual(ids(first), [r[0]?.id, r[1]?.id])
      await store.release(ids(first))
      assert.deepEqual(
        ids(await store.takeBatch('up', 10)),
        r.map((x) => x.id),
      )
      assert.equal(store.stats().totals.released, 2)
    })

    test('releaseAll gives back every in-flight message of one queue', async (t) => {
      const store = await make(t)
      await store.append(msg('t/a', { queue: 'a' }))
      await store.append(msg('t/b', { queue: 'b' }))
      await store.takeBatch('a', 10)
      await store.takeBatch('b', 10)
      assert.equal(await store.releaseAll('a'), 1)
      assert.equal(store.stats().totals.inFlight, 1)
      assert.equal((await store.takeBatch('a', 10)).length, 1)
      assert.equal(await store.releaseAll(), 2)
      assert.equal(store.stats().totals.inFlight, 0)
    })

    test('keeps only the newest not-in-flight message of a latest-only topic', async (t) => {
      const store = await make(t)
      const c = { conflation: 'latest-only' } as const
      await store.append(msg('t/c', { ...c, payload: Buffer.from('1') }))
      const inFlight = await store.takeBatch('up', 1)
      await store.append(msg('t/c', { ...c, payload: Buffer.from('2') }))
      const last = await store.append(msg('t/c', { ...c, payload: Buffer.from('3') }))
      await store.append(msg('t/other', { payload: Buffer.from('x') }))
      const rest = await store.takeBatch('up', 10)
      assert.deepEqual(
        rest.map((m) => m.payload.toString()),
        ['3', 'x'],
      )
      assert.equal(rest[0]?.id, last.id)
      const st = store.stats()
      assert.equal(st.drops.byReason.conflated, 1)
      assert.equal(st.drops.byRule['r1']?.conflated, 1)
      // The in-flight one was not touched and can still be acked.
      await store.ack(ids(inFlight))
      assert.equal(store.stats().totals.acked, 1)
    })

    test('drops a released latest-only message that has a newer one instead of redelivering it', async (t) => {
      const store = await make(t)
      const c = { conflation: 'latest-only' } as const
      await store.append(msg('t/c', { ...c, payload: Buffer.from('old') }))
      const taken = await store.takeBatch('up', 1)
      await store.append(msg('t/c', { ...c, payload: Buffer.from('new') }))
      await store.release(ids(taken))
      const again = await store.takeBatch('up', 10)
      assert.deepEqual(
        again.map((m) => m.payload.toString()),
        ['new'],
      )
      if (store.stats().drops.byReason.conflated < 1) await nextCommit(store, (c) => c.deletes > 0)
      assert.equal(store.stats().drops.byReason.conflated, 1)
      assert.equal(store.stats().totals.messages, 1)
    })

    test('drops expired messages when read, counts them, and never hands them out', async (t) => {
      const store = await make(t)
      await store.append(msg('t/a', { expiresAt: clock() + 1000 }))
      const keep = await store.append(msg('t/b', { expiresAt: clock() + 60_000 }))
      const forever = await store.append(msg('t/c'))
      clock.advance(1000)
      assert.deepEqual(ids(await store.takeBatch('up', 10)), [keep.id, forever.id])
      // SqliteStore deletes it with the next group commit; MemoryStore at once.
      if (store.stats().drops.byReason.expired < 1) await nextCommit(store, (c) => c.deletes > 0)
      assert.equal(store.stats().drops.byReason.expired, 1)
      assert.equal(store.stats().drops.byRule['r1']?.expired, 1)
    })

    test('resolves an already expired append as dropped without storing it', async (t) => {
      const store = await make(t)
      const r = await store.append(msg('t/a', { expiresAt: clock() - 1 }))
      assert.deepEqual(r, { id: null, dropped: 'expired' })
      assert.equal(store.stats().totals.messages, 0)
      assert.equal(store.stats().drops.byReason.expired, 1)
    })

    test('drop-oldest evicts exactly the oldest rows needed to fit and counts them', async (t) => {
      const store = await make(t, 5 * S)
      const r = []
      for (let i = 0; i < 5; i++) r.push(await store.append(msg(topicOf(i))))
      r.push(await store.append(msg(topicOf(5))))
      r.push(await store.append(msg(topicOf(6))))
      const left = (await store.peek('up', 100)).map((m) => m.id)
      assert.deepEqual(
        left,
        r.slice(2).map((x) => x.id),
      )
      const st = store.stats()
      assert.equal(st.totals.bytes, 5 * S)
      assert.equal(st.drops.byReason['evicted-full'], 2)
      assert.equal(st.drops.byRule['r1']?.['evicted-full'], 2)
      assert.equal(st.drops.total, 2)
    })

    test('drop-lowest-priority evicts the lowest priority first, oldest first, never a higher one', async (t) => {
      const store = await make(t, 4 * S)
      const p5a = await store.append(msg(topicOf(1), { priority: 5 }))
      await store.append(msg(topicOf(2), { priority: 1 }))
      const p3 = await store.append(msg(topicOf(3), { priority: 3 }))
      const p1b = await store.append(msg(topicOf(4), { priority: 1 }))
      const policy = { whenFull: 'drop-lowest-priority' } as const
      const n1 = await store.append(msg(topicOf(5), { priority: 4, ...policy }))
      let left = (await store.peek(undefined, 100)).map((m) => m.id)
      assert.deepEqual(left, [p5a.id, p3.id, p1b.id, n1.id], 'the oldest priority-1 row goes first')
      const n2 = await store.append(msg(topicOf(6), { priority: 4, ...policy }))
      left = (await store.peek(undefined, 100)).map((m) => m.id)
      assert.deepEqual(left, [p5a.id, p3.id, n1.id, n2.id])
      // Priority 2: every stored row ranks higher, so nothing may be evicted for it.
      await expectBufferError(store.append(msg(topicOf(7), { priority: 2, ...policy })), 'EDGE_ERR_BUFFER_FULL')
      const st = store.stats()
      assert.equal(st.drops.byReason['evicted-full'], 2)
      assert.equal(st.drops.byReason.refused, 1)
      assert.equal(st.totals.messages, 4)
    })

    test('refuse rejects with EDGE_ERR_BUFFER_FULL, stores nothing, and accepts again after an ack', async (t) => {
      const store = await make(t, 3 * S)
      const refuse = { whenFull: 'refuse' } as const
      for (let i = 0; i < 3; i++) await store.append(msg(topicOf(i), refuse))
      const err = await expectBufferError(store.append(msg(topicOf(3), refuse)), 'EDGE_ERR_BUFFER_FULL')
      assert.equal(err.retryable, true)
      assert.equal(err.fullReason, 'buffer-full')
      assert.equal(store.stats().totals.messages, 3)
      assert.equal(store.stats().drops.byReason.refused, 1)
      const batch = await store.takeBatch('up', 1)
      await store.ack(ids(batch))
      const ok = await store.append(msg(topicOf(3), refuse))
      assert.equal(typeof ok.id, 'number')
      assert.equal(store.stats().totals.messages, 3)
    })

    test('never evicts refuse-class or in-flight rows to make room', async (t) => {
      const store = await make(t, 3 * S)
      const keep = idOf(await store.append(msg(topicOf(0), { whenFull: 'refuse' })))
      const flying = idOf(await store.append(msg(topicOf(1))))
      await store.append(msg(topicOf(2)))
      assert.deepEqual(ids(await store.takeBatch('up', 2)), [keep, flying])
      await store.release([keep])
      const n = idOf(await store.append(msg(topicOf(3))))
      assert.deepEqual(
        (await store.peek(undefined, 10)).map((m) => m.id),
        [keep, flying, n],
      )
      assert.equal(store.stats().drops.byReason['evicted-full'], 1)
      // Nothing left that may be evicted: the next one is refused.
      await store.takeBatch('up', 10)
      await expectBufferError(store.append(msg(topicOf(4))), 'EDGE_ERR_BUFFER_FULL')
    })

    test('rejects a message larger than the whole cap as not retryable', async (t) => {
      const store = await make(t, 2 * S)
      const err = await expectBufferError(
        store.append(msg('t/big', { payload: Buffer.alloc(3 * S) })),
        'EDGE_ERR_BUFFER_FULL',
      )
      assert.equal(err.retryable, false)
      assert.equal(err.fullReason, 'too-large')
    })

    test('purge deletes one queue, in-flight rows included, and counts purged drops by rule', async (t) => {
      const store = await make(t)
      for (let i = 0; i < 3; i++) await store.append(msg(topicOf(i), { queue: 'a', rule: 'ra' }))
      await store.append(msg('t/b', { queue: 'b', rule: 'rb' }))
      await store.takeBatch('a', 1)
      assert.equal(await store.purge('a'), 3)
      const st = store.stats()
      assert.equal(st.totals.messages, 1)
      assert.equal(st.totals.inFlight, 0)
      assert.equal(st.drops.byReason.purged, 3)
      assert.equal(st.drops.byRule['ra']?.purged, 3)
      assert.equal(await store.purge(), 1)
      assert.equal(store.stats().totals.bytes, 0)
    })

    test('peek shows drain order with in-flight flags and takes nothing', async (t) => {
      const store = await make(t)
      const a = await store.append(msg('t/a', { priority: 0 }))
      const b = await store.append(msg('t/b', { priority: 2 }))
      await store.takeBatch('up', 1)
      const peeked = await store.peek('up', 10)
      assert.deepEqual(
        peeked.map((m) => [m.id, m.inFlight]),
        [
          [b.id, true],
          [a.id, false],
        ],
      )
      assert.deepEqual(ids(await store.takeBatch('up', 10)), [a.id])
      assert.equal((await store.peek('up', 1)).length, 1)
    })

    test('exportRows yields every row of a queue in id order with a total', async (t) => {
      const store = await make(t)
      for (let i = 0; i < 7; i++)
        await store.append(
          msg(topicOf(i), { queue: i % 2 === 0 ? 'a' : 'b', properties: { userProperties: { k: String(i) } } }),
        )
      const exp = await store.exportRows('a')
      assert.equal(exp.total, 4)
      const rows = []
      for await (const r of exp.rows) rows.push(r)
      assert.deepEqual(
        rows.map((r) => r.topic),
        [topicOf(0), topicOf(2), topicOf(4), topicOf(6)],
      )
      assert.deepEqual(rows[1]?.properties?.userProperties, { k: '2' })
      const all = await store.exportRows()
      assert.equal(all.total, 7)
    })

    test('carries MQTT 5 properties and flags through', async (t) => {
      const store = await make(t)
      const properties = {
        contentType: 'application/json',
        correlationData: Buffer.from([1, 2, 3]),
        userProperties: { a: ['1', '2'] },
      }
      await store.append(msg('t/p', { retain: true, qos: 2, properties }))
      const [m] = await store.takeBatch('up', 1)
      assert.equal(m?.retain, true)
      assert.equal(m?.qos, 2)
      assert.equal(m?.properties?.contentType, 'application/json')
      assert.deepEqual(Buffer.from(m?.properties?.correlationData ?? []), Buffer.from([1, 2, 3]))
      assert.deepEqual(m?.properties?.userProperties, { a: ['1', '2'] })
    })

    test('stats reports depth, bytes, in-flight and oldest age per queue', async (t) => {
      const store = await make(t)
      await store.append(msg('t/a', { queue: 'a' }))
      clock.advance(500)
      await store.append(msg('t/a', { queue: 'a' }))
      await store.append(msg('t/b', { queue: 'b' }))
      await store.takeBatch('a', 1)
      clock.advance(250)
      const st = store.stats()
      const a = st.queues.find((q) => q.queue === 'a')
      assert.deepEqual(a, {
        queue: 'a',
        depth: 2,
        bytes:
          2 * estimateMessageBytes({ queue: 'a', topic: 't/a', payload: PAYLOAD, rule: 'r1', propertiesJson: null }),
        inFlight: 1,
        oldestAgeMs: 750,
      })
      assert.equal(st.queues.find((q) => q.queue === 'b')?.oldestAgeMs, 250)
      assert.equal(st.totals.messages, 3)
      assert.equal(st.totals.appended, 3)
      assert.equal(st.totals.taken, 1)
      assert.equal(st.health.state, 'ok')
    })

    test('emits appended with the queue once the message is committed', async (t) => {
      const store = await make(t)
      let listener: ((queues: readonly string[]) => void) | undefined
      const seen = withTimeout(
        new Promise<readonly string[]>((resolve) => {
          listener = (queues) => {
            if (queues.includes('z')) resolve(queues)
          }
          store.on('appended', listener)
        }),
        2000,
        "'appended' for queue z",
      )
      const r = await store.append(msg('t/z', { queue: 'z' }))
      assert.ok((await seen).includes('z'))
      if (listener !== undefined) store.off('appended', listener)
      assert.equal(typeof r.id, 'number')
    })

    test('rejects invalid input with EDGE_ERR_BUFFER_INVALID', async (t) => {
      const store = await make(t)
      await expectBufferError(store.append({ ...msg('t/a'), queue: '' }), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(store.append({ ...msg('t/a'), topic: '' }), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(store.append({ ...msg('t/a'), priority: 1.5 }), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(store.append({ ...msg('t/a'), qos: 3 as 0 }), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(
        store.append({ ...msg('t/a'), payload: 'x' as unknown as Uint8Array }),
        'EDGE_ERR_BUFFER_INVALID',
      )
      await expectBufferError(store.append({ ...msg('t/a'), whenFull: 'maybe' as 'refuse' }), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(store.takeBatch('up', 0), 'EDGE_ERR_BUFFER_INVALID')
      await expectBufferError(store.ack([0]), 'EDGE_ERR_BUFFER_INVALID')
      assert.equal(store.stats().totals.messages, 0)
    })

    test('hands out one topic in id order under random priorities, takes, releases and acks', async (t) => {
      const store = await make(t)
      const seed = 0x5eed
      const rand = prng(seed)
      const topics = ['t/a', 't/b', 't/c']
      let checks = 0
      for (let step = 0; step < 300; step++) {
        const r = rand()
        if (r < 0.5) {
          await store.append(
            msg(topics[Math.floor(rand() * topics.length)] ?? 't/a', { priority: Math.floor(rand() * 4) }),
          )
        } else if (r < 0.75) {
          const batch = await store.takeBatch('up', 1 + Math.floor(rand() * 4))
          // Invariant: every older row of a handed-out message's topic is in flight.
          const rows = await store.peek('up', 10_000)
          for (const m of batch) {
            const older = rows.filter((x) => x.topic === m.topic && x.id < m.id)
            assert.ok(
              older.every((x) => x.inFlight),
              `seed ${seed} step ${step}: ${m.id} overtook an older ${m.topic} row`,
            )
            checks++
          }
        } else {
          const flying = (await store.peek('up', 10_000)).filter((x) => x.inFlight).map((x) => x.id)
          if (flying.length === 0) continue
          // Release is "all in flight" (reconnect); ack is oldest-first (upstream PUBACK order).
          if (rand() < 0.3) await store.releaseAll('up')
          else await store.ack(flying.slice(0, 1 + Math.floor(rand() * flying.length)))
        }
      }
      assert.ok(checks > 20, `only ${checks} checks ran`)
    })

    test('rejects operations after stop with EDGE_ERR_BUFFER_STOPPED', async (t) => {
      const store = await make(t)
      await (store as unknown as { stop(): Promise<void> }).stop()
      await (store as unknown as { stop(): Promise<void> }).stop()
      await expectBufferError(store.append(msg('t/a')), 'EDGE_ERR_BUFFER_STOPPED')
      await expectBufferError(store.takeBatch('up', 1), 'EDGE_ERR_BUFFER_STOPPED')
    })
  })
}
