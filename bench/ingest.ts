// Ingest benchmark: durable QoS 1 ingest through the real agent while its upstream is down.
//
//   npm run bench -- ingest            (through bench/run.ts)
//   node --import tsx bench/ingest.ts  (alone; run `npx tsc -p tsconfig.build.json` first)
//
// The agent runs with one upstream on a closed loopback port and the rule
// `devices/+/telemetry → out, QoS 1`, so every publish is captured into the SQLite
// buffer (WAL + synchronous=FULL, group commit) before the device's PUBACK.
// Measured in one run, printed as one table:
//  1. max ingest (msg/s): P publishers, each with W QoS 1 publishes in flight, 100 B and 1 KiB,
//     10 and 100 publishers; beside the raw better-sqlite3 ceiling (100 rows per transaction,
//     WAL, synchronous=FULL, same payloads) and Mosquitto (no persistence, acks from RAM);
//  2. publish → PUBACK latency p50/p99 at a fixed offered rate (10 × 200 msg/s), agent vs Mosquitto;
//  3. agent RSS (VmRSS) after start and while a backlog of EDGE_BENCH_INGEST_BACKLOG messages
//     is written to disk with the upstream down.
//  4. (opt-in, 'outage-rate') the same RSS measurement with the backlog offered at a steady
//     EDGE_BENCH_INGEST_OUTAGE_RATE msg/s (default 2,000) from 10 publishers instead of flat out.
// EDGE_BENCH_INGEST_ONLY selects cases, comma-separated: max, latency, outage, outage-rate
// (default: max,latency,outage; raw and Mosquitto run only with 'max' or 'latency').
// EDGE_BENCH_INGEST_PROBE=1 (investigation only) preloads the in-process probe into the outage
// agent (IPC channel, --expose-gc) and prints to stderr a timeline of process.memoryUsage(), V8
// spaces and /proc RSS split (anon, file, shmem), then the same after two forced GCs, and the
// file sizes of the store; EDGE_BENCH_INGEST_HEAPSNAPSHOT=DIR also writes heap snapshots at
// start and end of the fill there and prints their largest differences.
// EDGE_BENCH_INGEST_SETTLE_SECONDS (default 2): how long RSS is watched after the fill.
// Load runs in a separate process: this same file with EDGE_BENCH_INGEST_ROLE=load (raw MQTT
// 3.1.1 over TCP, no mqtt.js, so the client side stays light on a 2-core machine).
// Every loop is bounded by a count and a deadline; every process is killed by PID.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { deployedEnv, getJson, launchAgent } from './lib/agent.js'
import { startMosquitto } from './lib/mosquitto.js'
import { diffSnapshots, summariseSnapshot } from './lib/heap-summary.js'
import { freePort } from './lib/ports.js'
import { ask, probeFlags, type ProbeReply } from './lib/probe.js'
import { installCleanupHooks, killAllStarted, spawnTracked, type Started } from './lib/proc.js'
import { readProcMemory } from './lib/rss.js'
import { printTable, type Row } from './lib/table.js'

const env = process.env
const ROLE = env['EDGE_BENCH_INGEST_ROLE'] ?? 'harness'

// ---------------------------------------------------------------------------
// load program (child process)

type LoadCmd = { type: 'go'; mode: 'max' | 'rate'; count: number; rate: number; durationMs: number; timeoutMs: number }
type LoadMsg =
  | { type: 'ready' }
  | { type: 'done'; sent: number; acked: number; ms: number; p50: number; p99: number; max: number; timedOut: boolean }
  | { type: 'fatal'; error: string }

