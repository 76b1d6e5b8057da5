// SqliteStore behaviour beyond the shared contract: group commit and its
// durability promise, restarts, disk-full and I/O faults, the free-space
// floor, housekeeping. Real files in a per-test temp dir.
//
// Glossary
//   raw        | a second, plain better-sqlite3 connection: what another process would see
//   S          | bytes charged for one message of msg() (all equal)
//   open(t, o) | a started SqliteStore in a fresh temp dir, stopped after the test
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import {
  type AppendInput,
  BufferError,
  type BufferHealth,
  type CommitInfo,
  SqliteStore,
  type SqliteStoreOptions,
} from '../../../src/buffer/index.js'
import {
  captureLogger,
  eventMatching,
  fakeClock,
  silentLogger,
  testMessage,
  TEST_ROW_BYTES,
} from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { waitFor, withTimeout } from '../../helpers/wait.js'

const S = TEST_ROW_BYTES
const msg = (i: number, extra: Partial<AppendInput> = {}): AppendInput => testMessage(i, { ...extra })

type Opts = Omit<SqliteStoreOptions, 'dataDir' | 'logger'> & { dataDir?: string; logger?: SqliteStoreOptions['logger'] }

async function open(t: TestContext, o: Opts = {}): Promise<SqliteStore> {
  // After-hooks run in the order they are added: the store stops (its timers
  // write into the dir) before its temp dir is removed.
  let store: SqliteStore | undefined
  t.after(() => store?.stop())
  store = new SqliteStore({
    dataDir: o.dataDir ?? tmpDir(t, 'edge-buffer-'),
    logger: silentLogger(),
    maxBytes: 64 << 20,
    minFreeBytes: 0,
    ...o,
  })
  await store.start(AbortSignal.timeout(5000))
  return store
}

function rawConnection(t: TestContext, path: string): Database.Database {
  const raw = new Database(path, { readonly: true })
  t.after(() => raw.close())
  return raw
}

async function rejection(p: Promise<unknown>): Promise<BufferError> {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof BufferError, `expected BufferError, got ${String(err)}`)
    return err
  }
  assert.fail('expected a rejection')
}

function healthIs(store: SqliteStore, pred: (h: BufferHealth) => boolean, what: string): Promise<[BufferHealth]> {
  return eventMatching<[BufferHealth]>(store, 'health', pred, 5000, what)
}

test('resolves each append only after its batch committed (another connection sees it then, not before)', async (t) => {
  const store = await open(t, { batchWindowMs: 30, maxBatch: 1000 })
  const raw = rawConnection(t, store.path)
  const count = raw.prepare('SELECT count(*) FROM buffer_messages').pluck()
  const byId = raw.prepare('SELECT 1 FROM buffer_messages WHERE id = ?').pluck()
  const missingAtResolve: number[] = []
  const promises = Array.from({ length: 50 }, (_, i) =>
    store.append(msg(i)).then((r) => {
      // Runs at the very moment the promise resolves.
      if (byId.get(r.id) === undefined) missingAtResolve.push(r.id as number)
      return r
    }),
  )
  assert.equal(count.get(), 0, 'nothing is visible before the commit')
  let settled = false
  void Promise.all(promises).then(() => {
    settled = true
  })
  await new Promise((r) => setImmediate(r))
  assert.equal(settled, false, 'nothing resolves before the window ends')
  const results = await withTimeout(Promise.all(promises), 5000, 'the batch to commit')
  assert.deepEqual(missingAtResolve, [])
  assert.equal(count.get(), 50)
  assert.equal(new Set(results.map((r) => r.id)).size, 50)
})

