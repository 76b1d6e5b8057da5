// Bridge benchmark: device → edge-agent → upstream Mosquitto, beside a
// Mosquitto → Mosquitto bridge doing the same work in the same run.
//
//   npm run bench -- bridge            (through bench/run.ts)
//   node --import tsx bench/bridge.ts  (alone; builds nothing: run `npm run build` first)
//
// Scenarios (every process is started here and killed by PID at the end):
//   e2e        10 QoS 1 publishers (2 processes) → broker under test → bridge →
//              upstream Mosquitto → 1 QoS 1 subscriber. Throughput = messages /
//              (first publish → last delivery upstream); latency p50/p99 from a
//              timestamp in the payload. Systems: edge-agent (durable: every
//              message committed to SQLite, WAL + synchronous=FULL, before the
//              device's PUBACK), Mosquitto bridge tuned for store-and-forward
//              (queue 1 M, in-flight 100, queue in RAM), Mosquitto bridge with
//              defaults (shows what a 1,000-message queue drops); and the agent
//              again with MQTT 5 publishers (EDGE_BENCH_BRIDGE_MQTT5=0 skips it).
//   drain      the upstream is down while publishers fill the agent's buffer
//              with EDGE_BENCH_BRIDGE_BACKLOG messages (default 1,000,000); then
//              it comes back and the backlog drains while a live publisher
//              keeps sending 1,000 msg/s on a higher-priority rule.
//   reconnect  the upstream is killed and restarted 5 times; time from its
//              "running" log line to the agent's 'upstream connected'.
//   resets     a proxy between agent and upstream is cut 5 times under load;
//              duplicates per reset, against the in-flight window.
// Sizes are configurable for a quick local run (EDGE_BENCH_BRIDGE_*), the
// defaults are what the issue asks for.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deployedEnv, getJson, launchAgent } from './lib/agent.js'
import { MOSQUITTO_BIN } from './lib/mosquitto.js'
import { freePort } from './lib/ports.js'
import { installCleanupHooks, killAllStarted, spawnNodeProgram, spawnTracked, type Started } from './lib/proc.js'
import { printTable, type Row } from './lib/table.js'
import { waitFor } from './lib/wait.js'

const env = process.env
const MESSAGES = Number(env['EDGE_BENCH_BRIDGE_MESSAGES'] ?? '200000')
const BACKLOG = Number(env['EDGE_BENCH_BRIDGE_BACKLOG'] ?? '1000000')
const PUBLISHERS = 10
const PAYLOAD = Number(env['EDGE_BENCH_BRIDGE_PAYLOAD'] ?? '64')
const INFLIGHT = 100
/** QoS 1 messages each publisher keeps unacknowledged (1 = a device that waits for every PUBACK). */
const PUB_WINDOW = Number(env['EDGE_BENCH_BRIDGE_PUB_WINDOW'] ?? String(INFLIGHT))
const LIVE_RATE = 1000
const LOAD_URL = new URL('./bridge-load.ts', import.meta.url)

// ---------------------------------------------------------------------------
// processes

export interface LoadProc {
  readonly started: Started
  request<T>(msg: { type: string }, reply: string, ms?: number): Promise<T>
  next<T>(type: string, ms: number): Promise<T>
}

async function load(name: string, extra: Record<string, string>): Promise<LoadProc> {
  const started = await spawnNodeProgram(LOAD_URL, [], { name, ipc: true, env: { ...process.env, ...extra } })
  const child = started.child
  const next = <T>(type: string, ms: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.off('message', onMsg)
        reject(new Error(`${name}: no '${type}' within ${ms} ms\n${started.output()}`))
      }, ms)
      const onMsg = (m: { type: string }): void => {
        if (m.type !== type) return
        clearTimeout(timer)
        child.off('message', onMsg)
        resolve(m as T)
      }
      child.on('message', onMsg)
      void started.exited.then((e) => {
        clearTimeout(timer)
        reject(new Error(`${name} exited (${e.code ?? e.signal}) waiting for '${type}'\n${started.output()}`))
      })
    })
  await next('ready', 30_000)
  return {
    started,
    next,
    request<T>(msg: { type: string }, reply: string, ms = 30_000): Promise<T> {
      const p = next<T>(reply, ms)
      child.send(msg)
      return p
    },
  }
}

export interface SubReport {
  total: number
  unique: number
  dups: number
  reordered: number
  firstAt: number
  lastAt: number
  p50: number
  p99: number
  max: number
  liveP50: number
  liveP99: number
  liveCount: number
}