async function loadProgram(): Promise<void> {
  const port = Number(env['EDGE_BENCH_TARGET_PORT'])
  const publishers = Number(env['EDGE_BENCH_PUBLISHERS'] ?? '10')
  const window = Number(env['EDGE_BENCH_WINDOW'] ?? '16')
  const payload = randomBytes(Number(env['EDGE_BENCH_PAYLOAD'] ?? '100'))
  const send = (m: LoadMsg): void => {
    process.send?.(m)
  }
  process.on('disconnect', () => process.exit(0))

  const varint = (n: number): Buffer => {
    const out: number[] = []
    do {
      let b = n % 128
      n = Math.floor(n / 128)
      if (n > 0) b |= 0x80
      out.push(b)
    } while (n > 0)
    return Buffer.from(out)
  }
  const connectPacket = (id: string): Buffer => {
    const cid = Buffer.from(id)
    const body = Buffer.concat([
      Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, cid.length >> 8, cid.length & 0xff]),
      cid,
    ])
    return Buffer.concat([Buffer.from([0x10]), varint(body.length), body])
  }

  interface Pub {
    sock: Socket
    prefix: Buffer // fixed header + topic, QoS 1
    inflight: number
    sentAt: Float64Array
    nextId: number
    sent: number
    onAck: () => void
  }
  const latencies: number[] = []
  let acked = 0
  let sent = 0
  let recording = false

  const open = (i: number): Promise<Pub> =>
    new Promise((resolve, reject) => {
      const sock = connect({ port, host: '127.0.0.1' })
      sock.setNoDelay(true)
      const topic = Buffer.from(`devices/dev-${process.pid}-${i}/telemetry`)
      const remaining = 2 + topic.length + 2 + payload.length
      const prefix = Buffer.concat([
        Buffer.from([0x32]),
        varint(remaining),
        Buffer.from([topic.length >> 8, topic.length & 0xff]),
        topic,
      ])
      const p: Pub = {
        sock,
        prefix,
        inflight: 0,
        sentAt: new Float64Array(65536),
        nextId: 1,
        sent: 0,
        onAck: () => undefined,
      }
      let buf: Buffer = Buffer.alloc(0)
      let connacked = false
      const timer = setTimeout(() => reject(new Error(`publisher ${i}: no CONNACK in 30 s`)), 30_000)
      sock.once('connect', () => sock.write(connectPacket(`ingest-${process.pid}-${i}`)))
      sock.on('error', (e) => reject(e))
      sock.on('data', (chunk: Buffer) => {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
        let off = 0
        // Packets here are CONNACK (0x20), PUBACK (0x40) and PINGRESP: all with a 1-byte remaining length.
        while (buf.length - off >= 2) {
          const len = buf[off + 1] as number
          if (buf.length - off < 2 + len) break
          const type = (buf[off] as number) & 0xf0
          if (type === 0x20) {
            if (buf[off + 3] !== 0) return reject(new Error(`CONNACK return code ${buf[off + 3]}`))
            connacked = true
            clearTimeout(timer)
            resolve(p)
          } else if (type === 0x40) {
            const id = buf.readUInt16BE(off + 2)
            const t = performance.now()
            if (recording) latencies.push(t - (p.sentAt[id] as number))
            p.inflight--
            acked++
            p.onAck()
          }
          off += 2 + len
        }
        buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off)
      })
      sock.on('close', () => {
        if (!connacked) reject(new Error(`publisher ${i}: closed before CONNACK`))
      })
    })

  const publish = (p: Pub): void => {
    const id = p.nextId
    p.nextId = id === 65535 ? 1 : id + 1
    p.inflight++
    p.sent++
    sent++
    p.sentAt[id] = performance.now()
    p.sock.write(Buffer.concat([p.prefix, Buffer.from([id >> 8, id & 0xff]), payload]))
  }

  const pubs: Pub[] = []
  try {
    for (let i = 0; i < publishers; i++) pubs.push(await open(i))
  } catch (err) {
    send({ type: 'fatal', error: (err as Error).message })
    process.exit(1)
  }
  send({ type: 'ready' })

  process.on('message', (cmd: LoadCmd) => {
    if (cmd.type !== 'go') return
    recording = true
    const t0 = performance.now()
    let finished = false
    const finish = (timedOut: boolean): void => {
      if (finished) return
      finished = true
      clearInterval(ticker)
      clearTimeout(guard)
      const ms = performance.now() - t0
      const sorted = Float64Array.from(latencies).sort()
      const pct = (q: number): number =>
        sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number)
      send({ type: 'done', sent, acked, ms, p50: pct(0.5), p99: pct(0.99), max: pct(1), timedOut })
      for (const p of pubs) p.sock.end(Buffer.from([0xe0, 0x00]))
      setTimeout(() => process.exit(0), 500).unref()
    }
    const guard = setTimeout(() => finish(true), cmd.timeoutMs)
    let ticker: NodeJS.Timeout | undefined
    if (cmd.mode === 'max') {
      // Closed loop: keep `window` in flight per publisher until `count` are sent, then wait for the acks.
      const perPub = Math.ceil(cmd.count / publishers)
      for (const p of pubs) {
        p.onAck = () => {
          if (p.sent < perPub) publish(p)
          else if (acked >= sent && pubs.every((q) => q.sent >= perPub)) finish(false)
        }
        while (p.inflight < window && p.sent < perPub) publish(p)
      }
    } else {
      // Paced: a 1 ms timer tops every publisher up to its share of the rate; a full window delays (counted in `sent`).
      const perPubRate = cmd.rate / publishers
      const perPub = Math.floor((perPubRate * cmd.durationMs) / 1000)
      for (const p of pubs) p.onAck = () => undefined
      ticker = setInterval(() => {
        const due = Math.min(perPub, Math.floor(((performance.now() - t0) / 1000) * perPubRate))
        let all = true
        for (const p of pubs) {
          while (p.sent < due && p.inflight < window) publish(p)
          if (p.sent < perPub) all = false
        }
        if (all && acked >= sent) finish(false)
      }, 1)
    }
  })
}

