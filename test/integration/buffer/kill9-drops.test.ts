// Drop accounting across kill -9 (issue #19): the buffer evicts and expires
// under load while a writer process is SIGKILLed at random moments; after
// every kill, for every rule and reason,
//   committed appends = rows still queued + drops counted in SQLite,
// exactly, and at the end, after a drain, committed = delivered + drops.
//
// Glossary
//   writer     | test/fixtures/drop-writer.ts: 6 'evict' publishers (priority 0, small buffer: constant
//              | eviction) and 2 'ttl' publishers (priority 5, 3 s TTL: constant expiry); payload
//              | "<round>:<publisher>:<seq>:", so no message is ever written twice under one name
//   acked      | a line "A <publisher> <seq> <id>" of the round's ack file: written with write(2) after the
//              | append resolved, so SIGKILL cannot lose it (stdout lines it can: they only time the kill)
//   in flight  | per publisher and round, the one append after its last acked one (seq = acked count);
//              | it committed iff the file has it: its row is queued, or the drop ledger of its topic
//              | holds a row id above every id the publisher had before it (ids only grow)
//   committed  | acked + the in-flight appends that committed
import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../../src/buffer/index.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { ended, spawnLines } from '../../helpers/child-lines.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const WRITER = fileURLToPath(new URL('../../fixtures/drop-writer.ts', import.meta.url))
const ROUNDS = 20
const EVICT_PUBLISHERS = 6 // as in the fixture
const PUBLISHERS = 8
const ruleOf = (p: number): 'evict' | 'ttl' => (p < EVICT_PUBLISHERS ? 'evict' : 'ttl')
const topicOf = (p: number): string => `${ruleOf(p)}/${p}`

/** One writer, SIGKILLed after `killAfter` stdout lines (or after 8 s); returns the acked ids per publisher, by seq. */
async function runRound(
  dataDir: string,
  round: number,
  killAfter: number,
): Promise<{ acked: number[][]; killed: boolean }> {
  const ackFile = `${dataDir}/acks-${round}.txt`
  let lines = 0
  let killed = false
  const refused: string[] = []
  const writer = spawnLines(
    WRITER,
    [dataDir, String(round), ackFile, '15000'],
    (l) => {
      if (l.startsWith('X ')) refused.push(l)
      if (l.startsWith('A ')) lines++
      if (!killed && lines >= killAfter) {
        killed = true
        writer.child.kill('SIGKILL')
      }
    },
    8_000,
  )
  const wasKilled = await ended(writer, 40_000, 'writer')
  assert.deepEqual(refused, [], 'no append may be refused in this setup')
  const acked = Array.from({ length: PUBLISHERS }, () => [] as number[])
  const text = existsSync(ackFile) ? readFileSync(ackFile, 'utf8') : ''
  // A line cut by the kill is left out: its append is then the one in flight, resolved from the file.
  for (const l of text.split('\n').slice(0, -1)) {
    const [kind, p, seq, id] = l.split(' ')
    assert.equal(kind, 'A', `ack line: ${l}`)
    const ids = acked[Number(p)] as number[]
    assert.equal(Number(seq), ids.length, `round ${round}: publisher ${p} acked in order`)
    assert.ok(id !== 'null', `round ${round}: no append expired on arrival (3 s TTL): ${l}`)
    ids.push(Number(id))
  }
  return { acked, killed: wasKilled }
}

interface FileState {
  /** "<round>:<publisher>:<seq>" still queued, and the highest queued row id per publisher */
  queued: Set<string>
  queuedBy: number[]
  maxQueuedId: number[]
  /** per publisher (its topic): drops in the ledger and the highest dropped row id */
  ledgerCount: number[]
  ledgerLastId: number[]
  /** rule → reason → durable count */
  drops: Record<string, Record<string, number>>
}

function readFile(dataDir: string): FileState {
  const raw = new Database(`${dataDir}/edge-agent.db`, { readonly: true })
  try {
    assert.equal(raw.pragma('quick_check', { simple: true }), 'ok')
    const queued = new Set<string>()
    const queuedBy = Array.from({ length: PUBLISHERS }, () => 0)
    const maxQueuedId = Array.from({ length: PUBLISHERS }, () => -1)
    const rows = raw.prepare('SELECT id, payload FROM buffer_messages').all() as Array<{ id: number; payload: Buffer }>
    for (const r of rows) {
      const [round, p, seq] = r.payload.toString('latin1').split(':')
      const key = `${round}:${p}:${seq}`
      assert.ok(!queued.has(key), `one row per append: ${key} is queued twice`)
      queued.add(key)
      queuedBy[Number(p)]! += 1
      maxQueuedId[Number(p)] = Math.max(maxQueuedId[Number(p)]!, r.id)
    }
    const ledgerCount = Array.from({ length: PUBLISHERS }, () => 0)
    const ledgerLastId = Array.from({ length: PUBLISHERS }, () => -1)
    const ranges = raw
      .prepare('SELECT topic, sum(count) AS n, max(last_id) AS last FROM buffer_drop_ledger GROUP BY topic')
      .all() as Array<{
      topic: string
      n: number
      last: number | null
    }>
    for (const r of ranges) {
      const p = Number(r.topic.split('/')[1])
      assert.equal(r.topic, topicOf(p), `drops only of the writer's topics: ${r.topic}`)
      ledgerCount[p] = r.n
      ledgerLastId[p] = r.last ?? -1
    }
    const trimmed = raw.prepare("SELECT value FROM buffer_meta WHERE key = 'drops_trimmed_rows'").pluck().get() as
      number | undefined
    assert.equal(trimmed ?? 0, 0, 'the drop ledger was not trimmed (its per-topic counts are complete)')
    const drops: Record<string, Record<string, number>> = {}
    const counts = raw
      .prepare('SELECT rule, reason, sum(count) AS n FROM buffer_drop_counts GROUP BY rule, reason')
      .all() as Array<{
      rule: string
      reason: string
      n: number
    }>
    for (const r of counts) (drops[r.rule] ??= {})[r.reason] = r.n
    return { queued, queuedBy, maxQueuedId, ledgerCount, ledgerLastId, drops }
  } finally {
    raw.close()
  }
}

