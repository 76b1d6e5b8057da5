// Buffer append benchmark: what group commit buys, and what the store costs
// over bare SQLite, on this machine's disk, in one run.
//
// Cases (each in a fresh temp dir, one at a time):
//  - store      SqliteStore.append() from N concurrent publishers; each publisher waits
//               for its append to resolve before sending the next (a QoS 1 device waiting
//               for PUBACK). durability 'full' (WAL + synchronous=FULL) and the default
//               group-commit window (0 = end of the event-loop turn) unless noted.
//  - raw        better-sqlite3 alone, WAL + synchronous=FULL, 100 rows per transaction,
//               into (a) a minimal table and (b) the store's own schema and indexes.
//  - drain      takeBatch(256) + ack() until empty, on the rows the previous store case left.
// Columns: msg/s; append latency p50/p99 (store only: time from append() to resolve);
// commits and mean appends per commit; bytes on disk per message (file size after
// wal_checkpoint(TRUNCATE) / rows) next to the store's byte estimate per message.
//
// Every loop is bounded by a message count AND a time budget:
//   EDGE_BENCH_BUFFER_MESSAGES (default 30000 per case), EDGE_BENCH_BUFFER_SECONDS (default 5).
// Run alone: node --import tsx bench/buffer-append.ts
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import pino from 'pino'
import { type Durability, openDatabase } from '../src/storage/index.js'
import { MESSAGE_STORE_MIGRATIONS, SQL } from '../src/buffer/message-schema.js'
import { estimateMessageBytes, SqliteStore } from '../src/buffer/index.js'
import { printTable, type Row } from './lib/table.js'

const MESSAGES = Number(process.env['EDGE_BENCH_BUFFER_MESSAGES'] ?? 30_000)
const SECONDS = Number(process.env['EDGE_BENCH_BUFFER_SECONDS'] ?? 5)
const RAW_BATCH = 100
const QUEUE = 'upstream'
const log = pino({ level: 'warn' })

const topicOf = (p: number): string => `site-a/line-3/dev-${String(p).padStart(3, '0')}/telemetry`

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
}

function scratchDir(): string {
  return mkdtempSync(join(process.env['EDGE_BENCH_DIR'] ?? tmpdir(), 'edge-bench-buffer-'))
}

interface StoreRun {
  row: Row
  store: SqliteStore
  dir: string
}

async function storeCase(
  payloadBytes: number,
  publishers: number,
  durability: Durability,
  batchWindowMs?: number,
): Promise<StoreRun> {
  const dir = scratchDir()
  const store = new SqliteStore({
    dataDir: dir,
    logger: log,
    durability,
    maxBytes: 4 * 1024 ** 3,
    minFreeBytes: 0,
    ...(batchWindowMs === undefined ? {} : { batchWindowMs }),
  })
  await store.start(AbortSignal.timeout(10_000))
  const payload = randomBytes(payloadBytes)
  let commits = 0
  let commitAppends = 0
  store.on('commit', (c) => {
    if (c.appends > 0) {
      commits++
      commitAppends += c.appends
    }
  })
  const latencies: number[] = []
  let sent = 0
  const started = performance.now()
  const deadline = started + SECONDS * 1000
  const publisher = async (p: number): Promise<void> => {
    // Bounded: by the shared message budget and the time budget.
    while (sent < MESSAGES && performance.now() < deadline) {
      sent++
      const t0 = performance.now()
      await store.append({ queue: QUEUE, topic: topicOf(p), payload, qos: 1, rule: 'telemetry' })
      latencies.push(performance.now() - t0)
    }
  }
  await Promise.all(Array.from({ length: publishers }, (_, p) => publisher(p)))
  const seconds = (performance.now() - started) / 1000
  const stats = store.stats()
  latencies.sort((a, b) => a - b)
  return {
    store,
    dir,
    row: {
      case: `store ${durability}${batchWindowMs === undefined ? '' : ` window ${batchWindowMs} ms`}`,
      payload: payloadBytes,
      publishers,
      messages: latencies.length,
      seconds: Number(seconds.toFixed(2)),
      'msg/s': Math.round(latencies.length / seconds),
      'p50 ms': Number(percentile(latencies, 0.5).toFixed(2)),
      'p99 ms': Number(percentile(latencies, 0.99).toFixed(2)),
      commits,
      'per commit': Number((commitAppends / Math.max(1, commits)).toFixed(1)),
      'est B/msg': Math.round(stats.totals.bytes / Math.max(1, stats.totals.messages)),
      'disk B/msg': '',
    },
  }
}

function measureDisk(run: StoreRun): void {
  const rows = run.store.stats().totals.messages
  // Checkpoint and truncate the WAL: the main file's size is then what the rows occupy.
  run.store.database.db.pragma('wal_checkpoint(TRUNCATE)')
  run.row['disk B/msg'] = Math.round(statSync(run.store.path).size / Math.max(1, rows))
}