if (ROLE === 'load') await loadProgram()

// ---------------------------------------------------------------------------
// harness

const MESSAGES = Number(env['EDGE_BENCH_INGEST_MESSAGES'] ?? '30000')
const CASE_SECONDS = Number(env['EDGE_BENCH_INGEST_SECONDS'] ?? '20')
const WINDOW = Number(env['EDGE_BENCH_INGEST_WINDOW'] ?? '16')
const RATE = 2000
const RATE_PUBLISHERS = 10
const RATE_SECONDS = Number(env['EDGE_BENCH_INGEST_RATE_SECONDS'] ?? '12')
const BACKLOG = Number(env['EDGE_BENCH_INGEST_BACKLOG'] ?? '200000')
const BACKLOG_PAYLOAD = 1024
const BACKLOG_SECONDS = Number(env['EDGE_BENCH_INGEST_BACKLOG_SECONDS'] ?? '120')
const RAW_BATCH = 100
const RAW_MESSAGES = Number(env['EDGE_BENCH_INGEST_RAW_MESSAGES'] ?? '100000')
const WARMUP = Number(env['EDGE_BENCH_INGEST_WARMUP'] ?? '3000')
const OUTAGE_RATE = Number(env['EDGE_BENCH_INGEST_OUTAGE_RATE'] ?? '2000')
const SETTLE_SECONDS = Number(env['EDGE_BENCH_INGEST_SETTLE_SECONDS'] ?? '2')
const CASES = new Set(
  (env['EDGE_BENCH_INGEST_ONLY'] ?? 'max,latency,outage')
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== ''),
)
for (const c of CASES) {
  if (!['max', 'latency', 'outage', 'outage-rate'].includes(c))
    throw new Error(`EDGE_BENCH_INGEST_ONLY: unknown case '${c}' (max, latency, outage, outage-rate)`)
}
const PROBE = env['EDGE_BENCH_INGEST_PROBE'] === '1'
const HEAPSNAPSHOT_DIR = env['EDGE_BENCH_INGEST_HEAPSNAPSHOT']
const SELF = fileURLToPath(import.meta.url)