export interface Mosq {
  readonly port: number
  readonly url: string
  start(): Promise<void>
  stop(hard?: boolean): Promise<void>
  /** Epoch ms of the last "running" line. */
  runningAt(): number
  /** PID of the running mosquitto. */
  pid(): number
  cleanup(): void
}

export async function mosquitto(name: string, port: number, lines: readonly string[]): Promise<Mosq> {
  const dir = mkdtempSync(join(tmpdir(), `edge-bench-${name}-`))
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      'log_type information',
      `user ${userInfo().username}`,
      ...lines,
      '',
    ].join('\n'),
  )
  let proc: Started | undefined
  let running = 0
  const m: Mosq = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    async start() {
      let out = ''
      let resolveReady: () => void = () => undefined
      const ready = new Promise<void>((r) => (resolveReady = r))
      const p = await spawnTracked(MOSQUITTO_BIN, ['-c', conf], { name, fdLimit: 65_536 })
      proc = p
      const onData = (c: Buffer): void => {
        out += c.toString()
        if (/running/.test(out)) {
          running = Date.now()
          p.child.stderr?.off('data', onData)
          resolveReady()
        }
      }
      p.child.stderr?.on('data', onData)
      await Promise.race([
        ready,
        p.exited.then((e) => {
          throw new Error(`${name} exited (${e.code ?? e.signal}): ${p.output()}`)
        }),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`${name} not running within 15 s`)), 15_000)),
      ])
    },
    async stop(hard = false) {
      await proc?.stop(hard ? 'SIGKILL' : 'SIGTERM', 10_000)
    },
    runningAt: () => running,
    pid: () => proc?.pid ?? 0,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  }
  await m.start()
  return m
}

export interface Agent {
  readonly pid: number
  readonly port: number
  readonly adminPort: number
  readonly url: string
  /** Resolves with the epoch ms of the next 'upstream connected' log line. */
  nextConnected(ms: number): Promise<number>
  status(): Promise<{
    upstreams: { backlog: { depth: number }; window: number; totals: { resent: number } }[]
    buffer: { totals: { walFsyncs: number; commits: number } }
  }>
  stop(): Promise<void>
}

export async function agent(
  upstreamUrl: string,
  rules: readonly Record<string, unknown>[],
  extra: Record<string, unknown> = {},
): Promise<Agent> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-bridge-agent-'))
  const port = await freePort()
  const adminPort = await freePort()
  const conf = join(dir, 'agent.json')
  // JSON is YAML: no dependency needed here.
  writeFileSync(
    conf,
    JSON.stringify({
      site: { name: 'bench', level: 2 },
      dataDir: join(dir, 'data'),
      log: { level: 'info', format: 'json' },
      admin: { host: '127.0.0.1', port: adminPort },
      broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port }] },
      upstreams: [{ name: 'up', url: upstreamUrl, inflight: INFLIGHT, rules, ...extra }],
      ...(env['EDGE_BENCH_BRIDGE_BUFFER'] === undefined
        ? {}
        : { buffer: JSON.parse(env['EDGE_BENCH_BRIDGE_BUFFER']) as unknown }),
    }),
  )
  const waiters: ((at: number) => void)[] = []
  let partial = ''
  const proc = await launchAgent({
    configFile: conf,
    adminPort,
    dir,
    env: deployedEnv(),
    onStdout: (chunk) => {
      partial += chunk
      let nl: number
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl)
        partial = partial.slice(nl + 1)
        if (line.includes('"upstream connected"')) for (const w of waiters.splice(0)) w(Date.now())
      }
    },
  })
  return {
    pid: proc.pid,
    port,
    adminPort,
    url: `mqtt://127.0.0.1:${port}`,
    nextConnected: (ms) =>
      new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`agent did not reconnect within ${ms} ms`)), ms)
        waiters.push((at) => {
          clearTimeout(timer)
          resolve(at)
        })
      }),
    status: async () => (await getJson(adminPort, '/status')).body as Awaited<ReturnType<Agent['status']>>,
    async stop() {
      await proc.stop('SIGTERM', 25_000)
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** A cut-able TCP proxy (bench copy of test/helpers/tcp-proxy.ts). */
async function proxy(targetPort: number): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const open = new Set<Socket>()
  const server = createServer((client) => {
    const up = connect({ host: '127.0.0.1', port: targetPort })
    for (const s of [client, up]) {
      s.setNoDelay(true)
      open.add(s)
      s.on('error', () => undefined)
      s.on('close', () => {
        open.delete(s)
        client.destroy()
        up.destroy()
      })
    }
    client.pipe(up)
    up.pipe(client)
  })
  const port = await freePort()
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r))
  return {
    port,
    cut: () => {
      for (const s of [...open]) s.resetAndDestroy()
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of [...open]) s.destroy()
        server.close(() => r())
      }),
  }
}

