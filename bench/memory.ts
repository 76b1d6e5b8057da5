// Memory benchmark: idle RSS of a broker process and RSS per idle device connection,
// for edge-agent, a bare aedes baseline and Mosquitto, in the same run.
//
// Method (each system in turn, never two brokers at once):
//  1. start the broker on a free loopback port and wait until it is ready (healthz / listening / TCP);
//  2. idle RSS   = VmRSS of the broker PID, sampled until 12 consecutive samples (3 s) agree;
//  3. open N idle MQTT 3.1.1 connections (clean session, keepalive 60 s) from a separate driver
//     process, and wait for all N CONNACKs (the agent must also count N in GET /status);
//  4. loaded RSS = VmRSS sampled until stable again; KB per connection = (loaded - idle) / N;
//  5. then keep sampling for a settle period (up to 60 s, no forced GC): V8's memory reducer
//     gives back young-generation and fragmented old-generation pages 8-35 s after the last
//     burst, so the settled figure can be far below the "as deployed, right after" one. The
//     period ends early once RSS has dropped and held still for 5 s.
// Nothing is forced (no global.gc): this is the process as deployed. Only the broker PID is
// read; the clients live in the driver process.
//
// Scenarios exported for bench/run.ts:
//  - memory            the headline table (plus a detail table)
//  - memory-levers     the same measurement for node flag / env / option variants, with a
//                      throughput check, on bare aedes and the agent
//  - memory-breakdown  where the memory goes: V8 heap spaces, code, native, loaded modules,
//                      heap-snapshot diff per connection, socket vs parser vs aedes Client
//
// Environment knobs (all optional):
//   EDGE_BENCH_CLIENTS=2000          connections per system
//   EDGE_BENCH_SYSTEMS=agent,aedes,mosquitto   rows to run
//   EDGE_BENCH_NODE_FLAGS="..."      extra node flags for the Node brokers (agent and bare aedes)
//   EDGE_BENCH_SETTLE_MS=60000       longest settle period after the stable samples (0 = skip)
//   EDGE_BENCH_CONCURRENCY=100       connections being set up at once by the driver
//   EDGE_BENCH_REPEAT=1              runs per system (interleaved); figures are medians
//   EDGE_BENCH_QUIET=1               no progress lines on stderr
//   EDGE_BENCH_AGENT_MAIN=FILE       benchmark another build of the agent (default dist/agent/main.js)
import { existsSync } from 'node:fs'
import { startAgent, AGENT_MAIN } from './lib/agent.js'
import { startBareAedes, type BrokerProcess } from './lib/bare-aedes.js'
import { openClients } from './lib/client-driver.js'
import { startMosquitto } from './lib/mosquitto.js'
import { freePort } from './lib/ports.js'
import { splitFlags } from './lib/proc.js'
import { observeSettle, readProcMemory, sampleUntilStable, type Settled } from './lib/rss.js'
import { fmt, type Row } from './lib/table.js'
import { waitFor } from './lib/wait.js'

export type SystemKind = 'agent' | 'aedes' | 'mosquitto'

export const SYSTEM_LABEL: Record<SystemKind, string> = {
  agent: 'edge-agent',
  aedes: 'bare aedes',
  mosquitto: 'mosquitto',
}

export interface Table {
  title: string
  rows: Row[]
  note?: string
}

export interface MeasureOptions {
  clients: number
  concurrency: number
  /** MQTT version of the idle clients (EDGE_BENCH_MQTT=5 for MQTT 5; default 3.1.1). */
  protocolVersion?: 4 | 5
  settleMs: number
  /** Extra node flags (Node brokers only). */
  nodeFlags: readonly string[]
  /** Environment additions for the broker process (e.g. MALLOC_ARENA_MAX). */
  env?: NodeJS.ProcessEnv
  /** Bare aedes only: options passed to Aedes.createBroker(), setNoDelay, server mode. */
  aedesOpts?: Record<string, unknown>
  noDelay?: boolean
  /** Agent only: do not apply NODE_OPTIONS / NODE_ENV from the systemd unit. */
  plainAgentEnv?: boolean
  /** Log progress lines to stderr. */
  verbose?: boolean
  /** Called once the clients are connected and RSS is stable, before the settle period. */
  onLoaded?: (broker: BrokerProcess) => Promise<void>
  /** Called once the broker is idle and stable, before connecting clients. */
  onIdle?: (broker: BrokerProcess) => Promise<void>
  /** Start hook override (breakdown runs with a probe). */
  start?: (port: number) => Promise<BrokerProcess>
}

