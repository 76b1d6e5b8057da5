// kill -9 while acks are range deletes: nothing unacknowledged is deleted,
// and what comes again after the restart is at most one in-flight window.
//
// An ack of a run of in-flight rows is one DELETE over an id range of the
// drain index (commit-batch.ts), guarded by a count of the rows in that
// range. The drain cursor that decides which rows are in flight lives in
// memory; the range delete and the rows' removal commit together. So a kill
// can fall before the commit (the rows come again: duplicates, bounded by
// the window) or after it (they are gone, and were acked), never between.
//
// Glossary
//   acker    | test/fixtures/buffer-acker.ts in a child process: takes WINDOW rows, acks them in chunks
//   taken    | ids the acker handed "upstream" (printed before their ack)
//   acking   | ids whose ack was asked for (printed before the call)
//   acked    | ids whose ack resolved (printed after)
//   released | rows the acker gave back instead of acking: they must stay
//   round    | one acker process, killed with SIGKILL after a random number of acked lines
import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../../src/buffer/index.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { ended, spawnLines } from '../../helpers/child-lines.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const ACKER = fileURLToPath(new URL('../../fixtures/buffer-acker.ts', import.meta.url))
const MESSAGES = 6000
const WINDOW = 64
const ROUNDS = 5

interface Round {
  taken: Set<number>
  acking: Set<number>
  acked: Set<number>
  released: number
  killed: boolean
}

async function runRound(dataDir: string, killAfter: number): Promise<Round> {
  const r: Round = { taken: new Set(), acking: new Set(), acked: new Set(), released: 0, killed: false }
  let ackLines = 0
  // A partial last line was not (fully) printed: spawnLines holds it back.
  const acker = spawnLines(ACKER, [dataDir, String(WINDOW)], (l) => {
    const [kind, list = ''] = l.split(' ')
    const ids = list === '' ? [] : list.split(',').map(Number)
    if (kind === 'taken') for (const id of ids) r.taken.add(id)
    else if (kind === 'acking') for (const id of ids) r.acking.add(id)
    else if (kind === 'released') r.released += ids.length
    else if (kind === 'acked') {
      for (const id of ids) r.acked.add(id)
      ackLines++
    }
    if (!r.killed && ackLines >= killAfter) {
      r.killed = true
      acker.child.kill('SIGKILL')
    }
  })
  await ended(acker, 60_000, 'acker')
  return r
}

function storedIds(dataDir: string): Set<number> {
  const raw = new Database(`${dataDir}/edge-agent.db`, { readonly: true })
  try {
    assert.equal(raw.pragma('quick_check', { simple: true }), 'ok')
    return new Set(raw.prepare('SELECT id FROM buffer_messages').pluck().all() as number[])
  } finally {
    raw.close()
  }
}

test('SIGKILL during range acks loses no unacknowledged message and repeats at most one window', async (t) => {
  const dataDir = tmpDir(t, 'edge-buffer-range-ack-')
  const all = new Set<number>()
  {
    const store = new SqliteStore({ dataDir, logger: silentLogger(), minFreeBytes: 0, maxBytes: 64 << 20 })
    await store.start(AbortSignal.timeout(10_000))
    try {
      // Two priorities and seven topics, so that one window holds two ranges and the topic ledger is exercised.
      for (let i = 0; i < MESSAGES; i += 500) {
        const done = await Promise.all(
          Array.from({ length: 500 }, (_, k) =>
            store.append({
              queue: 'up',
              topic: `dev/${(i + k) % 7}`,
              payload: Buffer.from(String(i + k)),
              qos: 1,
              priority: 4 + ((i + k) % 2),
            }),
          ),
        )
        for (const d of done) if (d.id !== null) all.add(d.id)
      }
    } finally {
      await store.stop()
    }
  }
  assert.equal(all.size, MESSAGES)

  const gone = new Set<number>() // acked, in an earlier round or this one
  let kills = 0
  let repeated = 0
  let released = 0
  for (let round = 0; round < ROUNDS; round++) {
    const r = await runRound(dataDir, randomInt(3, 60))
    if (r.killed) kills++
    released += r.released
    const stored = storedIds(dataDir)
    for (const id of r.acked) gone.add(id)
    // Every resolved ack is durable.
    const back = [...r.acked].filter((id) => stored.has(id))
    assert.deepEqual(back, [], `round ${round}: acknowledged ids still stored`)
    // Nothing else is gone, except the ids of the one window whose ack was under way when the kill came.
    const missing = [...all].filter((id) => !stored.has(id) && !gone.has(id))
    assert.ok(missing.length <= WINDOW, `round ${round}: ${missing.length} ids gone that no resolved ack covered`)
    for (const id of missing) assert.ok(r.acking.has(id), `round ${round}: id ${id} deleted, but no ack asked for it`)
    for (const id of missing) gone.add(id)
    // Handed out, still stored: comes again after the restart. At most one window.
    const again = [...r.taken].filter((id) => stored.has(id))
    assert.ok(again.length <= WINDOW, `round ${round}: ${again.length} handed-out ids would come again`)
    repeated += again.length
  }
  assert.ok(kills >= 1, 'at least one round was actually killed')
  assert.ok(released > 0, 'some chunks were released between acked ones')

  // Reopen through the store and drain the rest: every id exactly once over the whole test, the repeats aside.
  const store = new SqliteStore({ dataDir, logger: silentLogger(), minFreeBytes: 0, maxBytes: 64 << 20 })
  await store.start(AbortSignal.timeout(10_000))
  t.after(() => store.stop())
  const rest: number[] = []
  for (let i = 0; i < 1000; i++) {
    const batch = await store.takeBatch('up', 500)
    if (batch.length === 0) break
    rest.push(...batch.map((m) => m.id))
    await store.ack(batch.map((m) => m.id))
  }
  for (const id of rest) assert.ok(!gone.has(id), `id ${id} was gone and came back`)
  assert.equal(gone.size + rest.length, MESSAGES, 'every message accounted for, once')
  assert.equal(store.stats().totals.messages, 0)
  t.diagnostic(
    `${ROUNDS} rounds, ${kills} killed, ${gone.size} acked before the end, ${repeated} handed out again, ${released} released`,
  )
})