export async function subscriber(url: string, filter: string, liveBase = 1_000_000): Promise<LoadProc> {
  return load('bench-sub', {
    EDGE_BENCH_ROLE: 'sub',
    EDGE_BENCH_URL: url,
    EDGE_BENCH_FILTER: filter,
    EDGE_BENCH_LIVE_BASE: String(liveBase),
  })
}

export async function publishers(
  url: string,
  opts: {
    count?: number
    rate?: number
    durationMs?: number
    procs?: number
    base?: number
    prefix?: string
    publishers?: number
    /** MQTT version of the publishers: 4 (3.1.1, default) or 5. */
    protocolVersion?: 4 | 5
  },
): Promise<LoadProc[]> {
  const procs = opts.procs ?? 2
  const per = Math.ceil((opts.publishers ?? PUBLISHERS) / procs)
  const out: LoadProc[] = []
  for (let i = 0; i < procs; i++) {
    out.push(
      await load(`bench-pub-${i}`, {
        EDGE_BENCH_ROLE: 'pub',
        EDGE_BENCH_URL: url,
        EDGE_BENCH_PUBLISHERS: String(per),
        EDGE_BENCH_PUBLISHER_BASE: String((opts.base ?? 0) + i * per),
        EDGE_BENCH_COUNT: String(opts.count === undefined ? 0 : Math.ceil(opts.count / procs)),
        EDGE_BENCH_RATE: String(opts.rate === undefined ? 0 : opts.rate / procs),
        EDGE_BENCH_DURATION_MS: String(opts.durationMs ?? 0),
        EDGE_BENCH_WINDOW: String(PUB_WINDOW),
        EDGE_BENCH_PAYLOAD: String(PAYLOAD),
        EDGE_BENCH_TOPIC_PREFIX: opts.prefix ?? 'bench',
        EDGE_BENCH_PUB_PROTOCOL: String(opts.protocolVersion ?? 4),
      }),
    )
  }
  return out
}

export async function stopAll(procs: LoadProc[]): Promise<void> {
  await Promise.all(procs.map((p) => p.started.stop('SIGTERM', 5_000)))
}

export async function untilDelivered(sub: LoadProc, want: number, ms: number): Promise<SubReport> {
  const deadline = Date.now() + ms
  let last: SubReport | undefined
  let stalledSince = Date.now()
  for (;;) {
    const r = await sub.request<SubReport>({ type: 'report' }, 'report')
    if (r.unique >= want) return r
    if (last === undefined || r.unique > last.unique) stalledSince = Date.now()
    last = r
    // Stop waiting when nothing moved for 10 s (a bridge that dropped messages never gets there).
    if (Date.now() > deadline || Date.now() - stalledSince > 10_000) return r
    await new Promise((res) => setTimeout(res, 250))
  }
}

// ---------------------------------------------------------------------------
// scenarios

/** Extra keys for the agent's upstream entry (investigation), JSON. */
const UPSTREAM_EXTRA = JSON.parse(env['EDGE_BENCH_BRIDGE_UPSTREAM'] ?? '{}') as Record<string, unknown>
const UPSTREAM_TUNING = [
  'max_inflight_messages 100',
  'max_queued_messages 1000000',
  ...(env['EDGE_BENCH_NODELAY'] === '1' ? ['set_tcp_nodelay true'] : []),
]

interface E2e {
  system: string
  /** CPU time (user + system) of the broker under test per delivered message, µs. */
  cpuPerMsg: number
  /** Part of that CPU time spent in the kernel (syscalls: socket I/O, fsync). */
  sysShare: number
  /** Write syscalls of the broker under test per delivered message. */
  writesPerMsg: number
  delivered: number
  throughput: number
  p50: number
  p99: number
  dups: number
  reordered: number
}

/** User and system CPU time of a process, seconds (/proc/<pid>/stat, fields 14 and 15). */
export function cpuSeconds(pid: number): { user: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 }
}