/**
 * committed = queued + dropped: per publisher against the drop ledger, per rule against the counts (one reason per
 * rule).
 */
function checkAccounts(committed: number[], f: FileState, when: string): void {
  for (let p = 0; p < PUBLISHERS; p++) {
    const q = f.queuedBy[p] ?? 0
    const d = f.ledgerCount[p] ?? 0
    assert.equal(
      q + d,
      committed[p],
      `${when}: publisher ${p}: ${committed[p]} committed = ${q} queued + ${d} in the drop ledger`,
    )
  }
  for (const [rule, reason] of [
    ['evict', 'evicted-full'],
    ['ttl', 'expired'],
  ] as const) {
    const pubs = committed.map((_, p) => p).filter((p) => ruleOf(p) === rule)
    const total = pubs.reduce((n, p) => n + (committed[p] ?? 0), 0)
    const queued = pubs.reduce((n, p) => n + (f.queuedBy[p] ?? 0), 0)
    const dropped = f.drops[rule] ?? {}
    assert.deepEqual(
      Object.keys(dropped).filter((r) => r !== reason),
      [],
      `${when}: rule ${rule} dropped only for '${reason}'`,
    )
    assert.equal(
      queued + (dropped[reason] ?? 0),
      total,
      `${when}: rule ${rule}: ${total} committed = ${queued} queued + ${dropped[reason] ?? 0} ${reason}`,
    )
  }
}

test('after kill -9 at random moments while evicting and expiring, committed = queued + durable drops, per rule and reason', async (t) => {
  const dataDir = tmpDir(t, 'edge-buffer-kill9-drops-')
  const committed = Array.from({ length: PUBLISHERS }, () => 0) // over all rounds, per publisher
  const knownId = Array.from({ length: PUBLISHERS }, () => -1) // highest row id known committed, per publisher
  let kills = 0
  let acked = 0
  let inFlightCommitted = 0
  for (let round = 0; round < ROUNDS; round++) {
    const r = await runRound(dataDir, round, randomInt(20, 1500))
    if (r.killed) kills++
    const f = readFile(dataDir)
    for (let p = 0; p < PUBLISHERS; p++) {
      const ids = r.acked[p] ?? []
      acked += ids.length
      const before = Math.max(knownId[p] ?? -1, ...ids)
      // The append of p in flight at the end of the round (seq = ids.length) committed iff its row is
      // queued, or was dropped: then the ledger of p's topic holds an id above all p had before it.
      const inFlight = f.queued.has(`${round}:${p}:${ids.length}`) || (f.ledgerLastId[p] ?? -1) > before
      if (inFlight) inFlightCommitted++
      committed[p] = (committed[p] ?? 0) + ids.length + (inFlight ? 1 : 0)
      knownId[p] = Math.max(before, f.ledgerLastId[p] ?? -1, f.maxQueuedId[p] ?? -1)
    }
    checkAccounts(committed, f, `round ${round}`)
  }
  assert.ok(kills >= ROUNDS / 2, `most rounds were killed (${kills})`)

  // Drain through the store: delivered + drops = committed, exactly.
  const store = new SqliteStore({ dataDir, logger: silentLogger(), minFreeBytes: 0, maxBytes: 128 * 1024 })
  await store.start(AbortSignal.timeout(10_000))
  t.after(() => store.stop())
  const delivered = Array.from({ length: PUBLISHERS }, () => 0)
  for (let i = 0; i < 10_000; i++) {
    const batch = await store.takeBatch('up', 500)
    if (batch.length === 0) break
    for (const m of batch) delivered[Number(m.payload.toString('latin1').split(':')[1])]! += 1
    await store.ack(batch.map((m) => m.id))
  }
  const d = store.stats().drops.sinceCreated
  for (const [rule, reason] of [
    ['evict', 'evicted-full'],
    ['ttl', 'expired'],
  ] as const) {
    const pubs = committed.map((_, p) => p).filter((p) => ruleOf(p) === rule)
    const sum = (a: number[]): number => pubs.reduce((n, p) => n + (a[p] ?? 0), 0)
    const dropped = d?.byRule[rule]?.[reason] ?? 0
    assert.equal(
      sum(delivered) + dropped,
      sum(committed),
      `rule ${rule}: delivered ${sum(delivered)} + ${reason} ${dropped}`,
    )
  }
  assert.ok((d?.byReason['evicted-full'] ?? 0) > 0, 'the buffer evicted')
  assert.ok((d?.byReason.expired ?? 0) > 0, 'rows expired')
  t.diagnostic(
    `${ROUNDS} rounds, ${kills} killed, ${acked} acknowledged, ${inFlightCommitted} committed in flight, ` +
      `drops ${JSON.stringify(d?.byReason)}`,
  )
})