test('commits many concurrent appends in few transactions, none larger than maxBatch', async (t) => {
  const store = await open(t, { maxBatch: 16, batchWindowMs: 5 })
  const commits: CommitInfo[] = []
  store.on('commit', (c) => commits.push(c))
  await Promise.all(Array.from({ length: 500 }, (_, i) => store.append(msg(i))))
  const sizes = commits.map((c) => c.appends)
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    500,
  )
  assert.ok(
    sizes.every((s) => s <= 16),
    `batch sizes ${sizes.join(',')}`,
  )
  assert.ok(commits.length <= Math.ceil(500 / 16) + 1, `${commits.length} commits for 500 appends`)
  assert.equal(store.stats().totals.commits, commits.length)
})

test('runs no window timer while idle', async (t) => {
  let armed = 0
  let live = 0
  const timers = {
    setTimeout: (fn: () => void, ms: number) => {
      armed++
      live++
      return setTimeout(() => {
        live--
        fn()
      }, ms)
    },
    clearTimeout: (h: unknown) => {
      live--
      clearTimeout(h as NodeJS.Timeout)
    },
  }
  const store = await open(t, { timers, batchWindowMs: 2 })
  assert.equal(armed, 0)
  await store.append(msg(1))
  assert.equal(armed, 1)
  assert.equal(live, 0, 'the timer is gone once the batch committed')
})

test('an abrupt close in the middle of a batch loses nothing that was resolved', async (t) => {
  const dataDir = tmpDir(t)
  const store = new SqliteStore({
    dataDir,
    logger: silentLogger(),
    maxBytes: 64 << 20,
    minFreeBytes: 0,
    maxBatch: 10,
    batchWindowMs: 60_000,
  })
  await store.start(AbortSignal.timeout(5000))
  const all = Array.from({ length: 25 }, (_, i) =>
    store.append(msg(i)).then(
      (r) => r.id,
      (e: unknown) => e,
    ),
  )
  // Two full batches committed; five appends wait for a window that never ends.
  const resolved = (await Promise.all(all.slice(0, 20))) as number[]
  // A transaction in progress on the store's own connection, never committed.
  const db = store.database.db
  db.exec('BEGIN IMMEDIATE')
  db.prepare(
    "INSERT INTO buffer_messages (id, queue, topic, qos, retain, priority, rule, conflate, when_full, created_at, size, payload) VALUES (999, 'up', 'x', 1, 0, 0, '', 0, 0, 0, 1, x'00')",
  ).run()
  store.destroy()
  const pending = await Promise.all(all.slice(20))
  for (const e of pending) assert.ok(e instanceof BufferError && e.code === 'EDGE_ERR_BUFFER_STOPPED', String(e))

  const raw = rawConnection(t, store.path)
  assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok')
  const ids = raw.prepare('SELECT id FROM buffer_messages ORDER BY id').pluck().all()
  assert.deepEqual(ids, resolved, 'every resolved message, and nothing uncommitted')

  const again = await open(t, { dataDir })
  assert.equal(again.stats().totals.messages, 20)
  // Ids go on above every committed one (above the reserved block: ID_BLOCK in sqlite-store.ts).
  const next = (await again.append(msg(99))).id as number
  assert.ok(next > Math.max(...resolved), `id ${next} after ${Math.max(...resolved)}`)
})

test('hands in-flight rows out again after a restart, in the same order', async (t) => {
  const dataDir = tmpDir(t)
  const first = await open(t, { dataDir })
  for (let i = 0; i < 5; i++) await first.append(msg(i))
  const taken = await first.takeBatch('up', 3)
  await first.stop()
  const second = await open(t, { dataDir })
  assert.equal(second.stats().totals.inFlight, 0)
  const again = await second.takeBatch('up', 10)
  assert.deepEqual(
    again.slice(0, 3).map((m) => m.id),
    taken.map((m) => m.id),
  )
  assert.equal(again.length, 5)
})