export interface Measurement {
  system: SystemKind
  /** Node flags in effect (CLI flags and NODE_OPTIONS), for the detail table. */
  flags: string
  idle: Settled
  idleSettledKb: number
  loaded: Settled
  loadedSettledKb: number
  /** How long the settle periods ran (ms) and whether RSS dropped in them. */
  idleSettle: { ms: number; dropped: boolean }
  loadedSettle: { ms: number; dropped: boolean }
  connectMs: number
  hwmKb: number
  loadedFileKb: number
  loadedAnonKb: number
  notes: string[]
}

export function optionsFromEnv(): MeasureOptions {
  return {
    clients: intEnv('EDGE_BENCH_CLIENTS', 2000),
    concurrency: intEnv('EDGE_BENCH_CONCURRENCY', 100),
    protocolVersion: process.env.EDGE_BENCH_MQTT === '5' ? 5 : 4,
    settleMs: intEnv('EDGE_BENCH_SETTLE_MS', 60_000),
    nodeFlags: splitFlags(process.env.EDGE_BENCH_NODE_FLAGS),
    verbose: process.env.EDGE_BENCH_QUIET !== '1',
  }
}

function intEnv(name: string, dflt: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return dflt
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got '${raw}'`)
  return n
}

export function systemsFromEnv(): SystemKind[] {
  const raw = process.env.EDGE_BENCH_SYSTEMS
  const all: SystemKind[] = ['agent', 'aedes', 'mosquitto']
  if (raw === undefined || raw === '') return all
  const picked = raw.split(',').map((s) => s.trim())
  for (const p of picked)
    if (!all.includes(p as SystemKind)) throw new Error(`EDGE_BENCH_SYSTEMS: unknown system '${p}' (${all.join(', ')})`)
  return all.filter((s) => picked.includes(s))
}

function log(opts: MeasureOptions, msg: string): void {
  if (opts.verbose === true) process.stderr.write(`[bench] ${msg}\n`)
}

async function startSystem(
  system: SystemKind,
  port: number,
  opts: MeasureOptions,
): Promise<BrokerProcess & { flags: string }> {
  const fdLimit = opts.clients + 1024
  switch (system) {
    case 'mosquitto': {
      const b = await startMosquitto({ port, fdLimit })
      return Object.assign(b, { flags: '' })
    }
    case 'aedes': {
      const b = await startBareAedes({
        port,
        fdLimit,
        nodeFlags: opts.nodeFlags,
        ...(opts.aedesOpts !== undefined ? { aedesOpts: opts.aedesOpts } : {}),
        ...(opts.noDelay !== undefined ? { noDelay: opts.noDelay } : {}),
        ...(opts.env !== undefined ? { env: opts.env } : {}),
      })
      return Object.assign(b, { flags: [...opts.nodeFlags, process.env.NODE_OPTIONS ?? ''].join(' ').trim() })
    }
    case 'agent': {
      const adminPort = await freePort()
      const b = await startAgent({
        port,
        adminPort,
        fdLimit,
        nodeFlags: opts.nodeFlags,
        maxConnections: Math.max(10_000, opts.clients + 100),
        ...(opts.plainAgentEnv !== undefined ? { plainEnv: opts.plainAgentEnv } : {}),
        ...(opts.env !== undefined ? { env: opts.env } : {}),
      })
      const nodeOptions = opts.env?.NODE_OPTIONS ?? b.env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ''
      return Object.assign(b, { flags: [...opts.nodeFlags, nodeOptions].join(' ').trim() })
    }
  }
}

/** One system, start to stop. Always stops the broker and the driver, also on failure. */
export async function measure(system: SystemKind, opts: MeasureOptions): Promise<Measurement> {
  const port = await freePort()
  const notes: string[] = []
  log(opts, `${SYSTEM_LABEL[system]}: starting on port ${port}`)
  const broker =
    opts.start !== undefined
      ? Object.assign(await opts.start(port), { flags: opts.nodeFlags.join(' ') })
      : await startSystem(system, port, opts)
  let clients: Awaited<ReturnType<typeof openClients>> | undefined
  try {
    const idle = await sampleUntilStable(broker.pid)
    if (!idle.stable) notes.push('idle RSS did not settle within 45 s')
    log(opts, `${SYSTEM_LABEL[system]}: idle ${fmt(idle.rssKb / 1024)} MB after ${fmt(idle.elapsedMs / 1000)} s`)
    // Mosquitto has no garbage collector that gives memory back later: no settle period for it.
    const settleMs = system === 'mosquitto' ? 0 : opts.settleMs
    const idleSettled = settleMs > 0 ? await observeSettle(broker.pid, { maxMs: settleMs }) : undefined
    await opts.onIdle?.(broker)

    clients = await openClients({
      port,
      count: opts.clients,
      concurrency: opts.concurrency,
      ...(opts.protocolVersion === undefined ? {} : { protocolVersion: opts.protocolVersion }),
    })
    log(opts, `${SYSTEM_LABEL[system]}: ${clients.connected} CONNACKs in ${fmt(clients.connectMs, 0)} ms`)
    const countClients = broker.clients
    if (countClients !== undefined) {
      // The CONNACKs are in; also wait until the agent's own count agrees (bounded).
      await waitFor(async () => (await countClients()) >= opts.clients, {
        what: `${SYSTEM_LABEL[system]} to report ${opts.clients} clients in /status`,
        timeoutMs: 30_000,
        intervalMs: 250,
        abort: broker.proc.exited,
      })
    }
    const loaded = await sampleUntilStable(broker.pid)
    if (!loaded.stable) notes.push('loaded RSS did not settle within 45 s')
    log(opts, `${SYSTEM_LABEL[system]}: loaded ${fmt(loaded.rssKb / 1024)} MB after ${fmt(loaded.elapsedMs / 1000)} s`)
    await opts.onLoaded?.(broker)
    const loadedSettled = settleMs > 0 ? await observeSettle(broker.pid, { maxMs: settleMs }) : undefined
    const last = readProcMemory(broker.pid)
    const st = await clients.status()
    if (st.lost > 0 || st.open !== opts.clients) notes.push(`broker dropped ${st.lost} connections (${st.open} open)`)
    return {
      system,
      flags: broker.flags,
      idle,
      idleSettledKb: idleSettled?.settledKb ?? idle.rssKb,
      loaded,
      loadedSettledKb: loadedSettled?.settledKb ?? loaded.rssKb,
      idleSettle: { ms: idleSettled?.elapsedMs ?? 0, dropped: idleSettled?.dropped ?? false },
      loadedSettle: { ms: loadedSettled?.elapsedMs ?? 0, dropped: loadedSettled?.dropped ?? false },
      connectMs: clients.connectMs,
      hwmKb: last.hwmKb,
      loadedFileKb: last.fileKb,
      loadedAnonKb: last.anonKb,
      notes,
    }
  } finally {
    if (clients !== undefined) await clients.close().catch(() => undefined)
    await broker.stop()
    log(opts, `${SYSTEM_LABEL[system]}: stopped`)
  }
}

function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2
}

/** Per-figure median over repeated runs of one system (EDGE_BENCH_REPEAT). */
export function medianOf(ms: readonly Measurement[]): Measurement {
  const first = ms[0]
  if (first === undefined) throw new Error('no measurements')
  if (ms.length === 1) return first
  const m = (f: (x: Measurement) => number): number => median(ms.map(f))
  return {
    ...first,
    idle: { ...first.idle, rssKb: m((x) => x.idle.rssKb), stable: ms.every((x) => x.idle.stable) },
    loaded: { ...first.loaded, rssKb: m((x) => x.loaded.rssKb), stable: ms.every((x) => x.loaded.stable) },
    idleSettledKb: m((x) => x.idleSettledKb),
    loadedSettledKb: m((x) => x.loadedSettledKb),
    connectMs: m((x) => x.connectMs),
    hwmKb: m((x) => x.hwmKb),
    loadedFileKb: m((x) => x.loadedFileKb),
    loadedAnonKb: m((x) => x.loadedAnonKb),
    idleSettle: { ms: m((x) => x.idleSettle.ms), dropped: ms.some((x) => x.idleSettle.dropped) },
    loadedSettle: { ms: m((x) => x.loadedSettle.ms), dropped: ms.some((x) => x.loadedSettle.dropped) },
    notes: [...new Set(ms.flatMap((x) => x.notes))],
  }
}

const mb = (kb: number): string => fmt(kb / 1024, 1)

export function headlineRow(m: Measurement, clients: number): Row {
  return {
    system: SYSTEM_LABEL[m.system],
    'idle RSS (MB)': mb(m.idle.rssKb),
    [`RSS with ${clients.toLocaleString('en')} clients (MB)`]: mb(m.loaded.rssKb),
    'KB per connection': fmt((m.loaded.rssKb - m.idle.rssKb) / clients, 1),
    [`connect time for ${clients.toLocaleString('en')} clients (s)`]: fmt(m.connectMs / 1000, 2),
  }
}

const settleNote = (p: { ms: number; dropped: boolean }): string =>
  p.ms === 0 ? 'none' : `${fmt(p.ms / 1000, 0)} s${p.dropped ? ', dropped' : ''}`

export function detailRow(m: Measurement, clients: number): Row {
  return {
    system: SYSTEM_LABEL[m.system],
    'idle RSS settled (MB)': mb(m.idleSettledKb),
    [`RSS with ${clients.toLocaleString('en')} clients settled (MB)`]: mb(m.loadedSettledKb),
    'KB per connection settled': fmt((m.loadedSettledKb - m.idleSettledKb) / clients, 1),
    'settle periods (idle; loaded)': `${settleNote(m.idleSettle)}; ${settleNote(m.loadedSettle)}`,
    'peak RSS (MB)': mb(m.hwmKb),
    'file-backed RSS (MB)': mb(m.loadedFileKb),
    'node flags': m.flags === '' ? '-' : m.flags,
    notes: m.notes.length === 0 ? '' : m.notes.join('; '),
  }
}

/** `npm run bench -- memory`: the headline comparison. */
export async function memoryScenario(): Promise<Table[]> {
  const opts = optionsFromEnv()
  const systems = systemsFromEnv().filter((s) => {
    if (s === 'agent' && !existsSync(AGENT_MAIN)) {
      process.stderr.write(`[bench] skipping edge-agent: ${AGENT_MAIN} not built\n`)
      return false
    }
    return true
  })
  const repeat = Math.max(1, intEnv('EDGE_BENCH_REPEAT', 1))
  // Rounds interleave the systems, so a slow spell on a shared machine hits all of them alike.
  const runs = new Map<SystemKind, Measurement[]>(systems.map((s) => [s, []]))
  for (let round = 0; round < repeat; round++) {
    for (const s of systems) runs.get(s)?.push(await measure(s, opts))
  }
  const results = systems.map((s) => medianOf(runs.get(s) ?? []))
  const n = opts.clients.toLocaleString('en')
  const median = repeat > 1 ? ` Each figure is the median of ${repeat} runs.` : ''
  return [
    {
      title: `memory: idle RSS and RSS per idle connection (${n} clients, ${opts.protocolVersion === 5 ? 'MQTT 5' : 'MQTT 3.1.1'}, keepalive 60 s)`,
      rows: results.map((m) => headlineRow(m, opts.clients)),
      note:
        'RSS = VmRSS of the broker process only, sampled until stable (12 samples over 3 s within 0.5 %), no forced GC. ' +
        'KB per connection = (RSS with clients - idle RSS) / clients. Connect time: first CONNECT to last CONNACK, ' +
        `${opts.concurrency} connections being set up at once.${median}`,
    },
    {
      title: 'memory: settled (no forced GC), peak, and flags',
      rows: results.map((m) => detailRow(m, opts.clients)),
      note:
        `settled = RSS at the end of a settle period after the stable samples: up to ${Math.round(opts.settleMs / 1000)} s, ended early once RSS ` +
        "dropped by 3 % (V8's memory reducer) and held still for 5 s; none for mosquitto, which has no GC. file-backed RSS = RssFile (the node or mosquitto " +
        `executable and shared libraries: clean pages, shared with other processes, reclaimable).${median}`,
    },
  ]
}