/** Write syscalls (write, writev, …) a process has made (/proc/<pid>/io). */
export function writeSyscalls(pid: number): number {
  const m = /^syscw:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
  return Number(m?.[1] ?? NaN)
}

async function e2eRun(
  system: string,
  entryUrl: string,
  upstream: Mosq,
  n: number,
  brokerPid: number,
  protocolVersion: 4 | 5 = 4,
): Promise<E2e> {
  const sub = await subscriber(upstream.url, 'site/bench/#')
  const pubs = await publishers(entryUrl, { count: n, protocolVersion })
  const cpu0 = cpuSeconds(brokerPid)
  const w0 = writeSyscalls(brokerPid)
  const t0 = Date.now()
  const dones = pubs.map((p) => p.next<{ ms: number; failed: number }>('done', 600_000))
  for (const p of pubs) p.started.child.send({ type: 'go' })
  await Promise.all(dones)
  const r = await untilDelivered(sub, n, 600_000)
  const cpu1 = cpuSeconds(brokerPid)
  const writes = writeSyscalls(brokerPid) - w0
  const user = cpu1.user - cpu0.user
  const sys = cpu1.sys - cpu0.sys
  await stopAll([...pubs, sub])
  const seconds = (r.lastAt - t0) / 1000
  return {
    system,
    cpuPerMsg: ((user + sys) * 1e6) / Math.max(1, r.unique),
    sysShare: sys / Math.max(1e-9, user + sys),
    writesPerMsg: writes / Math.max(1, r.unique),
    delivered: r.unique,
    throughput: r.unique / seconds,
    p50: r.p50,
    p99: r.p99,
    dups: r.dups,
    reordered: r.reordered,
  }
}

async function e2eScenario(): Promise<{ rows: Row[]; agent: E2e; tuned: E2e | undefined }> {
  const rows: Row[] = []
  const results: E2e[] = []
  // 1. edge-agent, with MQTT 3.1.1 devices and then with MQTT 5 ones (EDGE_BENCH_BRIDGE_MQTT5=0 skips those)
  const agentRuns: [string, 4 | 5][] = [['edge-agent (SQLite WAL+FULL, durable)', 4]]
  if (env['EDGE_BENCH_BRIDGE_MQTT5'] !== '0') agentRuns.push(['edge-agent, MQTT 5 devices (same store)', 5])
  for (const [system, version] of agentRuns) {
    const up = await mosquitto('upstream', await freePort(), UPSTREAM_TUNING)
    const a = await agent(
      up.url,
      [{ topic: 'bench/#', direction: 'out', qos: 1, remotePrefix: 'site/' }],
      UPSTREAM_EXTRA,
    )
    await a.nextConnected(10_000).catch(() => undefined)
    results.push(await e2eRun(system, a.url, up, MESSAGES, a.pid, version))
    await a.stop()
    await up.stop()
    up.cleanup()
  }
  // 2. and 3. Mosquitto → Mosquitto bridges (EDGE_BENCH_BRIDGE_AGENT_ONLY=1 skips them: A/B runs of the agent)
  for (const [system, tuning] of env['EDGE_BENCH_BRIDGE_AGENT_ONLY'] === '1'
    ? []
    : ([
        [
          'mosquitto bridge, tuned (queue 1 M, in-flight 100, RAM)',
          ['max_queued_messages 1000000', 'max_inflight_messages 100'],
        ],
        ['mosquitto bridge, defaults (queue 1000, in-flight 20)', []],
      ] as const)) {
    const up = await mosquitto('upstream', await freePort(), UPSTREAM_TUNING)
    const local = await mosquitto('local', await freePort(), [
      ...tuning,
      'connection bench',
      `address 127.0.0.1:${up.port}`,
      'topic bench/# out 1 "" site/',
      'cleansession false',
      'try_private true',
      'bridge_protocol_version mqttv311',
      'restart_timeout 1 5',
    ])
    // Wait until the bridge is up: a probe message goes through.
    await waitForBridge(local.url, up.url)
    results.push(await e2eRun(system, local.url, up, MESSAGES, local.pid()))
    await local.stop()
    await up.stop()
    local.cleanup()
    up.cleanup()
  }
  for (const r of results) {
    rows.push({
      system: r.system,
      messages: MESSAGES,
      delivered: r.delivered,
      'lost %': Math.round(((MESSAGES - r.delivered) / MESSAGES) * 1000) / 10,
      'msg/s': Math.round(r.throughput),
      'p50 ms': Math.round(r.p50 * 10) / 10,
      'p99 ms': Math.round(r.p99 * 10) / 10,
      duplicates: r.dups,
      reordered: r.reordered,
      'broker CPU µs/msg': Math.round(r.cpuPerMsg),
      'of which kernel %': Math.round(r.sysShare * 100),
      'write syscalls/msg': Math.round(r.writesPerMsg * 100) / 100,
    })
  }
  const tuned = results.find((r) => r.system.startsWith('mosquitto bridge, tuned'))
  return { rows, agent: results[0] as E2e, tuned }
}