test('never reuses an id, even after the newest rows were acked and the store restarted', async (t) => {
  const dataDir = tmpDir(t)
  const first = await open(t, { dataDir })
  for (let i = 0; i < 5; i++) await first.append(msg(i))
  await first.ack((await first.takeBatch('up', 10)).map((m) => m.id))
  await first.stop()
  // What the file promises: no id below next_id is handed out again.
  const raw = rawConnection(t, first.path)
  const reserved = raw.prepare("SELECT value FROM buffer_meta WHERE key = 'next_id'").pluck().get() as number
  raw.close()
  assert.ok(reserved > 5, `next_id ${reserved} covers the ids used`)
  const second = await open(t, { dataDir })
  const id = (await second.append(msg(0))).id as number
  assert.ok(id > 5, `id ${id} after a restart`)
  assert.ok(id >= reserved, `id ${id} is at or above the reserved ${reserved}`)
  // And in order after that.
  assert.equal((await second.append(msg(1))).id, id + 1)
})

test('stop flushes the pending batch, truncates the WAL and is idempotent', async (t) => {
  const store = await open(t, { batchWindowMs: 60_000, maxBatch: 1000 })
  const pending = Array.from({ length: 5 }, (_, i) => store.append(msg(i)))
  await store.stop()
  const results = await Promise.all(pending)
  assert.equal(results.length, 5)
  assert.equal(statSync(`${store.path}-wal`, { throwIfNoEntry: false })?.size ?? 0, 0)
  await store.stop()
  const raw = rawConnection(t, store.path)
  assert.equal(raw.prepare('SELECT count(*) FROM buffer_messages').pluck().get(), 5)
})

test('start honours an aborted signal and leaves nothing open', async (t) => {
  const store = new SqliteStore({ dataDir: tmpDir(t), logger: silentLogger(), minFreeBytes: 0 })
  const ac = new AbortController()
  ac.abort(new Error('shutdown during start'))
  await assert.rejects(store.start(ac.signal), /shutdown during start/)
  await store.stop()
})

test('evicts within one batch of concurrent appends and counts exactly what it dropped', async (t) => {
  const store = await open(t, { maxBytes: 10 * S, maxBatch: 64 })
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => store.append(msg(i))))
  const kept = (await store.peek(undefined, 100)).map((m) => m.id)
  assert.deepEqual(
    kept,
    results.slice(20).map((r) => r.id),
  )
  const st = store.stats()
  assert.equal(st.totals.bytes, 10 * S)
  assert.equal(st.drops.byReason['evicted-full'], 20)
  assert.equal(st.totals.appended, 30)
})

test('disk full (max_page_count): typed rejection, no crash, policy applied, recovery once rows are acked', async (t) => {
  const store = await open(t, { maxFileBytes: 160 * 4096, diskFullRetryMs: 30, maintenanceIntervalMs: 10, maxBatch: 8 })
  const big = Buffer.alloc(2000, 0x63)
  const degraded = healthIs(store, (h) => h.reasons.includes('disk-full'), 'degraded disk-full')
  let resolved = 0
  let err: BufferError | undefined
  for (let i = 0; i < 5000 && err === undefined; i++) {
    try {
      await store.append(msg(i, { payload: big, whenFull: 'refuse' }))
      resolved++
    } catch (e) {
      err = e as BufferError
    }
  }
  assert.ok(err instanceof BufferError, 'the cap was hit')
  assert.equal(err.code, 'EDGE_ERR_BUFFER_FULL')
  assert.equal(err.fullReason, 'disk-full')
  assert.equal(err.retryable, true)
  assert.equal(err.sqliteCode, 'SQLITE_FULL')
  await degraded
  assert.equal(store.health().state, 'degraded')
  assert.equal(store.stats().totals.messages, resolved, 'every resolved message is still there')
  assert.ok(store.stats().drops.byReason['disk-full'] >= 1)
  // While degraded, refuse-class messages are rejected up front.
  await rejection(store.append(msg(0, { payload: big, whenFull: 'refuse' })))

  // Acks free pages; the probe then succeeds and the state clears by itself, without traffic.
  const healthy = healthIs(store, (h) => h.state === 'ok', 'health back to ok')
  await store.ack((await store.takeBatch('up', 60)).map((m) => m.id))
  await healthy
  assert.equal(typeof (await store.append(msg(1, { payload: big, whenFull: 'refuse' }))).id, 'number')
  const raw = rawConnection(t, store.path)
  assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok')
})