const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
const vmRssKb = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN)
const mb = (kb: number): number => Number((kb / 1024).toFixed(1))
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface Agent {
  pid: number
  port: number
  adminPort: number
  dataDir: string
  proc: Started
  stop(): Promise<void>
}

async function startIngestAgent(opts: { probe?: boolean } = {}): Promise<Agent> {
  const [port, adminPort, deadPort] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(env['EDGE_BENCH_DIR'] ?? tmpdir(), 'edge-bench-ingest-'))
  const conf = join(dir, 'agent.yaml')
  writeFileSync(
    conf,
    [
      'site: { name: bench, level: 2 }',
      `dataDir: ${JSON.stringify(join(dir, 'data'))}`,
      'log: { level: error }',
      `admin: { host: 127.0.0.1, port: ${adminPort} }`,
      'broker:',
      '  listeners:',
      `    - { protocol: mqtt, host: 127.0.0.1, port: ${port} }`,
      '  limits: { maxConnections: 10000 }',
      'buffer: { durability: full }',
      'upstreams:',
      `  - name: site`,
      `    url: mqtt://127.0.0.1:${deadPort}`,
      `    rules: [{ topic: 'devices/+/telemetry', direction: out, qos: 1 }]`,
      '',
    ].join('\n'),
  )
  const probe = opts.probe === true
  const proc = await launchAgent({
    configFile: conf,
    adminPort,
    dir,
    nodeFlags: probe ? [...probeFlags(), '--expose-gc'] : [],
    ipc: probe,
    env: deployedEnv(),
  })
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true })
  return {
    pid: proc.pid,
    port,
    adminPort,
    dataDir: join(dir, 'data'),
    proc,
    async stop() {
      try {
        await proc.stop('SIGTERM', 25_000)
      } finally {
        cleanup()
      }
    },
  }
}

async function bufferTotals(a: Agent): Promise<{ messages: number; bytes: number; appended: number }> {
  const { body } = await getJson(a.adminPort, '/status')
  const t = (body as { buffer?: { totals?: Record<string, number> } }).buffer?.totals ?? {}
  return { messages: t['messages'] ?? NaN, bytes: t['bytes'] ?? NaN, appended: t['appended'] ?? NaN }
}

type Done = Extract<LoadMsg, { type: 'done' }>

/** One load process: connect P publishers, run one command, return its report. Killed by PID on any failure. */
async function runLoad(
  port: number,
  publishers: number,
  payload: number,
  cmd: Omit<LoadCmd, 'type'>,
  onTick?: () => void,
): Promise<Done> {
  const started = await spawnTracked(process.execPath, ['--import', 'tsx', SELF], {
    name: 'ingest-load',
    ipc: true,
    fdLimit: publishers + 256,
    env: {
      ...process.env,
      EDGE_BENCH_INGEST_ROLE: 'load',
      EDGE_BENCH_TARGET_PORT: String(port),
      EDGE_BENCH_PUBLISHERS: String(publishers),
      EDGE_BENCH_PAYLOAD: String(payload),
      EDGE_BENCH_WINDOW: String(WINDOW),
    },
  })
  const child = started.child
  const next = <T extends LoadMsg['type']>(type: T, ms: number): Promise<Extract<LoadMsg, { type: T }>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => done(new Error(`ingest load: no '${type}' within ${ms} ms\n${started.output()}`)),
        ms,
      )
      const onMsg = (m: LoadMsg): void => {
        if (m.type === type) done(undefined, m as Extract<LoadMsg, { type: T }>)
        else if (m.type === 'fatal') done(new Error(`ingest load: ${m.error}`))
      }
      const onExit = (): void => done(new Error(`ingest load exited waiting for '${type}'\n${started.output()}`))
      const done = (err?: Error, v?: Extract<LoadMsg, { type: T }>): void => {
        clearTimeout(timer)
        child.off('message', onMsg)
        child.off('exit', onExit)
        if (err !== undefined) reject(err)
        else resolve(v as Extract<LoadMsg, { type: T }>)
      }
      child.on('message', onMsg)
      child.once('exit', onExit)
    })
  let sampler: NodeJS.Timeout | undefined
  try {
    await next('ready', 60_000)
    const result = next('done', cmd.timeoutMs + 15_000)
    if (onTick !== undefined) sampler = setInterval(onTick, 250)
    child.send({ type: 'go', ...cmd } satisfies LoadCmd)
    return await result
  } finally {
    if (sampler !== undefined) clearInterval(sampler)
    await started.stop('SIGTERM', 5_000)
  }
}

