// kill -9 in the middle of ingest: every acknowledged message survives, in
// order per publisher (as in SQLite's own crash tests).
//
// Glossary
//   writer   | test/fixtures/buffer-writer.ts in a child process: 10 logical publishers
//   acked    | a "<round> <publisher> <seq> <id>" line the writer printed after append resolved
//   round    | one writer process, killed with SIGKILL after a random number of acked lines
import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../../src/buffer/index.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { ended, spawnLines } from '../../helpers/child-lines.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const WRITER = fileURLToPath(new URL('../../fixtures/buffer-writer.ts', import.meta.url))
const ROUNDS = 5
const PUBLISHERS = 10

interface Acked {
  round: number
  publisher: number
  seq: number
  id: number
}

/** One writer process, SIGKILLed once it printed `killAfter` acked lines (or after 20 s). */
async function runRound(
  dataDir: string,
  round: number,
  killAfter: number,
): Promise<{ acked: Acked[]; killed: boolean }> {
  let killed = false
  const acked: Acked[] = []
  // A partial last line was not (fully) acknowledged: spawnLines holds it back.
  const writer = spawnLines(
    WRITER,
    [dataDir, String(round), String(PUBLISHERS)],
    (l) => {
      if (l === 'ready') return
      const [r, p, s, id] = l.split(' ').map(Number)
      acked.push({ round: r ?? -1, publisher: p ?? -1, seq: s ?? -1, id: id ?? -1 })
      if (!killed && acked.length >= killAfter) {
        killed = true
        writer.child.kill('SIGKILL')
      }
    },
    20_000,
  )
  return { acked, killed: await ended(writer, 40_000, `writer round ${round}`) }
}

test('SIGKILL at a random moment loses no acknowledged message and keeps per-publisher order', async (t) => {
  const dataDir = tmpDir(t, 'edge-buffer-kill9-')
  const acked: Acked[] = []
  let kills = 0
  for (let round = 0; round < ROUNDS; round++) {
    const r = await runRound(dataDir, round, randomInt(1, 4000))
    acked.push(...r.acked)
    if (r.killed) kills++

    // After every kill: the file is sound and holds every acked message of this round.
    const raw = new Database(`${dataDir}/edge-agent.db`, { readonly: true })
    try {
      assert.equal(raw.pragma('quick_check', { simple: true }), 'ok')
      const stored = new Set(
        (raw.prepare('SELECT payload FROM buffer_messages').pluck().all() as Buffer[]).map((b) => b.toString()),
      )
      const missing = r.acked.filter((a) => !stored.has(`${a.round}:${a.publisher}:${a.seq}`))
      assert.deepEqual(missing, [], `round ${round}: acknowledged but missing`)
    } finally {
      raw.close()
    }
  }
  assert.ok(kills >= 1, 'at least one round was actually killed')
  assert.ok(acked.length > 0)

  // Reopen through the store (quick_check, in-flight reset) and drain everything.
  const store = new SqliteStore({ dataDir, logger: silentLogger(), minFreeBytes: 0, maxBytes: 512 * 1024 * 1024 })
  await store.start(AbortSignal.timeout(10_000))
  t.after(() => store.stop())
  assert.equal(store.stats().quarantine.count, 0)
  const drained: string[][] = Array.from({ length: PUBLISHERS }, () => [])
  for (let i = 0; i < 10_000; i++) {
    const batch = await store.takeBatch('up', 500)
    if (batch.length === 0) break
    for (const m of batch) drained[Number(m.topic.slice(4))]?.push(m.payload.toString())
    await store.ack(batch.map((m) => m.id))
  }
  for (let p = 0; p < PUBLISHERS; p++) {
    const seen = (drained[p] ?? []).map((s) => s.split(':').map(Number) as [number, number, number])
    // Per publisher: rounds in order, and within a round seq 0, 1, 2, … with no gap.
    for (let i = 1; i < seen.length; i++) {
      const [r0, , s0] = seen[i - 1] ?? [0, 0, 0]
      const [r1, , s1] = seen[i] ?? [0, 0, 0]
      assert.ok(r1 > r0 ? s1 === 0 : r1 === r0 && s1 === s0 + 1, `publisher ${p}: ${r0}:${s0} then ${r1}:${s1}`)
    }
    const got = new Set(drained[p])
    for (const a of acked.filter((x) => x.publisher === p))
      assert.ok(got.has(`${a.round}:${p}:${a.seq}`), `publisher ${p} lost ${a.round}:${a.seq}`)
  }
  t.diagnostic(`${ROUNDS} rounds, ${kills} killed, ${acked.length} acknowledged messages checked`)
})