test('disk full with drop-oldest evicts to make room, and recovers when the file cap is raised', async (t) => {
  const store = await open(t, { maxFileBytes: 160 * 4096, diskFullRetryMs: 30, maintenanceIntervalMs: 10, maxBatch: 8 })
  const big = Buffer.alloc(2000, 0x64)
  let firstFailure: BufferError | undefined
  for (let i = 0; i < 5000 && firstFailure === undefined; i++) {
    await store.append(msg(i, { payload: big })).catch((e: unknown) => {
      firstFailure = e as BufferError
    })
  }
  assert.equal(firstFailure?.code, 'EDGE_ERR_BUFFER_FULL')
  const before = store.stats().totals.messages
  // Under the reduced cap, drop-oldest appends evict older rows and succeed.
  let stored = 0
  for (let i = 0; i < 50; i++) if ((await store.append(msg(i, { payload: big })).catch(() => null)) !== null) stored++
  assert.ok(stored >= 40, `${stored} of 50 stored under disk pressure`)
  assert.ok(
    store.stats().drops.byReason['disk-full'] >= stored,
    'evictions under disk pressure are counted as disk-full',
  )
  assert.ok(store.stats().totals.messages <= before)

  const healthy = healthIs(store, (h) => h.state === 'ok', 'health back to ok')
  store.database.db.pragma('max_page_count = 100000')
  await healthy
  assert.equal(store.stats().limits.effectiveMaxBytes, store.stats().limits.maxBytes)
  const n = store.stats().totals.messages
  await store.append(msg(0, { payload: big }))
  assert.equal(store.stats().totals.messages, n + 1, 'stored without evicting')
})

test('an I/O error rejects the batch with a typed error, degrades, and clears on the next commit', async (t) => {
  const { logger, lines } = captureLogger()
  const store = await open(t, { logger })
  await store.append(msg(0))
  const degraded = healthIs(store, (h) => h.reasons.includes('io-error'), 'degraded io-error')
  // A read-only connection makes every write fail with SQLITE_READONLY.
  store.database.db.pragma('query_only = 1')
  const err = await rejection(store.append(msg(1)))
  assert.equal(err.code, 'EDGE_ERR_BUFFER_IO')
  assert.equal(err.retryable, true)
  await degraded
  assert.ok(lines.some((l) => l.msg === 'buffer commit failed'))
  assert.equal(store.stats().totals.failedCommits, 1)
  const healthy = healthIs(store, (h) => h.state === 'ok', 'ok again')
  store.database.db.pragma('query_only = 0')
  await store.append(msg(2))
  await healthy
  assert.equal(store.stats().totals.messages, 2)
})

test('below the free-space floor: no net growth, refuse rejected, drop-oldest evicts, then resumes with hysteresis', async (t) => {
  const MiB = 1024 * 1024
  let free = 10_000 * MiB
  const statfs = () => ({ freeBytes: free, totalBytes: 100_000 * MiB })
  const clock = fakeClock()
  const store = await open(t, {
    statfs,
    now: clock,
    minFreeBytes: 100 * MiB,
    resumeFreeBytes: 200 * MiB,
    diskCheckIntervalMs: 1000,
  })
  for (let i = 0; i < 5; i++) await store.append(msg(i))
  free = 50 * MiB
  await store.append(msg(5)) // cached value still fresh: accepted
  assert.equal(store.stats().totals.messages, 6)
  clock.advance(1000)
  const degraded = healthIs(store, (h) => h.reasons.includes('disk-low'), 'disk-low')
  const err = await rejection(store.append(msg(6, { whenFull: 'refuse' })))
  assert.equal(err.code, 'EDGE_ERR_BUFFER_FULL')
  assert.equal(err.fullReason, 'disk-full')
  await degraded
  await store.append(msg(7))
  assert.equal(store.stats().totals.messages, 6, 'one evicted for one stored')
  assert.equal(store.stats().drops.byReason['disk-full'], 2)
  assert.equal(store.stats().limits.freeBytes, 50 * MiB)
  free = 150 * MiB // above the floor but below the resume mark: still degraded
  clock.advance(1000)
  await rejection(store.append(msg(8, { whenFull: 'refuse' })))
  free = 300 * MiB
  clock.advance(1000)
  const healthy = healthIs(store, (h) => h.state === 'ok', 'ok again')
  await store.append(msg(9, { whenFull: 'refuse' }))
  await healthy
  assert.equal(store.stats().totals.messages, 7)
})