async function waitForBridge(localUrl: string, upUrl: string): Promise<void> {
  const sub = await subscriber(upUrl, 'site/bench/#')
  const pub = await publishers(localUrl, { count: 1, procs: 1, publishers: 1, base: 999 })
  await waitFor(
    async () => {
      pub[0]?.started.child.send({ type: 'go' })
      const r = await sub.request<SubReport>({ type: 'report' }, 'report')
      return r.total > 0
    },
    { what: 'the mosquitto bridge to carry a probe message', timeoutMs: 20_000, intervalMs: 500 },
  )
  await stopAll([...pub, sub])
}

async function drainScenario(): Promise<{ rows: Row[]; drainRate: number }> {
  const upPort = await freePort()
  // The upstream is not running yet: everything goes into the buffer.
  const a = await agent(`mqtt://127.0.0.1:${upPort}`, [
    { topic: 'bench/#', direction: 'out', qos: 1, remotePrefix: 'site/', ttlSec: 0 },
    { topic: 'live/#', direction: 'out', qos: 1, remotePrefix: 'site/', priority: 10, ttlSec: 0 },
  ])
  const fillStart = Date.now()
  const pubs = await publishers(a.url, { count: BACKLOG })
  const dones = pubs.map((p) => p.next('done', 3_600_000))
  for (const p of pubs) p.started.child.send({ type: 'go' })
  await Promise.all(dones)
  const fillSeconds = (Date.now() - fillStart) / 1000
  await stopAll(pubs)
  const depth = (await a.status()).upstreams[0]?.backlog.depth ?? 0

  const up = await mosquitto('upstream', upPort, UPSTREAM_TUNING)
  const sub = await subscriber(up.url, 'site/#', 100)
  const live = await publishers(a.url, {
    rate: LIVE_RATE,
    durationMs: 3_600_000,
    procs: 1,
    publishers: 1,
    base: 100,
    prefix: 'live',
  })
  live[0]?.started.child.send({ type: 'go' })
  const t0 = up.runningAt()
  const r = await waitDrained(a, 3_600_000)
  const drainSeconds = (r - t0) / 1000
  const report = await sub.request<SubReport>({ type: 'report' }, 'report')
  await stopAll([...live, sub])
  await a.stop()
  await up.stop()
  up.cleanup()
  const rate = depth / drainSeconds
  return {
    drainRate: rate,
    rows: [
      {
        backlog: depth,
        'fill msg/s (upstream down)': Math.round(BACKLOG / fillSeconds),
        'drain s': Math.round(drainSeconds * 10) / 10,
        'drain msg/s': Math.round(rate),
        'live msg/s during drain': LIVE_RATE,
        'live p50 ms': Math.round(report.liveP50 * 10) / 10,
        'live p99 ms': Math.round(report.liveP99 * 10) / 10,
        'delivered upstream': report.unique,
        duplicates: report.dups,
      },
    ],
  }
}

/** Epoch ms at which the agent's backlog for 'up' reached (almost) zero: only live traffic left. */
async function waitDrained(a: Agent, ms: number): Promise<number> {
  return waitFor(
    async () => {
      const s = await a.status()
      const d = s.upstreams[0]?.backlog.depth ?? Infinity
      return d <= LIVE_RATE / 10 ? Date.now() : undefined
    },
    { what: 'the backlog to drain', timeoutMs: ms, intervalMs: 100 },
  )
}

