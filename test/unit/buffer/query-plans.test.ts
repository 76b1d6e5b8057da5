// Every hot-path statement of the message store must plan as an index
// SEARCH, never a full SCAN of buffer_messages and never a temp B-tree for
// ORDER BY: that is what keeps takeBatch O(batch) and append O(log n) as
// the backlog grows. Checked on an empty file (no statistics) and on a
// populated, ANALYZEd one (the planner may change its mind with stat4).
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import type Database from 'better-sqlite3'
import { openDatabase } from '../../../src/storage/index.js'
import { MESSAGE_STORE_MIGRATIONS, SQL } from '../../../src/buffer/message-schema.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

// Whole-table reads that are fine where they run: once at start / recount, or CLI-only.
const FULL_SCAN_ALLOWED = new Set<keyof typeof SQL>([
  'aggregate',
  'countAll',
  'purgeChunkAll',
  'topicRebuild',
  'topicDeleteAll',
  'topicRowCount',
])

function plan(db: Database.Database, sql: string): string {
  const params = (sql.match(/\?/g) ?? []).map(() => 1)
  const named = /@\w+/.test(sql)
  if (named) return 'write'
  return (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as Array<{ detail: string }>)
    .map((r) => r.detail)
    .join(' | ')
}

function checkAll(db: Database.Database, label: string): void {
  for (const key of Object.keys(SQL) as Array<keyof typeof SQL>) {
    const p = plan(db, SQL[key])
    if (p === 'write') continue
    if (key !== 'topicRebuild') assert.doesNotMatch(p, /TEMP B-TREE/, `${label} ${key}: ${p}`)
    if (!FULL_SCAN_ALLOWED.has(key)) assert.doesNotMatch(p, /\bSCAN buffer_messages\b/, `${label} ${key}: ${p}`)
  }
}

test('hot-path statements use indexes on an empty and on an analyzed file', (t) => {
  const lease = openDatabase(join(tmpDir(t), 'plans.db'), {
    logger: silentLogger(),
    migrations: MESSAGE_STORE_MIGRATIONS,
  })
  t.after(() => lease.close())
  const db = lease.db
  checkAll(db, 'empty')
  const ins = db.prepare(SQL.insert)
  db.transaction(() => {
    for (let i = 1; i <= 20_000; i++) {
      // id, queue, topic, qos, retain, priority, rule, conflate, when_full, created_at, expires_at, size, payload,
      // properties
      ins.run(
        i,
        `q${i % 4}`,
        `t/${i % 500}`,
        1,
        0,
        i % 3,
        'r',
        0,
        i % 3,
        i,
        i % 2 === 0 ? i + 1000 : null,
        100,
        Buffer.alloc(10),
        null,
      )
    }
  })()
  db.exec('ANALYZE')
  checkAll(db, 'analyzed')
  // The drain reads one range of the drain index per priority.
  assert.match(plan(db, SQL.takeRange), /USING INDEX buffer_messages_drain \(queue=\? AND priority=\? AND rowid>\?\)/)
  assert.match(plan(db, SQL.takeIds), /COVERING INDEX buffer_messages_drain/)
  // Range acks count and delete one range of the drain index.
  const ackRange = /INDEX buffer_messages_drain \(queue=\? AND priority=\? AND rowid>\? AND rowid<\?\)/
  assert.match(plan(db, SQL.countAckRange), ackRange)
  assert.match(plan(db, SQL.deleteAckRange), ackRange)
  // Conflation reads only the partial index of latest-only rows.
  assert.match(plan(db, SQL.topicIds), /buffer_messages_conflate/)
  assert.match(plan(db, SQL.topicHasNewer), /buffer_messages_conflate/)
  // No index over every row's topic: it doubled the cost of append + ack.
  const indexes = (
    db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'buffer_messages'")
      .pluck()
      .all() as string[]
  ).sort()
  assert.deepEqual(indexes, [
    'buffer_messages_conflate',
    'buffer_messages_drain',
    'buffer_messages_evict',
    'buffer_messages_expiry',
  ])
  assert.match(plan(db, SQL.pageByQueue), /INTEGER PRIMARY KEY|rowid/)
})