test('sweeps expired rows without any read, and counts them by rule', async (t) => {
  const clock = fakeClock()
  const store = await open(t, { now: clock, sweepIntervalMs: 10, maintenanceIntervalMs: 5 })
  for (let i = 0; i < 3; i++) await store.append(msg(i, { expiresAt: clock() + 1000, rule: 'ttl-rule' }))
  await store.append(msg(9))
  clock.advance(1001)
  await eventMatching<[CommitInfo]>(store, 'commit', (c) => c.deletes === 3, 5000, 'the sweep commit')
  const st = store.stats()
  assert.equal(st.totals.messages, 1)
  assert.equal(st.drops.byReason.expired, 3)
  assert.equal(st.drops.byRule['ttl-rule']?.expired, 3)
})

test('logs drops as one rate-limited summary per reason', async (t) => {
  const { logger, lines } = captureLogger()
  const clock = fakeClock()
  const store = await open(t, { logger, now: clock, maxBytes: 2 * S, dropLogIntervalMs: 10_000 })
  for (let i = 0; i < 12; i++) await store.append(msg(i))
  const dropLines = () => lines.filter((l) => l.msg === 'buffer messages dropped')
  assert.equal(dropLines().length, 1, 'the first drop is reported at once, the rest wait')
  assert.equal(dropLines()[0]?.['count'], 1)
  clock.advance(10_000)
  await store.stop() // flushes the pending summary
  assert.equal(dropLines().length, 2)
  assert.equal(dropLines()[1]?.['count'], 9)
  assert.deepEqual(dropLines()[1]?.['byRule'], { r: 9 })
  assert.equal(dropLines()[1]?.['reason'], 'evicted-full')
})

test('notices rows deleted by another connection and recounts', async (t) => {
  const store = await open(t, { maintenanceIntervalMs: 10 })
  for (let i = 0; i < 10; i++) await store.append(msg(i))
  const other = new Database(store.path)
  t.after(() => other.close())
  other.prepare('DELETE FROM buffer_messages WHERE id <= 4').run()
  await waitFor(() => store.stats().totals.messages === 6, 5000, 'the recount after a foreign delete')
  assert.equal(store.stats().totals.bytes, 6 * S)
})

test('shares its connection with another owner of the same file', async (t) => {
  const { openDatabase } = await import('../../../src/storage/index.js')
  const store = await open(t)
  const other = openDatabase(store.path, {
    logger: silentLogger(),
    migrations: [{ id: 'test/001-other', up: (db) => db.exec('CREATE TABLE other_owner (x INTEGER)') }],
  })
  assert.equal(other.db, store.database.db)
  await store.stop()
  assert.equal(other.db.open, true, 'the store released its lease, the other owner keeps the connection')
  other.db.exec('INSERT INTO other_owner VALUES (1)')
  other.close()
  assert.equal(other.db.open, false)
})

