// Memory over a long run with the buffer full and evicting (issue #19): `npm run bench -- drop-memory`.
//
// Per build under test (EDGE_BENCH_DROPMEM_BUILDS; all builds run at the same time, each with
// its own ports, data dir and upstream):
//  1. a real Mosquitto upstream starts, the agent (started like bench/lib/agent.ts, environment
//     from the systemd unit, the in-process probe preloaded over IPC) connects to it, and the
//     upstream is stopped: from then on it refuses connections and everything goes to the buffer;
//  2. fill: QoS 1 publishers (bench/bridge-load.ts) send unpaced until the buffer evicts
//     (buffer.maxBytes small, rule whenFull drop-oldest, ttlSec 0);
//  3. steady: publishers at EDGE_BENCH_DROPMEM_RATE msg/s for EDGE_BENCH_DROPMEM_MINUTES, bounded
//     in count (rate × duration) and time; every append evicts about one row;
//  4. every EDGE_BENCH_DROPMEM_SAMPLE_S seconds: VmRSS, RssFile, RssAnon from /proc/<pid>/status,
//     process.memoryUsage() and v8.getHeapStatistics() from the probe, the buffer's evictions
//     from GET /status and the size of the SQLite file and its WAL.
// native = VmRSS − RssFile − V8 heap total: what is resident and neither file-backed (the node
// binary, shared libraries: code) nor committed to the V8 heap (which includes JIT code space),
// i.e. malloc (SQLite page cache, statement cache, OpenSSL, libuv), ArrayBuffers and stacks.
// Also sampled once idle (upstream down, nothing sent) and once the fill is over (phases in the CSV).
// Output: one table per build at fixed minutes, the least-squares slope per hour of each column
// (whole run, and from minute 5 on), and every sample as CSV.
//
// Environment knobs (all optional):
//   EDGE_BENCH_DROPMEM_MINUTES=30     length of the steady phase
//   EDGE_BENCH_DROPMEM_RATE=200       msg/s offered per agent (10 publishers, QoS 1, window 100)
//   EDGE_BENCH_DROPMEM_PAYLOAD=200    bytes per message
//   EDGE_BENCH_DROPMEM_MAX_BYTES=2097152   buffer.maxBytes
//   EDGE_BENCH_DROPMEM_SAMPLE_S=5     sampling period
//   EDGE_BENCH_DROPMEM_CSV=FILE       where the samples go (default a file in the temp dir, printed)
//   EDGE_BENCH_DROPMEM_BUILDS="label=path/to/main.js [VAR=value …];label2=…"
//                                     builds (and extra environment, e.g. MALLOC_ARENA_MAX=2) to run
//                                     side by side; default "main=" + dist/agent/main.js
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AGENT_MAIN, deployedEnv, getJson, launchAgent } from './lib/agent.js'
import { startMosquitto } from './lib/mosquitto.js'
import { freePort } from './lib/ports.js'
import { ask, probeFlags } from './lib/probe.js'
import { installCleanupHooks, spawnNodeProgram, type Started } from './lib/proc.js'
import { readProcMemory } from './lib/rss.js'
import { fmt, printTable, type Row } from './lib/table.js'
import { waitFor } from './lib/wait.js'