async function reconnectScenario(): Promise<Row[]> {
  const up = await mosquitto('upstream', await freePort(), UPSTREAM_TUNING)
  const a = await agent(up.url, [{ topic: 'bench/#', direction: 'out', qos: 1, remotePrefix: 'site/' }], UPSTREAM_EXTRA)
  const times: number[] = []
  for (let i = 0; i < 5; i++) {
    await up.stop(true)
    await new Promise((r) => setTimeout(r, 1_500 + i * 700))
    const connected = a.nextConnected(60_000)
    await up.start()
    times.push((await connected) - up.runningAt())
  }
  await a.stop()
  await up.stop()
  up.cleanup()
  const sorted = [...times].sort((x, y) => x - y)
  return [
    {
      restarts: times.length,
      'reconnect p50 ms': sorted[Math.floor(sorted.length / 2)] ?? NaN,
      'reconnect max ms': sorted[sorted.length - 1] ?? NaN,
      'each ms': times.join(' '),
    },
  ]
}

async function resetScenario(): Promise<Row[]> {
  const up = await mosquitto('upstream', await freePort(), UPSTREAM_TUNING)
  const px = await proxy(up.port)
  const a = await agent(
    `mqtt://127.0.0.1:${px.port}`,
    [{ topic: 'bench/#', direction: 'out', qos: 1, remotePrefix: 'site/' }],
    {
      reconnect: { minMs: 100, maxMs: 1000 },
    },
  )
  await a.nextConnected(10_000).catch(() => undefined)
  const sub = await subscriber(up.url, 'site/bench/#')
  const rate = 5_000
  const seconds = 12
  const pubs = await publishers(a.url, { rate, durationMs: seconds * 1000 })
  const dones = pubs.map((p) => p.next<{ sent: number }>('done', 120_000))
  for (const p of pubs) p.started.child.send({ type: 'go' })
  const resets = 5
  for (let i = 0; i < resets; i++) {
    await new Promise((r) => setTimeout(r, 2_000))
    const back = a.nextConnected(30_000)
    px.cut()
    await back
  }
  const sent = (await Promise.all(dones)).reduce((n, d) => n + d.sent, 0)
  const r = await untilDelivered(sub, sent, 60_000)
  const s = await a.status()
  await stopAll([...pubs, sub])
  await a.stop()
  await px.close()
  await up.stop()
  up.cleanup()
  const window = s.upstreams[0]?.window ?? INFLIGHT
  return [
    {
      'link resets': resets,
      sent,
      delivered: r.unique,
      lost: sent - r.unique,
      duplicates: r.dups,
      'duplicates per reset': Math.round((r.dups / resets) * 10) / 10,
      'in-flight window': window,
      'resent by agent': s.upstreams[0]?.totals.resent ?? 0,
    },
  ]
}

// ---------------------------------------------------------------------------

export async function runBridgeBench(): Promise<Array<Record<string, string | number>>> {
  installCleanupHooks()
  const only = (env['EDGE_BENCH_BRIDGE_ONLY'] ?? 'e2e,drain,reconnect,resets').split(',')
  const rows: Row[] = []
  const section = (scenario: string, list: Row[]): void => {
    for (const r of list) rows.push({ scenario, ...r })
  }
  let ratio: number | undefined
  let drainRate: number | undefined
  try {
    if (only.includes('e2e')) {
      const e = await e2eScenario()
      // No ratio in an agent-only run (EDGE_BENCH_BRIDGE_AGENT_ONLY=1).
      if (e.tuned !== undefined) ratio = e.agent.throughput / e.tuned.throughput
      section('e2e', e.rows)
    }
    if (only.includes('drain')) {
      const d = await drainScenario()
      drainRate = d.drainRate
      section('drain', d.rows)
    }
    if (only.includes('reconnect')) section('reconnect', await reconnectScenario())
    if (only.includes('resets')) section('resets', await resetScenario())
  } finally {
    killAllStarted()
  }
  if (ratio !== undefined || drainRate !== undefined) {
    section('ratios', [
      {
        ...(ratio === undefined
          ? {}
          : { 'edge-agent / tuned mosquitto bridge (throughput)': Math.round(ratio * 100) / 100, goal: 1.5 }),
        ...(drainRate === undefined
          ? {}
          : { 'drain msg/s / 15000 goal': Math.round((drainRate / 15_000) * 100) / 100 }),
      },
    ])
  }
  return rows
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await runBridgeBench()
  const byScenario = new Map<string, Row[]>()
  for (const r of rows) {
    const { scenario, ...rest } = r
    const list = byScenario.get(String(scenario)) ?? []
    list.push(rest)
    byScenario.set(String(scenario), list)
  }
  for (const [title, list] of byScenario) printTable(`bridge: ${title}`, list)
}