test("durability 'full': an append resolves only once its commit is fsync'd", async (t) => {
  const dataDir = tmpDir(t)
  await (await open(t, { dataDir })).stop()
  const store = await open(t, { dataDir })
  assert.equal(store.stats().durability, 'full')
  const lease = store.database as { syncWal(): Promise<void> }
  const gates: Array<() => void> = []
  lease.syncWal = () => new Promise<void>((resolve) => gates.push(resolve))
  let resolved = false
  const p = store.append(msg(1)).then((r) => {
    resolved = true
    return r
  })
  // The commit runs at the end of this turn; let it and a few more turns pass.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
  assert.equal(gates.length, 1, 'one fsync requested for the commit')
  assert.equal(resolved, false, 'not acknowledged before the fsync')
  assert.equal(store.stats().totals.messages, 1, 'committed (visible) meanwhile')
  gates[0]?.()
  assert.equal((await p).id, 1)
})

test("durability 'full': a failed fsync rejects the commit's appends as retryable I/O errors", async (t) => {
  const store = await open(t)
  const lease = store.database as { syncWal(): Promise<void> }
  lease.syncWal = () => Promise.reject(new BufferError('EDGE_ERR_BUFFER_IO', 'fsync failed: EIO', { retryable: true }))
  await assert.rejects(
    store.append(msg(1)),
    (err: unknown) => err instanceof BufferError && err.code === 'EDGE_ERR_BUFFER_IO' && err.retryable,
  )
  assert.deepEqual(store.stats().health.reasons, ['io-error'])
})

test('refuses a second store on a file another store of this process uses', async (t) => {
  const dataDir = tmpDir(t)
  await open(t, { dataDir })
  const second = new SqliteStore({ dataDir, logger: silentLogger(), minFreeBytes: 0 })
  await assert.rejects(
    second.start(AbortSignal.timeout(5000)),
    (err: unknown) => err instanceof BufferError && err.code === 'EDGE_ERR_BUFFER_INVALID',
  )
})

test('a listener that throws does not fail the commit', async (t) => {
  const { logger, lines } = captureLogger()
  const store = await open(t, { logger })
  store.on('appended', () => {
    throw new Error('listener bug')
  })
  const r = await store.append(msg(1))
  assert.equal(r.id, 1)
  assert.ok(lines.some((l) => l.msg === 'buffer event listener threw'))
})

test('reports append, take and ack rates over the last seconds', async (t) => {
  const clock = fakeClock()
  const store = await open(t, { now: clock })
  await Promise.all(Array.from({ length: 100 }, (_, i) => store.append(msg(i))))
  await store.ack((await store.takeBatch('up', 40)).map((m) => m.id))
  clock.advance(2000)
  assert.deepEqual(store.stats().rates, { appendPerSec: 50, takePerSec: 20, ackPerSec: 20 })
})

// The drain hands out rows committed after it caught up from memory
// (live-tail.ts) and everything else from the file: both must give the same
// messages in the same order.
test('a drain that keeps up gets exactly what the file holds, in order', async (t) => {
  const store = await open(t)
  const first = await Promise.all([0, 1, 2].map((i) => store.append(msg(i))))
  assert.equal((await store.takeBatch('up', 10)).length, 3) // from the file; caught up now
  const props = { properties: { contentType: 'text/plain', userProperties: { a: '1' } } }
  const later = await Promise.all([3, 4, 5].map((i) => store.append(msg(i, i === 4 ? props : { priority: 0 }))))
  const fromFile = (await store.peek('up', 10)).filter((m) => !m.inFlight).map(({ inFlight: _, ...m }) => m)
  const taken = await store.takeBatch('up', 10)
  assert.deepEqual(taken, fromFile)
  assert.deepEqual(
    taken.map((m) => m.id),
    later.map((r) => r.id),
  )
  assert.ok(first.every((r) => r.id !== null))
})