const env = process.env
const num = (name: string, dflt: number): number => {
  const raw = env[name]
  if (raw === undefined || raw === '') return dflt
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got '${raw}'`)
  return n
}
const MINUTES = num('EDGE_BENCH_DROPMEM_MINUTES', 30)
const RATE = num('EDGE_BENCH_DROPMEM_RATE', 200)
const PAYLOAD = num('EDGE_BENCH_DROPMEM_PAYLOAD', 200)
const MAX_BYTES = num('EDGE_BENCH_DROPMEM_MAX_BYTES', 2 * 1024 * 1024)
const SAMPLE_S = num('EDGE_BENCH_DROPMEM_SAMPLE_S', 5)
const PUBLISHERS = 10
const LOAD_URL = new URL('./bridge-load.ts', import.meta.url)

interface Build {
  label: string
  main: string
  env: Record<string, string>
}

export function parseBuilds(raw: string | undefined): Build[] {
  if (raw === undefined || raw.trim() === '') return [{ label: 'main', main: AGENT_MAIN, env: {} }]
  return raw
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((spec) => {
      const [head = '', ...assignments] = spec.split(/\s+/)
      const eq = head.indexOf('=')
      if (eq <= 0) throw new Error(`EDGE_BENCH_DROPMEM_BUILDS: expected label=path, got '${head}'`)
      const extra: Record<string, string> = {}
      for (const a of assignments) {
        const i = a.indexOf('=')
        if (i <= 0) throw new Error(`EDGE_BENCH_DROPMEM_BUILDS: expected VAR=value, got '${a}'`)
        extra[a.slice(0, i)] = a.slice(i + 1)
      }
      return { label: head.slice(0, eq), main: head.slice(eq + 1), env: extra }
    })
}

interface Sample {
  build: string
  /** 'idle' (upstream down, nothing sent yet), 'filled' (the fill phase over, evicting), 'steady'. */
  phase: string
  /** Seconds since the steady phase began. */
  t: number
  rssKb: number
  fileKb: number
  anonKb: number
  heapTotalKb: number
  heapUsedKb: number
  externalKb: number
  arrayBuffersKb: number
  /** v8.getHeapStatistics().malloced_memory: what V8 itself has malloc'd outside the heap. */
  v8MallocKb: number
  nativeKb: number
  dbKb: number
  walKb: number
  evicted: number
  appended: number
}

const log = (msg: string): void => {
  process.stderr.write(`[bench] drop-memory ${msg}\n`)
}

interface LoadProc {
  started: Started
  next<T>(type: string, ms: number): Promise<T>
}

async function loadProc(name: string, extra: Record<string, string>): Promise<LoadProc> {
  const started = await spawnNodeProgram(LOAD_URL, [], { name, ipc: true, env: { ...process.env, ...extra } })
  const next = <T>(type: string, ms: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        started.child.off('message', onMsg)
        reject(new Error(`${name}: no '${type}' within ${ms} ms\n${started.output()}`))
      }, ms)
      const onMsg = (m: { type: string }): void => {
        if (m.type !== type) return
        clearTimeout(timer)
        started.child.off('message', onMsg)
        resolve(m as T)
      }
      started.child.on('message', onMsg)
    })
  await next('ready', 60_000)
  return { started, next }
}

interface StatusBody {
  buffer?: { drops?: { byReason?: Record<string, number> }; totals?: { appended?: number } }
}

function fileKb(path: string): number {
  try {
    return statSync(path).size / 1024
  } catch {
    return 0
  }
}

async function runBuild(build: Build, t0Barrier: () => Promise<number>): Promise<Sample[]> {
  const dir = mkdtempSync(join(tmpdir(), `edge-bench-dropmem-${build.label}-`))
  const dataDir = join(dir, 'data')
  const upPort = await freePort()
  const port = await freePort()
  const adminPort = await freePort()
  const conf = join(dir, 'agent.json')
  writeFileSync(
    conf,
    JSON.stringify({
      site: { name: 'bench', level: 2 },
      dataDir,
      log: { level: 'info', format: 'json' },
      admin: { host: '127.0.0.1', port: adminPort },
      broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port }] },
      buffer: { maxBytes: MAX_BYTES },
      upstreams: [
        {
          name: 'up',
          url: `mqtt://127.0.0.1:${upPort}`,
          rules: [{ topic: 'bench/#', direction: 'out', qos: 1, whenFull: 'drop-oldest', ttlSec: 0 }],
        },
      ],
    }),
  )
  const up = await startMosquitto({ port: upPort })
  let connected = false
  let partial = ''
  const agent = await launchAgent({
    configFile: conf,
    adminPort,
    dir,
    main: build.main,
    nodeFlags: probeFlags(),
    ipc: true,
    env: { ...deployedEnv(), ...build.env },
    onStdout: (chunk) => {
      partial = (partial + chunk).slice(-65_536)
      if (partial.includes('"upstream connected"')) connected = true
    },
  })
  const loads: LoadProc[] = []
  try {
    await waitFor(() => connected, { what: `${build.label}: upstream connected`, timeoutMs: 30_000 })
    await up.stop() // from now on the upstream refuses connections: everything stays in the buffer
    const status = async (): Promise<StatusBody> => (await getJson(adminPort, '/status')).body as StatusBody
    const evicted = async (): Promise<number> => (await status()).buffer?.drops?.byReason?.['evicted-full'] ?? 0
    const sample = async (t0: number, phase?: string): Promise<Sample> => {
      const proc = readProcMemory(agent.pid)
      const stats = await ask(agent.child, { type: 'stats' })
      if (stats.type !== 'stats') throw new Error('probe: unexpected reply')
      const st = await status()
      const mu = stats.memoryUsage
      const heapTotalKb = mu.heapTotal / 1024
      return {
        build: build.label,
        phase: phase ?? 'steady',
        t: (Date.now() - t0) / 1000,
        rssKb: proc.rssKb,
        fileKb: proc.fileKb,
        anonKb: proc.anonKb,
        heapTotalKb,
        heapUsedKb: mu.heapUsed / 1024,
        externalKb: mu.external / 1024,
        arrayBuffersKb: mu.arrayBuffers / 1024,
        v8MallocKb: (stats.heap['malloced_memory'] ?? 0) / 1024,
        nativeKb: proc.rssKb - proc.fileKb - heapTotalKb,
        dbKb: fileKb(join(dataDir, 'edge-agent.db')),
        walKb: fileKb(join(dataDir, 'edge-agent.db-wal')),
        evicted: st.buffer?.drops?.byReason?.['evicted-full'] ?? 0,
        appended: st.buffer?.totals?.appended ?? 0,
      }
    }
    const tStart = Date.now()
    const pre: Sample[] = [await sample(tStart, 'idle')]
    const url = `mqtt://127.0.0.1:${port}`
    const common = {
      EDGE_BENCH_ROLE: 'pub',
      EDGE_BENCH_URL: url,
      EDGE_BENCH_PUBLISHERS: String(PUBLISHERS),
      EDGE_BENCH_PAYLOAD: String(PAYLOAD),
      EDGE_BENCH_TOPICS: '10',
    }
    const fillCount = Math.ceil((MAX_BYTES / PAYLOAD) * 3)
    const fill = await loadProc(`${build.label}-fill`, { ...common, EDGE_BENCH_COUNT: String(fillCount) })
    loads.push(fill)
    fill.started.child.send({ type: 'go' })
    await fill.next('done', 600_000)
    await waitFor(async () => (await evicted()) > 0, { what: `${build.label}: buffer evicting`, timeoutMs: 60_000 })
    await fill.started.stop()
    pre.push(await sample(tStart, 'filled'))
    log(`${build.label}: buffer full and evicting`)

    const durationMs = MINUTES * 60_000
    const steady = await loadProc(`${build.label}-steady`, {
      ...common,
      EDGE_BENCH_RATE: String(RATE),
      EDGE_BENCH_DURATION_MS: String(durationMs),
      EDGE_BENCH_COUNT: String(Math.ceil((RATE * durationMs) / 1000)),
      EDGE_BENCH_PUBLISHER_BASE: '100',
    })
    loads.push(steady)
    const t0 = await t0Barrier()
    steady.started.child.send({ type: 'go' })
    const done = steady.next<{ acked: number; failed: number }>('done', durationMs + 300_000)
    let finished = false
    void done.then(
      () => (finished = true),
      () => (finished = true),
    )
    const samples: Sample[] = [...pre]
    const maxSamples = Math.ceil(durationMs / (SAMPLE_S * 1000)) + 10
    for (let i = 0; i < maxSamples; i++) {
      const wakeAt = t0 + i * SAMPLE_S * 1000
      const wait = wakeAt - Date.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      samples.push(await sample(t0))
      if (i % Math.max(1, Math.round(60 / SAMPLE_S)) === 0) {
        const s = samples[samples.length - 1] as Sample
        log(
          `${build.label}: ${fmt(s.t / 60, 1)} min rss ${fmt(s.rssKb / 1024)} heap ${fmt(s.heapUsedKb / 1024)}/` +
            `${fmt(s.heapTotalKb / 1024)} native ${fmt(s.nativeKb / 1024)} MB evicted ${s.evicted}`,
        )
      }
      if (Date.now() - t0 >= durationMs || finished) break
    }
    const result = await done
    if (result.failed > 0) log(`${build.label}: ${result.failed} publishes failed`)
    return samples
  } finally {
    for (const l of loads) await l.started.stop()
    const exit = await agent.stop('SIGTERM', 25_000)
    if (exit.code !== 0) log(`${build.label}: agent exited with ${exit.code ?? exit.signal}\n${agent.output()}`)
    await up.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Least-squares slope of y over t (seconds), per hour. */
function slopePerHour(points: readonly (readonly [number, number])[]): number {
  const n = points.length
  if (n < 2) return NaN
  const mt = points.reduce((a, p) => a + p[0], 0) / n
  const my = points.reduce((a, p) => a + p[1], 0) / n
  let num = 0
  let den = 0
  for (const [t, y] of points) {
    num += (t - mt) * (y - my)
    den += (t - mt) ** 2
  }
  return den === 0 ? NaN : (num / den) * 3600
}

const COLUMNS: readonly [string, (s: Sample) => number][] = [
  ['RSS', (s) => s.rssKb],
  ['heap used', (s) => s.heapUsedKb],
  ['heap total', (s) => s.heapTotalKb],
  ['external', (s) => s.externalKb],
  ['arrayBuffers', (s) => s.arrayBuffersKb],
  ['native', (s) => s.nativeKb],
  ['file-backed', (s) => s.fileKb],
  ['WAL', (s) => s.walKb],
]

export function buildTable(all: readonly Sample[]): Row[] {
  const marks = [0, 1, 2, 5, 10, 15, 20, 25, 30, 45, 60].filter((m) => m <= MINUTES)
  if (!marks.includes(MINUTES)) marks.push(MINUTES)
  const rows: Row[] = []
  const row = (label: string, s: Sample): Row => {
    const r: Row = { min: label }
    for (const [name, f] of COLUMNS) r[`${name} MB`] = fmt(f(s) / 1024, 1)
    r['evicted'] = s.evicted
    return r
  }
  for (const s of all) if (s.phase !== 'steady') rows.push(row(`${s.phase} (${fmt(s.t, 0)} s after start)`, s))
  const samples = all.filter((s) => s.phase === 'steady')
  for (const m of marks) {
    let best: Sample | undefined
    for (const s of samples) if (best === undefined || Math.abs(s.t - m * 60) < Math.abs(best.t - m * 60)) best = s
    if (best === undefined) continue
    const row: Row = { min: fmt(best.t / 60, 1) }
    for (const [name, f] of COLUMNS) row[`${name} MB`] = fmt(f(best) / 1024, 1)
    row['evicted'] = best.evicted
    rows.push(row)
  }
  for (const [label, from] of [
    ['slope MB/h (all)', 0],
    ['slope MB/h (5 min on)', 300],
  ] as const) {
    const r: Row = { min: label }
    const pts = samples.filter((s) => s.t >= from)
    for (const [name, f] of COLUMNS) r[`${name} MB`] = fmt(slopePerHour(pts.map((s) => [s.t, f(s) / 1024])), 2)
    r['evicted'] = fmt(slopePerHour(pts.map((s) => [s.t, s.evicted])), 0)
    rows.push(r)
  }
  return rows
}

function csv(samples: readonly Sample[]): string {
  const keys = Object.keys(samples[0] ?? {}) as (keyof Sample)[]
  const cell = (v: string | number): string => (typeof v === 'number' ? String(Math.round(v * 10) / 10) : v)
  return [keys.join(','), ...samples.map((s) => keys.map((k) => cell(s[k])).join(','))].join('\n') + '\n'
}

export async function runDropMemoryBench(): Promise<Row[]> {
  const builds = parseBuilds(env['EDGE_BENCH_DROPMEM_BUILDS'])
  // The steady phases start together, so the builds share the machine's load spell for spell.
  let release: (t0: number) => void = () => undefined
  const start = new Promise<number>((r) => (release = r))
  let waiting = builds.length
  const barrier = (): Promise<number> => {
    if (--waiting === 0) release(Date.now())
    return start
  }
  log(`${builds.map((b) => b.label).join(', ')}: ${MINUTES} min at ${RATE} msg/s, buffer ${MAX_BYTES} bytes`)
  const settled = await Promise.allSettled(builds.map((b) => runBuild(b, barrier)))
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (failures.length > 0) throw failures[0]?.reason
  const all = settled.flatMap((s) => (s.status === 'fulfilled' ? s.value : []))
  const csvFile = env['EDGE_BENCH_DROPMEM_CSV'] ?? join(tmpdir(), `edge-bench-drop-memory-${Date.now()}.csv`)
  writeFileSync(csvFile, csv(all))
  log(`samples in ${csvFile}`)
  return builds.flatMap((b) =>
    buildTable(all.filter((s) => s.build === b.label)).map((r) => ({
      scenario: `${b.label}${
        Object.keys(b.env).length > 0
          ? ` (${Object.entries(b.env)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')})`
          : ''
      }`,
      ...r,
    })),
  )
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  installCleanupHooks()
  const rows = await runDropMemoryBench()
  const byScenario = new Map<string, Row[]>()
  for (const { scenario, ...rest } of rows)
    byScenario.set(String(scenario), [...(byScenario.get(String(scenario)) ?? []), rest])
  for (const [title, list] of byScenario) printTable(`drop-memory: ${title}`, list)
}
