// Durable drop accounting (drop-ledger.ts) and loss reports (loss-report.ts)
// at the store: counts written with the drops survive an abrupt close, the
// ledger coalesces and trims (counting what it trimmed), purge counts, and
// a loss report drains exactly where the gap was.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import {
  type AppendInput,
  BufferInspector,
  LOSS_REPORT_RULE,
  type LossReport,
  SqliteStore,
  type SqliteStoreOptions,
} from '../../../src/buffer/index.js'
import { fakeClock, silentLogger, testMessage, TEST_ROW_BYTES } from '../../helpers/buffer-support.js'
import { waitFor } from '../../helpers/wait.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const S = TEST_ROW_BYTES
const msg = (i: number, extra: Partial<AppendInput> = {}): AppendInput =>
  testMessage(i, { whenFull: 'drop-oldest', ...extra })

async function open(t: TestContext, dataDir: string, o: Partial<SqliteStoreOptions> = {}): Promise<SqliteStore> {
  const store = new SqliteStore({ dataDir, logger: silentLogger(), maxBytes: 64 << 20, minFreeBytes: 0, ...o })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  return store
}

test('eviction counts are durable: after an abrupt close the reopened store reports them since creation', async (t) => {
  const dir = tmpDir(t, 'edge-drops-')
  const first = await open(t, dir, { maxBytes: 10 * S })
  for (let i = 0; i < 25; i++) await first.append(msg(i))
  assert.equal(first.stats().drops.byReason['evicted-full'], 15)
  first.destroy() // no graceful stop: what is in the file is what counts
  const second = await open(t, dir, { maxBytes: 10 * S })
  const s = second.stats()
  assert.equal(s.drops.total, 0, 'nothing dropped by this process yet')
  assert.equal(s.drops.sinceCreated?.byReason['evicted-full'], 15)
  assert.deepEqual(s.drops.sinceCreated?.byRule, { r: { 'evicted-full': 15 } })
  assert.deepEqual(s.drops.sinceCreated?.byQueue, { up: { 'evicted-full': 15 } })
  assert.equal(s.totals.messages + 15, 25)
})

test('the ledger coalesces a run of drops of one topic into one range with its id range', async (t) => {
  const store = await open(t, tmpDir(t, 'edge-drops-'), { maxBytes: 10 * S })
  const ids: number[] = []
  for (let i = 0; i < 30; i++) {
    const r = await store.append(msg(0)) // one topic
    ids.push(r.id as number)
  }
  const ranges = store.dropRanges()
  assert.equal(ranges.length, 1)
  const [r] = ranges
  assert.equal(r?.count, 20)
  assert.equal(r?.reason, 'evicted-full')
  assert.equal(r?.topic, 't/0000')
  assert.equal(r?.firstId, ids[0])
  assert.equal(r?.lastId, ids[19])
  assert.equal(store.dropRanges({ rule: 'other' }).length, 0)
  assert.equal(store.dropRanges({ since: Date.now() + 3_600_000 }).length, 0)
})

test('the ledger is capped: the oldest ranges are trimmed and counted, the totals keep every drop', async (t) => {
  const store = await open(t, tmpDir(t, 'edge-drops-'), { maxBytes: 5 * S, maxDropLedgerRows: 4 })
  for (let i = 0; i < 20; i++) await store.append(msg(i)) // 20 topics: one range each
  const d = store.stats().drops.sinceCreated
  assert.equal(d?.total, 15)
  assert.equal(d?.ledger.rows, 4)
  assert.equal(d?.ledger.trimmedRows, 11)
  assert.equal(d?.ledger.trimmedDrops, 11)
  assert.equal(store.dropRanges().reduce((n, r) => n + r.count, 0) + (d?.ledger.trimmedDrops ?? 0), 15)
})

test('purges are counted durably, by the store and by the CLI on the file', async (t) => {
  const dir = tmpDir(t, 'edge-drops-')
  const store = await open(t, dir)
  for (let i = 0; i < 7; i++) await store.append(msg(i))
  assert.equal(await store.purge('up'), 7)
  for (let i = 0; i < 3; i++) await store.append(msg(i, { rule: 'r2' }))
  await store.stop()
  const cli = BufferInspector.open(dir, { write: true })
  try {
    assert.equal(cli.purge(), 3)
    const totals = cli.dropTotals()
    assert.deepEqual(totals?.byRule, { r: { purged: 7 }, r2: { purged: 3 } })
    assert.equal(
      cli.drops().reduce((n, r) => n + r.count, 0),
      10,
    )
  } finally {
    cli.close()
  }
})

