// Drop accounting across kill -9 (issue #19): the buffer evicts and expires
// under load while a writer process is SIGKILLed at random moments; after
// every kill, for every rule and reason,
//   committed appends = rows still queued + drops counted in SQLite,
// exactly, and at the end, after a drain, committed = delivered + drops.
//
// Glossary
//   writer     | test/fixtures/drop-writer.ts: 6 'evict' publishers (priority 0, small buffer: constant
//              | eviction) and 2 'ttl' publishers (priority 5, 3 s TTL: constant expiry)
//   acked      | an "A <publisher> <seq>" line the writer printed after the append resolved
//   committed  | acked, plus at most one unprinted append per publisher that committed before the kill;
//              | which it is can be read from the file: the row is then still queued (nothing evicts or
//              | expires the newest rows between the commit and the kill, see the bounds below)
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../../src/buffer/index.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { withTimeout } from '../../helpers/wait.js'

const WRITER = fileURLToPath(new URL('../../fixtures/drop-writer.ts', import.meta.url))
const ROOT = fileURLToPath(new URL('../../..', import.meta.url))
const ROUNDS = 20
const EVICT_PUBLISHERS = 6 // as in the fixture
const PUBLISHERS = 8
const ruleOf = (p: number): 'evict' | 'ttl' => (p < EVICT_PUBLISHERS ? 'evict' : 'ttl')

/** One writer, SIGKILLed after `killAfter` acked lines (or after 8 s); returns the highest acked seq per publisher. */
async function runRound(dataDir: string, startSeqs: number[], killAfter: number): Promise<{ acked: number[]; killed: boolean }> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dataDir, startSeqs.join(','), '15000'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  let lines = 0
  let killed = false
  const acked = startSeqs.map((s) => s - 1)
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d
    const parts = out.split('\n')
    out = parts.pop() ?? ''
    for (const l of parts) {
      const [kind, p, s] = l.split(' ')
      if (kind === 'X') err += `refused: ${l}\n`
      if (kind !== 'A') continue
      acked[Number(p)] = Math.max(acked[Number(p)] ?? -1, Number(s))
      lines++
    }
    if (!killed && lines >= killAfter) {
      killed = true
      child.kill('SIGKILL')
    }
  })
  const safety = setTimeout(() => {
    killed = true
    child.kill('SIGKILL')
  }, 8_000)
  const [code, signal] = (await withTimeout(once(child, 'close'), 40_000, 'writer to exit')) as [number | null, string | null]
  clearTimeout(safety)
  assert.ok(signal === 'SIGKILL' || code === 0, `writer failed: code ${code} signal ${signal}\n${err}`)
  assert.ok(!err.includes('refused:'), `no append may be refused in this setup:\n${err}`)
  return { acked, killed: signal === 'SIGKILL' }
}

interface FileState {
  /** publisher → seqs still queued */
  queued: Array<Set<number>>
  /** rule → reason → durable count */
  drops: Record<string, Record<string, number>>
}

function readFile(dataDir: string): FileState {
  const raw = new Database(`${dataDir}/edge-agent.db`, { readonly: true })
  try {
    assert.equal(raw.pragma('quick_check', { simple: true }), 'ok')
    const queued = Array.from({ length: PUBLISHERS }, () => new Set<number>())
    for (const b of raw.prepare('SELECT payload FROM buffer_messages').pluck().all() as Buffer[]) {
      const [p, s] = b.toString('latin1').split(':')
      queued[Number(p)]?.add(Number(s))
    }
    const drops: Record<string, Record<string, number>> = {}
    const rows = raw.prepare('SELECT rule, reason, sum(count) AS n FROM buffer_drop_counts GROUP BY rule, reason').all() as Array<{
      rule: string
      reason: string
      n: number
    }>
    for (const r of rows) (drops[r.rule] ??= {})[r.reason] = r.n
    return { queued, drops }
  } finally {
    raw.close()
  }
}

/** committed = queued + dropped, per rule, with each rule's one reason and no other. */
function checkAccounts(committed: number[], f: FileState, when: string): void {
  for (const [rule, reason] of [['evict', 'evicted-full'], ['ttl', 'expired']] as const) {
    const pubs = committed.map((_, p) => p).filter((p) => ruleOf(p) === rule)
    const total = pubs.reduce((n, p) => n + (committed[p] ?? 0), 0)
    const queued = pubs.reduce((n, p) => n + (f.queued[p]?.size ?? 0), 0)
    const dropped = f.drops[rule] ?? {}
    assert.deepEqual(Object.keys(dropped).filter((r) => r !== reason), [], `${when}: rule ${rule} dropped only for '${reason}'`)
    assert.equal(queued + (dropped[reason] ?? 0), total, `${when}: rule ${rule}: ${total} committed = ${queued} queued + ${dropped[reason] ?? 0} ${reason}`)
  }
}

test('after kill -9 at random moments while evicting and expiring, committed = queued + durable drops, per rule and reason', async (t) => {
  const dataDir = tmpDir(t, 'edge-buffer-kill9-drops-')
  const committed = Array.from({ length: PUBLISHERS }, () => 0) // = next seq per publisher
  let kills = 0
  let acked = 0
  for (let round = 0; round < ROUNDS; round++) {
    const r = await runRound(dataDir, committed, randomInt(20, 1500))
    if (r.killed) kills++
    const f = readFile(dataDir)
    for (let p = 0; p < PUBLISHERS; p++) {
      const printed = (r.acked[p] ?? -1) + 1
      acked += printed - (committed[p] ?? 0)
      // The one append of p in flight at the kill committed iff its row is queued.
      committed[p] = f.queued[p]?.has(printed) === true ? printed + 1 : printed
      // Every acknowledged message is queued or was counted as dropped: none vanished.
      assert.ok(printed <= (committed[p] ?? 0))
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
    for (const m of batch) delivered[Number(m.payload.toString('latin1').split(':')[0])]! += 1
    await store.ack(batch.map((m) => m.id))
  }
  const d = store.stats().drops.sinceCreated
  for (const [rule, reason] of [['evict', 'evicted-full'], ['ttl', 'expired']] as const) {
    const pubs = committed.map((_, p) => p).filter((p) => ruleOf(p) === rule)
    const sum = (a: number[]): number => pubs.reduce((n, p) => n + (a[p] ?? 0), 0)
    const dropped = d?.byRule[rule]?.[reason] ?? 0
    assert.equal(sum(delivered) + dropped, sum(committed), `rule ${rule}: delivered ${sum(delivered)} + ${reason} ${dropped}`)
  }
  assert.ok((d?.byReason['evicted-full'] ?? 0) > 0, 'the buffer evicted')
  assert.ok((d?.byReason.expired ?? 0) > 0, 'rows expired')
  t.diagnostic(`${ROUNDS} rounds, ${kills} killed, ${acked} acknowledged, drops ${JSON.stringify(d?.byReason)}`)
})