test('a drain that falls behind (more than the in-memory tail holds) reads the rest from the file, nothing lost', async (t) => {
  const store = await open(t)
  await store.append(msg(0))
  await store.ack((await store.takeBatch('up', 10)).map((m) => m.id)) // caught up
  const n = 3000 // more than the tail holds (1024 rows)
  const appended = await Promise.all(Array.from({ length: n }, (_, i) => store.append(msg(i))))
  const taken: number[] = []
  for (let round = 0; round < 100 && taken.length < n; round++) {
    const batch = await store.takeBatch('up', 256)
    taken.push(...batch.map((m) => m.id))
    await store.ack(batch.map((m) => m.id))
  }
  assert.deepEqual(
    taken,
    appended.map((r) => r.id),
  )
})

test('a release while caught up puts the released rows back before newer ones', async (t) => {
  const store = await open(t)
  await store.takeBatch('up', 10) // caught up on an empty queue
  const a = await store.append(msg(0))
  const b = await store.append(msg(1))
  const got = await store.takeBatch('up', 10)
  assert.deepEqual(
    got.map((m) => m.id),
    [a.id, b.id],
  )
  const c = await store.append(msg(2))
  await store.release([a.id as number])
  assert.deepEqual(
    (await store.takeBatch('up', 10)).map((m) => m.id),
    [a.id, c.id],
  )
})

test("stats count the WAL fsyncs that acknowledgements waited for, and only with durability 'full'", async (t) => {
  const full = await open(t, { durability: 'full' })
  assert.equal(full.stats().totals.walFsyncs, 0, 'none before the first append')
  await full.append(msg(1))
  const afterOne = full.stats().totals.walFsyncs
  assert.ok(afterOne >= 1, `the append resolved after an fsync: ${afterOne}`)
  await full.append(msg(2))
  assert.ok(full.stats().totals.walFsyncs > afterOne, 'each later append that waited adds one')
  const durations = full.stats().totals.walFsyncDurations
  assert.equal(durations.count, full.stats().totals.walFsyncs, 'every fsync counted has its duration')
  assert.equal(
    durations.counts.reduce((a, b) => a + b, 0),
    durations.count,
  )
  assert.ok(durations.sumSec > 0 && durations.maxSec > 0 && durations.maxSec <= durations.sumSec)
  const normal = await open(t, { durability: 'normal' })
  await normal.append(msg(1))
  assert.equal(normal.stats().totals.walFsyncs, 0)
  assert.equal(normal.stats().totals.walFsyncDurations.count, 0)
})

test('range acks delete exactly the acknowledged rows: an unacked row in between stays, whatever the ack order', async (t) => {
  const store = await open(t)
  // One topic per priority, so that no append inherits a lower priority from its topic.
  for (let i = 0; i < 40; i++) await store.append(msg(i, { priority: 4 + (i % 2), topic: `t/${i % 2}` }))
  const taken = await store.takeBatch('up', 40)
  assert.equal(taken.length, 40)
  const byPriority = (p: number): number[] => taken.filter((m) => m.priority === p).map((m) => m.id)
  const high = byPriority(5)
  const low = byPriority(4)
  assert.deepEqual([high.length, low.length], [20, 20])
  // One unacked row in the middle of the high run; the low run acked whole, in reverse order, in the same op.
  const kept = high[7] as number
  const acked = [...high.filter((id) => id !== kept), ...low.reverse()]
  await store.ack(acked)
  assert.equal(store.stats().totals.messages, 1)
  assert.equal(store.stats().totals.bytes, taken.find((m) => m.id === kept)?.size)
  await store.release([kept])
  const again = await store.takeBatch('up', 40)
  assert.deepEqual(
    again.map((m) => m.id),
    [kept],
  )
  // Acking the same ids again changes nothing and counts nothing.
  await store.ack(acked)
  assert.equal(store.stats().totals.messages, 1)
  await store.ack([kept])
  assert.equal(store.stats().totals.messages, 0)
  // The topic ledger emptied with the rows: new appends of those topics are taken, nothing stale.
  await store.append(msg(100, { topic: 't/1' }))
  assert.equal((await store.takeBatch('up', 10)).length, 1)
})
