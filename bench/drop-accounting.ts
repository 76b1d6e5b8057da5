// Drop accounting benchmark (issue #19): what durable drop counting costs on a
// full buffer that evicts on every append, beside the in-memory counting it
// replaced (SqliteStore option durableDrops: false), and with loss reports on.
//
// Each case: a fresh temp dir, a SqliteStore of 2 MiB (durability 'full'),
// filled first, then 20 publishers append 200-byte messages paced to a total
// of EDGE_BENCH_DROPS_RATE msg/s (default 2000) for EDGE_BENCH_DROPS_SECONDS
// (default 5), each waiting for its append to resolve (QoS 1 devices). Every
// append evicts about one row. A second set of cases runs unpaced (as fast as
// the store goes) to show the ceiling.
// Columns: achieved msg/s; CPU ms (user + system) per 1,000 messages; append
// latency p50/p99 ms; evictions; commits; drop-ledger ranges at the end.
// Run alone: node --import tsx bench/drop-accounting.ts
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { SqliteStore } from '../src/buffer/index.js'
import { fmt, printTable, type Row } from './lib/table.js'

const RATE = Number(process.env['EDGE_BENCH_DROPS_RATE'] ?? 2000)
const SECONDS = Number(process.env['EDGE_BENCH_DROPS_SECONDS'] ?? 5)
const PUBLISHERS = 20
const MAX_BYTES = 2 * 1024 * 1024

type Mode = 'in memory (before)' | 'durable' | 'durable + loss reports'

async function runCase(mode: Mode, paced: boolean): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-drops-'))
  const store = new SqliteStore({
    dataDir: dir,
    logger: pino({ level: 'silent' }),
    maxBytes: MAX_BYTES,
    minFreeBytes: 0,
    durableDrops: mode !== 'in memory (before)',
  })
  try {
    await store.start(AbortSignal.timeout(10_000))
    if (mode === 'durable + loss reports') {
      store.setLossReports(
        new Map([['up', { topic: 'edge-agent/bench/drops', site: 'bench', ruleFilters: { r: 'plant/#' } }]]),
      )
    }
    const payload = Buffer.alloc(200, 0x61)
    const append = (p: number, i: number) =>
      store.append({ queue: 'up', topic: `plant/${p}/${i % 50}`, payload, qos: 1, rule: 'r', whenFull: 'drop-oldest' })
    // Fill to the cap first: from here every append evicts.
    for (let i = 0; store.stats().drops.total === 0 && i < 1_000_000; i++)
      await Promise.all(Array.from({ length: 50 }, (_, k) => append(k, i)))
    const evictedBefore = store.stats().drops.byReason['evicted-full']
    const commitsBefore = store.stats().totals.commits
    const latencies: number[] = []
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const end = t0 + SECONDS * 1000
    const perPublisherGapMs = (1000 * PUBLISHERS) / RATE
    let sent = 0
    await Promise.all(
      Array.from({ length: PUBLISHERS }, async (_, p) => {
        let next = t0 + (p * perPublisherGapMs) / PUBLISHERS
        for (let i = 0; performance.now() < end && i < 10_000_000; i++) {
          if (paced) {
            const wait = next - performance.now()
            if (wait > 1) await sleep(wait)
            next += perPublisherGapMs
          }
          const a = performance.now()
          await append(p, i)
          latencies.push(performance.now() - a)
          sent++
        }
      }),
    )
    const elapsed = (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    latencies.sort((x, y) => x - y)
    const pct = (q: number): number =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN
    const s = store.stats()
    return {
      scenario: paced ? `full buffer, ${RATE} msg/s offered` : 'full buffer, unpaced',
      counting: mode,
      'msg/s': fmt(sent / elapsed, 0),
      'CPU ms / 1k msg': fmt((cpu.user + cpu.system) / 1000 / (sent / 1000), 1),
      'p50 ms': fmt(pct(0.5), 2),
      'p99 ms': fmt(pct(0.99), 2),
      evicted: s.drops.byReason['evicted-full'] - evictedBefore,
      commits: s.totals.commits - commitsBefore,
      'ledger ranges': s.drops.sinceCreated?.ledger.rows ?? '-',
    }
  } finally {
    await store.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function runDropAccountingBench(): Promise<Row[]> {
  const rows: Row[] = []
  for (const paced of [true, false]) {
    for (const mode of ['in memory (before)', 'durable', 'durable + loss reports'] as const)
      rows.push(await runCase(mode, paced))
  }
  return rows
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rows = await runDropAccountingBench()
  printTable('drop accounting', rows)
}
