// buffer_topics (topic-ledger.ts) must count every queued row: per-topic
// order (invariant 4) depends on it. These tests change the file behind the
// store's back — the CLI's offline purge, a hand edit — and check that the
// ledger follows or is rebuilt.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import { BufferInspector } from '../../../src/buffer/inspect.js'
import type { AppendInput } from '../../../src/buffer/message-store.js'
import { SqliteStore } from '../../../src/buffer/sqlite-store.js'
import { captureLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const msg = (queue: string, topic: string, priority: number): AppendInput => ({
  queue,
  topic,
  payload: Buffer.from('x'),
  qos: 1,
  rule: 'r',
  priority,
})

async function open(t: TestContext, dataDir: string) {
  const { logger, lines } = captureLogger('info')
  const store = new SqliteStore({ dataDir, logger, maxBytes: 64 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  return { store, lines }
}

const ledgerWarnings = (lines: ReadonlyArray<{ msg?: string }>) =>
  lines.filter((l) => l.msg === 'buffer topic ledger disagreed with the rows, rebuilt')

test('the offline purge of one queue takes its ledger entries with it', async (t) => {
  const dataDir = tmpDir(t)
  {
    const { store } = await open(t, dataDir)
    await store.append(msg('a', 't/x', 0))
    await store.append(msg('b', 't/x', 0))
    await store.stop()
  }
  const inspector = BufferInspector.open(dataDir, { write: true })
  assert.equal(inspector.purge('a'), 1)
  inspector.close()
  const { store, lines } = await open(t, dataDir)
  assert.deepEqual(ledgerWarnings(lines), [])
  // Queue a's old row is gone: a new message of t/x keeps its own priority.
  const r = await store.append(msg('a', 't/x', 7))
  assert.equal((await store.takeBatch('a', 10))[0]?.priority, 7, String(r.id))
  // Queue b's row is still there: its topic still holds new messages back.
  await store.append(msg('b', 't/x', 7))
  assert.deepEqual(
    (await store.takeBatch('b', 10)).map((m) => m.priority),
    [0, 0],
  )
})

test('a ledger that disagrees with the rows is rebuilt at start, with a warning, and order holds', async (t) => {
  const dataDir = tmpDir(t)
  {
    const { store } = await open(t, dataDir)
    await store.append(msg('up', 't/x', 0))
    await store.append(msg('up', 't/y', 0))
    await store.stop()
  }
  const raw = new Database(`${dataDir}/edge-agent.db`)
  raw.exec('DELETE FROM buffer_topics')
  raw.close()
  const { store, lines } = await open(t, dataDir)
  assert.equal(ledgerWarnings(lines).length, 1)
  await store.append(msg('up', 't/x', 9))
  const batch = await store.takeBatch('up', 10)
  assert.deepEqual(
    batch.map((m) => [m.topic, m.priority]),
    [
      ['t/x', 0],
      ['t/y', 0],
      ['t/x', 0],
    ],
  )
})