test('a loss report drains after what preceded the gap and before what follows it, with the counts of the gap', async (t) => {
  const store = await open(t, tmpDir(t, 'edge-drops-'), { maxBytes: 12 * S })
  store.setLossReports(
    new Map([['up', { topic: 'edge-agent/site-a/drops', site: 'site-a', ruleFilters: { r: 'plant/#' } }]]),
  )
  const ids: number[] = []
  for (let i = 0; i < 4; i++) ids.push((await store.append(msg(i))).id as number)
  // m0..m3 handed out (in flight: never evicted), then the buffer fills and evicts m4..
  const before = await store.takeBatch('up', 4)
  assert.deepEqual(
    before.map((m) => m.id),
    ids,
  )
  for (let i = 4; i < 20; i++) ids.push((await store.append(msg(i))).id as number)
  await store.ack(before.map((m) => m.id))
  const rest = await store.takeBatch('up', 100)
  const reportAt = rest.findIndex((m) => m.rule === LOSS_REPORT_RULE)
  assert.ok(reportAt >= 0, 'a report is queued')
  const report = JSON.parse(rest[reportAt]?.payload.toString() ?? '') as LossReport
  assert.equal(report.type, 'edge-agent/loss-report')
  assert.equal(report.reason, 'evicted-full')
  assert.equal(report.rule, 'r')
  assert.equal(report.topicFilter, 'plant/#')
  assert.equal(report.upstream, 'up')
  assert.equal(report.site, 'site-a')
  const evicted = store.stats().drops.byReason['evicted-full']
  assert.equal(report.count, evicted, 'one report carries every drop of the key (merged while queued)')
  assert.equal(report.firstId, ids[4])
  assert.equal(report.lastId, ids[3 + evicted])
  assert.equal(rest[reportAt]?.topic, 'edge-agent/site-a/drops')
  const data = rest.filter((m) => m.rule !== LOSS_REPORT_RULE).map((m) => m.id)
  assert.deepEqual(data, ids.slice(4 + evicted), 'what survived follows')
  assert.equal(reportAt, 0, 'the report comes before every message that followed the gap')
  assert.equal(rest.filter((m) => m.rule === LOSS_REPORT_RULE).length, 1, 'one report row, not one per batch')
})

test('no loss report for a queue that has none configured, nor for conflation', async (t) => {
  const store = await open(t, tmpDir(t, 'edge-drops-'), { maxBytes: 6 * S })
  store.setLossReports(new Map([['other', { topic: 'x/drops', site: 's', ruleFilters: {} }]]))
  for (let i = 0; i < 10; i++) await store.append(msg(i))
  const up = await store.takeBatch('up', 100)
  await store.ack(up.map((m) => m.id))
  for (let i = 0; i < 3; i++)
    await store.append(msg(0, { queue: 'other', conflation: 'latest-only', whenFull: 'refuse' }))
  const all = [...up, ...(await store.takeBatch('other', 100))]
  assert.equal(all.filter((m) => m.rule === LOSS_REPORT_RULE).length, 0)
  assert.equal(store.stats().drops.byReason.conflated, 2)
})

test('rows that expire under the drain cursor leave a report the next take still finds, before the later rows', async (t) => {
  const now = fakeClock()
  const store = await open(t, tmpDir(t, 'edge-drops-'), { now })
  store.setLossReports(new Map([['up', { topic: 'x/drops', site: 's', ruleFilters: {} }]]))
  for (let i = 0; i < 3; i++) await store.append(msg(i, { rule: 'ttl', expiresAt: now() + 1_000 }))
  const later = (await store.append(msg(9))).id as number
  now.advance(2_000)
  // This take passes the three expired rows (they are deleted by the next commit) and hands out the fourth.
  const first = await store.takeBatch('up', 10)
  assert.deepEqual(
    first.map((m) => m.id),
    [later],
  )
  await store.release([later])
  await waitFor(() => store.stats().drops.byReason.expired === 3, 5_000, 'the expired rows to be deleted')
  const next = await store.takeBatch('up', 10)
  assert.deepEqual(
    next.map((m) => m.rule),
    [LOSS_REPORT_RULE, 'r'],
  )
  const report = JSON.parse(next[0]?.payload.toString() ?? '') as LossReport
  assert.equal(report.reason, 'expired')
  assert.equal(report.count, 3)
})