function rawCeiling(payloadBytes: number): { msgPerSec: number; messages: number; seconds: number } {
  // Same as bench/buffer-append.ts 'raw minimal table': WAL, synchronous=FULL, 100 rows per transaction.
  const dir = mkdtempSync(join(env['EDGE_BENCH_DIR'] ?? tmpdir(), 'edge-bench-ingest-raw-'))
  try {
    const db = new Database(join(dir, 'raw.db'))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.exec('CREATE TABLE m (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)')
    const st = db.prepare('INSERT INTO m (topic, payload) VALUES (?, ?)')
    const payload = randomBytes(payloadBytes)
    const tx = db.transaction((from: number) => {
      for (let i = from; i < from + RAW_BATCH; i++) st.run(`devices/dev-${i % 100}/telemetry`, payload)
    })
    let n = 0
    const t0 = performance.now()
    const deadline = t0 + CASE_SECONDS * 1000
    while (n < RAW_MESSAGES && performance.now() < deadline) {
      tx(n)
      n += RAW_BATCH
    }
    const seconds = (performance.now() - t0) / 1000
    db.close()
    return { msgPerSec: n / seconds, messages: n, seconds }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const r2 = (n: number): number => Number(n.toFixed(2))

export async function runIngestBench(): Promise<Row[]> {
  const rows: Row[] = []
  const loadBefore = load()
  if (CASES.has('max') || CASES.has('latency')) rows.push(...(await throughputCases()))
  // 3. RSS during an outage, fresh agent each
  if (CASES.has('outage')) rows.push(await outageCase('max'))
  if (CASES.has('outage-rate')) rows.push(await outageCase('rate'))
  rows.push({
    measure: 'environment',
    system: `load average before: ${loadBefore}; after: ${load()} (2 cores, shared)`,
    'payload B': '',
    publishers: '',
    messages: '',
    'msg/s': '',
    'vs raw': '',
    'p50 ms': '',
    'p99 ms': '',
    notes: '',
  })
  return rows
}

async function throughputCases(): Promise<Row[]> {
  const rows: Row[] = []
  const raw = new Map<number, number>()
  // 1. max ingest
  for (const payload of CASES.has('max') ? [100, 1024] : []) {
    process.stderr.write(`[bench] ingest: raw better-sqlite3 ${payload} B\n`)
    const r = rawCeiling(payload)
    raw.set(payload, r.msgPerSec)
    rows.push({
      measure: 'max ingest',
      system: 'raw better-sqlite3 (100 rows/tx, WAL, FULL)',
      'payload B': payload,
      publishers: '-',
      messages: r.messages,
      'msg/s': Math.round(r.msgPerSec),
      'vs raw': '1.00',
      'p50 ms': '',
      'p99 ms': '',
      notes: 'ceiling, in-process',
    })
  }
  const systems: Array<{
    name: string
    start(): Promise<{ port: number; pid: number; stop(): Promise<void>; agent?: Agent }>
  }> = [
    {
      name: 'edge-agent (durable)',
      async start() {
        const a = await startIngestAgent()
        return { port: a.port, pid: a.pid, stop: () => a.stop(), agent: a }
      },
    },
    {
      name: 'mosquitto (RAM)',
      async start() {
        const m = await startMosquitto({ port: await freePort() })
        return { port: m.port, pid: m.pid, stop: () => m.stop() }
      },
    },
  ]
  const latencyRows: Row[] = []
  for (const sys of systems) {
    const b = await sys.start()
    try {
      // Warm-up (not recorded): JIT, SQLite page cache, first WAL growth.
      await runLoad(b.port, 10, 100, {
        mode: 'max',
        count: WARMUP,
        rate: 0,
        durationMs: 0,
        timeoutMs: CASE_SECONDS * 1000,
      })
      for (const payload of CASES.has('max') ? [100, 1024] : []) {
        for (const publishers of [10, 100]) {
          process.stderr.write(`[bench] ingest: ${sys.name} ${payload} B × ${publishers} publishers\n`)
          const before = b.agent === undefined ? undefined : await bufferTotals(b.agent)
          const d = await runLoad(b.port, publishers, payload, {
            mode: 'max',
            count: MESSAGES,
            rate: 0,
            durationMs: 0,
            timeoutMs: CASE_SECONDS * 1000,
          })
          const perSec = (d.acked / d.ms) * 1000
          let notes = `window ${WINDOW}/publisher${d.timedOut ? `, stopped at ${CASE_SECONDS} s` : ''}`
          if (b.agent !== undefined && before !== undefined) {
            const after = await bufferTotals(b.agent)
            notes += `, ${after.appended - before.appended} captured`
          }
          rows.push({
            measure: 'max ingest',
            system: sys.name,
            'payload B': payload,
            publishers,
            messages: d.acked,
            'msg/s': Math.round(perSec),
            'vs raw': (perSec / (raw.get(payload) ?? NaN)).toFixed(2),
            'p50 ms': r2(d.p50),
            'p99 ms': r2(d.p99),
            notes,
          })
        }
      }
      // 2. latency at a fixed offered rate
      if (!CASES.has('latency')) continue
      process.stderr.write(`[bench] ingest: ${sys.name} at ${RATE} msg/s\n`)
      const d = await runLoad(b.port, RATE_PUBLISHERS, 100, {
        mode: 'rate',
        count: 0,
        rate: RATE,
        durationMs: RATE_SECONDS * 1000,
        timeoutMs: RATE_SECONDS * 1000 + 10_000,
      })
      latencyRows.push({
        measure: `latency at ${RATE} msg/s`,
        system: sys.name,
        'payload B': 100,
        publishers: RATE_PUBLISHERS,
        messages: d.acked,
        'msg/s': Math.round((d.acked / d.ms) * 1000),
        'vs raw': '',
        'p50 ms': r2(d.p50),
        'p99 ms': r2(d.p99),
        notes: `${RATE_PUBLISHERS} × ${RATE / RATE_PUBLISHERS} msg/s, ${RATE_SECONDS} s, max ${r2(d.max)} ms${d.timedOut ? ', timed out' : ''}`,
      })
    } finally {
      await b.stop()
    }
  }
  rows.push(...latencyRows)
  return rows
}

type Stats = Extract<ProbeReply, { type: 'stats' }>

/**
 * Resident anonymous memory of `pid` from /proc/<pid>/smaps: the brk heap (glibc's main arena) and other anonymous
 * mappings (V8 pages, other arenas, large mallocs), KiB.
 */
function anonSplitKb(pid: number): { brkKb: number; mmapKb: number } {
  let brkKb = 0
  let mmapKb = 0
  let kind: 'brk' | 'mmap' | 'file' = 'file'
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line)
    if (head !== null) {
      const name = head[2] ?? ''
      kind = name === '[heap]' ? 'brk' : head[1] === '0' && (name === '' || name.startsWith('[anon')) ? 'mmap' : 'file'
      continue
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss !== null && kind !== 'file') {
      if (kind === 'brk') brkKb += Number(rss[1])
      else mmapKb += Number(rss[1])
    }
  }
  return { brkKb, mmapKb }
}