async function drainCase(run: StoreRun): Promise<Row> {
  const { store } = run
  const total = store.stats().totals.messages
  const started = performance.now()
  const deadline = started + SECONDS * 1000
  let drained = 0
  // Bounded: each round removes up to 256 rows; stops when empty or out of time.
  for (let round = 0; round < 1_000_000 && performance.now() < deadline; round++) {
    const batch = await store.takeBatch(QUEUE, 256)
    if (batch.length === 0) break
    await store.ack(batch.map((m) => m.id))
    drained += batch.length
  }
  const seconds = (performance.now() - started) / 1000
  return {
    case: 'drain takeBatch(256)+ack',
    payload: run.row['payload'] ?? '',
    publishers: '-',
    messages: drained,
    seconds: Number(seconds.toFixed(2)),
    'msg/s': Math.round(drained / seconds),
    'p50 ms': '',
    'p99 ms': '',
    commits: '',
    'per commit': '',
    'est B/msg': '',
    'disk B/msg': `${total} rows before`,
  }
}

function rawCase(payloadBytes: number, schema: 'minimal' | 'store'): Row {
  const dir = scratchDir()
  try {
    const path = join(dir, 'raw.db')
    const payload = randomBytes(payloadBytes)
    let db: Database.Database
    let insert: (i: number) => void
    let close: () => void
    if (schema === 'minimal') {
      db = new Database(path)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      db.exec('CREATE TABLE m (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)')
      const st = db.prepare('INSERT INTO m (topic, payload) VALUES (?, ?)')
      insert = (i) => st.run(topicOf(i % 100), payload)
      close = () => {
        db.pragma('wal_checkpoint(TRUNCATE)')
        db.close()
      }
    } else {
      const lease = openDatabase(path, { logger: log, migrations: MESSAGE_STORE_MIGRATIONS })
      db = lease.db
      const st = db.prepare(SQL.insert)
      const size = estimateMessageBytes({
        queue: QUEUE,
        topic: topicOf(0),
        payload,
        rule: 'telemetry',
        propertiesJson: null,
      })
      insert = (i) =>
        st.run({
          id: i + 1,
          queue: QUEUE,
          topic: topicOf(i % 100),
          qos: 1,
          retain: 0,
          priority: 0,
          rule: 'telemetry',
          conflate: 0,
          whenFull: 0,
          createdAt: Date.now(),
          expiresAt: null,
          size,
          payload,
          properties: null,
        })
      close = () => lease.close()
    }
    const tx = db.transaction((from: number, n: number) => {
      for (let i = from; i < from + n; i++) insert(i)
    })
    let n = 0
    let commits = 0
    const started = performance.now()
    const deadline = started + SECONDS * 1000
    while (n < MESSAGES && performance.now() < deadline) {
      tx(n, RAW_BATCH)
      n += RAW_BATCH
      commits++
    }
    const seconds = (performance.now() - started) / 1000
    close()
    return {
      case: `raw ${schema === 'minimal' ? 'minimal table' : 'store schema'}`,
      payload: payloadBytes,
      publishers: '-',
      messages: n,
      seconds: Number(seconds.toFixed(2)),
      'msg/s': Math.round(n / seconds),
      'p50 ms': '',
      'p99 ms': '',
      commits,
      'per commit': RAW_BATCH,
      'est B/msg': '',
      'disk B/msg': Math.round(statSync(path).size / n),
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function storeRow(
  payload: number,
  publishers: number,
  durability: Durability,
  batchWindowMs?: number,
  drain = false,
): Promise<Row[]> {
  const run = await storeCase(payload, publishers, durability, batchWindowMs)
  try {
    measureDisk(run)
    return drain ? [run.row, await drainCase(run)] : [run.row]
  } finally {
    await run.store.stop()
    rmSync(run.dir, { recursive: true, force: true })
  }
}

export async function runBufferBench(): Promise<Row[]> {
  const rows: Row[] = []
  for (const payload of [100, 1024]) {
    rows.push(rawCase(payload, 'minimal'), rawCase(payload, 'store'))
    for (const publishers of [10, 100])
      rows.push(...(await storeRow(payload, publishers, 'full', undefined, payload === 1024 && publishers === 100)))
  }
  // The group-commit window: default 0 (end of the event-loop turn) against a fixed 2 ms.
  for (const publishers of [10, 100]) rows.push(...(await storeRow(1024, publishers, 'full', 2)))
  // Context: the same load at durability 'normal' (fsync only at checkpoints).
  rows.push(...(await storeRow(1024, 100, 'normal')))
  return rows
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await runBufferBench()
  printTable(
    'buffer-append',
    rows,
    `Each case is bounded by ${MESSAGES} messages and ${SECONDS} s. 'disk B/msg' is measured before the drain.`,
  )
}