/** One line of the probe timeline: /proc split and V8/Node accounting, MB. */
function traceLine(label: string, pid: number, s: Stats | undefined, extra = ''): string {
  const m = readProcMemory(pid)
  const split = anonSplitKb(pid)
  const parts = [
    `rss ${mb(m.rssKb)}`,
    `anon ${mb(m.anonKb)} (brk heap ${mb(split.brkKb)}, anon mmap ${mb(split.mmapKb)})`,
    `file ${mb(m.fileKb)}`,
    `shmem ${mb(m.shmemKb)}`,
  ]
  if (s !== undefined) {
    const u = s.memoryUsage
    const space = (name: string): number => (s.spaces.find((x) => x.name === name)?.physical ?? NaN) / 1048576
    const heapPhys = s.spaces.reduce((a, x) => a + x.physical, 0) / 1048576
    parts.push(
      `heap committed ${heapPhys.toFixed(1)} (new ${space('new_space').toFixed(1)}, old ${space('old_space').toFixed(1)}, code ${space('code_space').toFixed(1)}, lo ${space('large_object_space').toFixed(1)})`,
      `heapUsed ${(u.heapUsed / 1048576).toFixed(1)}`,
      `external ${(u.external / 1048576).toFixed(1)} (arrayBuffers ${(u.arrayBuffers / 1048576).toFixed(1)})`,
      `anon − heap committed ${(m.anonKb / 1024 - heapPhys).toFixed(1)}`,
    )
  }
  return `[bench] ingest probe ${label}: ${parts.join(', ')}${extra === '' ? '' : `, ${extra}`}\n`
}

const fileMb = (path: string): string => (existsSync(path) ? (statSync(path).size / 1048576).toFixed(1) : '-')

/**
 * RSS of a fresh agent while BACKLOG × 1 KiB messages pile up on disk with the upstream down,
 * offered flat out ('max') or at OUTAGE_RATE msg/s ('rate').
 */
async function outageCase(mode: 'max' | 'rate'): Promise<Row> {
  const offered = mode === 'max' ? 'full speed' : `${OUTAGE_RATE} msg/s`
  process.stderr.write(`[bench] ingest: agent RSS while ${BACKLOG} messages pile up (${offered})\n`)
  const a = await startIngestAgent({ probe: PROBE })
  const child = a.proc.child
  const stats = async (): Promise<Stats | undefined> => {
    if (!PROBE) return undefined
    const r = await ask(child, { type: 'stats' })
    return r.type === 'stats' ? r : undefined
  }
  const snapshot = async (name: string): Promise<string | undefined> => {
    if (!PROBE || HEAPSNAPSHOT_DIR === undefined) return undefined
    mkdirSync(HEAPSNAPSHOT_DIR, { recursive: true })
    const r = await ask(
      child,
      { type: 'heapsnapshot', path: join(HEAPSNAPSHOT_DIR, `outage-${mode}-${name}.heapsnapshot`) },
      120_000,
    )
    return r.type === 'done' ? r.path : undefined
  }
  try {
    await sleep(3_000)
    const startKb = vmRssKb(a.pid)
    if (PROBE) process.stderr.write(traceLine('start', a.pid, await stats()))
    let peakKb = startKb
    const samples: number[] = []
    let ticks = 0
    const pending: Promise<void>[] = []
    const t0 = performance.now()
    const cmd: Omit<LoadCmd, 'type'> =
      mode === 'max'
        ? { mode: 'max', count: BACKLOG, rate: 0, durationMs: 0, timeoutMs: BACKLOG_SECONDS * 1000 }
        : {
            mode: 'rate',
            count: 0,
            rate: OUTAGE_RATE,
            durationMs: (BACKLOG / OUTAGE_RATE) * 1000,
            timeoutMs: (BACKLOG / OUTAGE_RATE) * 1000 + 30_000,
          }
    const d = await runLoad(a.port, 10, BACKLOG_PAYLOAD, cmd, () => {
      const kb = vmRssKb(a.pid)
      samples.push(kb)
      if (kb > peakKb) peakKb = kb
      // probe timeline: every 2 s
      if (PROBE && ticks++ % 8 === 0) {
        pending.push(
          (async () => {
            const [s, t] = await Promise.all([stats(), bufferTotals(a)])
            const secs = ((performance.now() - t0) / 1000).toFixed(1)
            process.stderr.write(traceLine(`t=${secs}s`, a.pid, s, `backlog ${t.messages} msgs`))
          })().catch(() => undefined),
        )
      }
    })
    await Promise.all(pending)
    const endKb = vmRssKb(a.pid)
    if (PROBE) process.stderr.write(traceLine('end of fill', a.pid, await stats()))
    await sleep(SETTLE_SECONDS * 1000)
    const settledKb = vmRssKb(a.pid)
    const t = await bufferTotals(a)
    if (PROBE) {
      process.stderr.write(
        traceLine(
          `+${SETTLE_SECONDS} s`,
          a.pid,
          await stats(),
          `db ${fileMb(join(a.dataDir, 'edge-agent.db'))} MB, wal ${fileMb(join(a.dataDir, 'edge-agent.db-wal'))} MB`,
        ),
      )
      await ask(child, { type: 'gc' })
      await ask(child, { type: 'gc' })
      process.stderr.write(traceLine('after 2 forced GCs', a.pid, await stats()))
    }
    const sorted = [...samples].sort((x, y) => x - y)
    const medianKb = sorted[Math.floor(sorted.length / 2)] ?? NaN
    // RSS a quarter of the way through the fill against the end: growth that scales with the backlog on disk.
    const quarterKb = samples[Math.floor(samples.length / 4)] ?? NaN
    if (PROBE && HEAPSNAPSHOT_DIR !== undefined) {
      process.stderr.write(`[bench] ingest: heap snapshot at the end (${HEAPSNAPSHOT_DIR})\n`)
      const end = await snapshot('end')
      if (end !== undefined) {
        const top = diffSnapshots(new Map(), summariseSnapshot(end), 20)
        for (const g of top)
          process.stderr.write(`[bench] ingest heap end: ${(g.bytes / 1048576).toFixed(2)} MB  ${g.count} × ${g.key}\n`)
      }
    }
    return {
      measure: 'RSS during outage',
      system: `edge-agent (durable), ${offered}`,
      'payload B': BACKLOG_PAYLOAD,
      publishers: 10,
      messages: d.acked,
      'msg/s': Math.round((d.acked / d.ms) * 1000),
      'vs raw': '',
      'p50 ms': r2(d.p50),
      'p99 ms': r2(d.p99),
      notes:
        `RSS start ${mb(startKb)} MB, median ${mb(medianKb)}, peak ${mb(peakKb)} (+${mb(peakKb - startKb)} MB), ` +
        `end ${mb(endKb)}, +${SETTLE_SECONDS} s ${mb(settledKb)} (+${mb(settledKb - startKb)} MB); ` +
        `at 1/4 of the fill ${mb(quarterKb)} → end ${mb(endKb)} (+${mb(endKb - quarterKb)} MB over the last 3/4); ` +
        `backlog ${t.messages} msgs, ${mb(t.bytes / 1024)} MB (${samples.length} samples)${d.timedOut ? '; timed out' : ''}`,
    }
  } finally {
    await a.stop()
  }
}

if (ROLE !== 'load' && process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  installCleanupHooks()
  try {
    const rows = await runIngestBench()
    printTable(
      'ingest',
      rows,
      `max ingest: each case bounded by ${MESSAGES} messages and ${CASE_SECONDS} s (raw: ${RAW_MESSAGES}), window ${WINDOW} per publisher, after a ${WARMUP}-message warm-up per broker; 'vs raw' = msg/s ÷ the raw ceiling for the same payload.`,
    )
  } catch (err) {
    process.stderr.write(`ingest failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    killAllStarted()
    process.exitCode = 1
  }
}
