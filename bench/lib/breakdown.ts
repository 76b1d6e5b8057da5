// The memory-breakdown scenario: where the RSS of the agent and of bare aedes goes.
//
// Every process here runs with the in-process probe (probe-main.ts, over IPC) and
// --expose-gc, which the headline figures never use. Four parts:
//  1. idle composition: file-backed vs anonymous RSS, V8 heap (committed, live, code), and
//     the native rest, for Node's floor (a listening net server), bare aedes and the agent;
//  2. one idle connection, layer by layer: a bare socket, + an mqtt-packet parser, aedes,
//     the agent, each as deployed and after a forced GC;
//  3. heap-snapshot diff idle → N clients for bare aedes and the agent: which objects one
//     connection adds (separate runs: a snapshot itself inflates RSS);
//  4. import cost: RSS and live heap that importing each dependency adds to a fresh Node,
//     and whether the agent imports it at startup (static import graph of dist/).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Table } from '../memory.js'
import { AGENT_MAIN, startAgent } from './agent.js'
import { startBareAedes, type BrokerProcess } from './bare-aedes.js'
import { openClients } from './client-driver.js'
import { diffSnapshots, summariseSnapshot } from './heap-summary.js'
import { freePort } from './ports.js'
import { ask, probeFlags, type ProbeReply } from './probe.js'
import { repoRoot, spawnTracked, splitFlags } from './proc.js'
import { sampleUntilStable, type ProcMemory } from './rss.js'
import { fmt, type Row } from './table.js'
import { waitFor } from './wait.js'

type Stats = Extract<ProbeReply, { type: 'stats' }>

interface Layer {
  label: string
  /** Only the idle part (the server accepts no MQTT). */
  idleOnly?: boolean
  start(port: number): Promise<BrokerProcess>
}

const CLIENTS = Number(process.env.EDGE_BENCH_CLIENTS ?? '2000')
const extraFlags = splitFlags(process.env.EDGE_BENCH_NODE_FLAGS)
const probed = (): string[] => [...probeFlags(), '--expose-gc', ...extraFlags]
const fdLimit = CLIENTS + 1024

function bare(mode: string, label: string, env: NodeJS.ProcessEnv = {}): Layer {
  return {
    label,
    idleOnly: mode === 'none',
    start: (port) =>
      startBareAedes({ port, fdLimit, ipc: true, nodeFlags: probed(), env: { EDGE_BENCH_SERVER_MODE: mode, ...env } }),
  }
}

const agentLayer: Layer = {
  label: 'edge-agent',
  start: async (port) => startAgent({ port, adminPort: await freePort(), fdLimit, ipc: true, nodeFlags: probed() }),
}

async function stats(b: BrokerProcess): Promise<Stats> {
  const r = await ask(b.proc.child, { type: 'stats' })
  if (r.type !== 'stats') throw new Error('probe: unexpected reply')
  return r
}

async function gcAndSettle(b: BrokerProcess): Promise<{ mem: ProcMemory; st: Stats }> {
  await ask(b.proc.child, { type: 'gc' })
  await ask(b.proc.child, { type: 'gc' })
  const s = await sampleUntilStable(b.pid, { timeoutMs: 20_000 })
  return { mem: s.last, st: await stats(b) }
}

async function connectAll(b: BrokerProcess, port: number): Promise<Awaited<ReturnType<typeof openClients>>> {
  const clients = await openClients({ port, count: CLIENTS })
  const count = b.clients
  if (count !== undefined) {
    await waitFor(async () => (await count()) >= CLIENTS, {
      what: `${CLIENTS} clients in /status`,
      timeoutMs: 30_000,
      intervalMs: 250,
    })
  }
  return clients
}

interface LayerResult {
  label: string
  idle: ProcMemory
  idleStats: Stats
  idleGc: { mem: ProcMemory; st: Stats }
  loaded: ProcMemory
  loadedStats: Stats
  loadedGc: { mem: ProcMemory; st: Stats }
}

async function layerRun(layer: Layer): Promise<LayerResult> {
  const port = await freePort()
  process.stderr.write(`[bench] breakdown: ${layer.label}\n`)
  const b = await layer.start(port)
  let clients: Awaited<ReturnType<typeof openClients>> | undefined
  try {
    const idle = (await sampleUntilStable(b.pid)).last
    const idleStats = await stats(b)
    const idleGc = await gcAndSettle(b)
    if (layer.idleOnly === true)
      return { label: layer.label, idle, idleStats, idleGc, loaded: idle, loadedStats: idleStats, loadedGc: idleGc }
    clients = await connectAll(b, port)
    const loaded = (await sampleUntilStable(b.pid)).last
    const loadedStats = await stats(b)
    const loadedGc = await gcAndSettle(b)
    return { label: layer.label, idle, idleStats, idleGc, loaded, loadedStats, loadedGc }
  } finally {
    await clients?.close().catch(() => undefined)
    await b.stop()
  }
}

async function snapshotRun(layer: Layer): Promise<Row[]> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-heap-'))
  process.stderr.write(`[bench] breakdown: heap snapshots of ${layer.label}\n`)
  const b = await layer.start(port)
  let clients: Awaited<ReturnType<typeof openClients>> | undefined
  try {
    await sampleUntilStable(b.pid)
    const a = await ask(b.proc.child, { type: 'heapsnapshot', path: join(dir, 'idle.heapsnapshot') }, 120_000)
    clients = await connectAll(b, port)
    await sampleUntilStable(b.pid)
    const l = await ask(b.proc.child, { type: 'heapsnapshot', path: join(dir, 'loaded.heapsnapshot') }, 120_000)
    if (a.type !== 'done' || l.type !== 'done' || a.path === undefined || l.path === undefined)
      throw new Error('probe: no snapshot path')
    const diff = diffSnapshots(summariseSnapshot(a.path), summariseSnapshot(l.path), 18)
    const totalBytes = diffSnapshots(summariseSnapshot(a.path), summariseSnapshot(l.path), 1_000_000).reduce(
      (s, g) => s + g.bytes,
      0,
    )
    return [
      ...diff.map((g) => ({
        [`${layer.label}: heap objects added per connection`]: g.key.replace(/^object:/, ''),
        'count per connection': fmt(g.count / CLIENTS, 2),
        'bytes per connection': Math.round(g.bytes / CLIENTS),
      })),
      {
        [`${layer.label}: heap objects added per connection`]: '(all live objects, net)',
        'count per connection': '',
        'bytes per connection': Math.round(totalBytes / CLIENTS),
      },
    ]
  } finally {
    await clients?.close().catch(() => undefined)
    await b.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

const MB = 2 ** 20
const mbKb = (kb: number): string => fmt(kb / 1024, 1)
const mbB = (b: number): string => fmt(b / MB, 1)
const heapPhysical = (s: Stats): number => s.heap.total_physical_size ?? 0
const space = (s: Stats, name: string): number => s.spaces.find((x) => x.name === name)?.physical ?? 0
const codeBytes = (s: Stats): number => (s.code.code_and_metadata_size ?? 0) + (s.code.bytecode_and_metadata_size ?? 0)

function idleRow(r: LayerResult): Row {
  const s = r.idleStats
  return {
    process: r.label,
    'RSS (MB)': mbKb(r.idle.rssKb),
    'file-backed (MB)': mbKb(r.idle.fileKb),
    'anonymous (MB)': mbKb(r.idle.anonKb),
    'V8 heap committed (MB)': mbB(heapPhysical(s)),
    'of which new space (MB)': mbB(space(s, 'new_space')),
    'old space (MB)': mbB(space(s, 'old_space')),
    'V8 heap used (MB)': mbB(s.memoryUsage.heapUsed),
    'live after GC (MB)': mbB(r.idleGc.st.memoryUsage.heapUsed),
    'code + bytecode (MB)': mbB(codeBytes(s)),
    'native and other (MB)': mbB(r.idle.anonKb * 1024 - heapPhysical(s)),
    'RSS after GC (MB)': mbKb(r.idleGc.mem.rssKb),
    'CJS modules': s.cjsModules.length,
    threads: r.idle.threads,
  }
}

function connRow(r: LayerResult): Row {
  const per = (bytes: number): string => fmt(bytes / 1024 / CLIENTS, 1)
  const gcAnon = (r.loadedGc.mem.anonKb - r.idleGc.mem.anonKb) * 1024
  const gcHeap = heapPhysical(r.loadedGc.st) - heapPhysical(r.idleGc.st)
  return {
    layer: r.label,
    'KB/conn as deployed': per((r.loaded.rssKb - r.idle.rssKb) * 1024),
    'KB/conn after GC': per((r.loadedGc.mem.rssKb - r.idleGc.mem.rssKb) * 1024),
    'V8 live heap KB/conn': per(r.loadedGc.st.memoryUsage.heapUsed - r.idleGc.st.memoryUsage.heapUsed),
    'V8 committed KB/conn (as deployed)': per(heapPhysical(r.loadedStats) - heapPhysical(r.idleStats)),
    'new space committed idle → loaded (MB)': `${mbB(space(r.idleStats, 'new_space'))} → ${mbB(space(r.loadedStats, 'new_space'))}`,
    'native and other KB/conn (after GC)': per(gcAnon - gcHeap),
  }
}

// ---- part 4: import cost ----

const IMPORT_PROGRAM = `
import { readFileSync } from 'node:fs'
const mem = () => { const s = readFileSync('/proc/self/status', 'utf8'); const f = (n) => Number(new RegExp('^' + n + ':\\\\s+(\\\\d+)', 'm').exec(s)?.[1] ?? 0); return { rss: f('VmRSS'), anon: f('RssAnon'), file: f('RssFile') } }
const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)) } }
await settle()
const b = mem(); const bh = process.memoryUsage().heapUsed
const t0 = performance.now()
await import(process.env.EDGE_BENCH_SPEC)
const ms = performance.now() - t0
await settle()
const a = mem(); const ah = process.memoryUsage().heapUsed
process.stdout.write(JSON.stringify({ rssKb: a.rss - b.rss, anonKb: a.anon - b.anon, fileKb: a.file - b.file, heap: ah - bh, ms }) + '\\n')
process.exit(0)
`

interface ImportCost {
  rssKb: number
  anonKb: number
  fileKb: number
  heap: number
  ms: number
}

async function importCost(spec: string): Promise<ImportCost> {
  let out = ''
  const proc = await spawnTracked(process.execPath, ['--expose-gc', '--input-type=module', '--eval', IMPORT_PROGRAM], {
    name: `import ${spec}`,
    env: { ...process.env, EDGE_BENCH_SPEC: spec, NODE_ENV: 'production' },
    onStdout: (s) => {
      out += s
    },
  })
  const guard = setTimeout(() => void proc.stop('SIGKILL'), 60_000)
  const exit = await proc.exited
  clearTimeout(guard)
  if (exit.code !== 0) throw new Error(`import ${spec} failed: ${proc.output()}`)
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as ImportCost
}

/** Package names the agent imports statically from dist/agent/main.js (dynamic `import()` not followed). */
export function agentStartupPackages(): Set<string> {
  const seen = new Set<string>()
  const packages = new Set<string>()
  const stack = [AGENT_MAIN]
  for (let guard = 0; stack.length > 0 && guard < 10_000; guard++) {
    const file = stack.pop() as string
    if (seen.has(file) || !existsSync(file)) continue
    seen.add(file)
    const src = readFileSync(file, 'utf8')
    // static `import … from 'x'` and `export … from 'x'`, not `import type` (erased anyway)
    for (const m of src.matchAll(/^\s*(?:import|export)\s+(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm)) {
      const spec = m[1] as string
      if (spec.startsWith('.')) stack.push(resolve(dirname(file), spec))
      else if (!spec.startsWith('node:'))
        packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string))
    }
  }
  return packages
}

async function importTable(): Promise<Row[]> {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>
    optionalDependencies?: Record<string, string>
  }
  const deps = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})]
  const atStart = existsSync(AGENT_MAIN) ? agentStartupPackages() : new Set<string>()
  // Baseline: the first import of any file pays for Node's ESM loader paths; an empty module shows that share.
  const emptyDir = mkdtempSync(join(tmpdir(), 'edge-bench-empty-'))
  const emptyFile = join(emptyDir, 'empty.mjs')
  writeFileSync(emptyFile, 'export default 1\n')
  const targets: Array<{ label: string; spec: string; startup: string }> = [
    { label: '(an empty .mjs file: the shared first-import cost)', spec: pathToFileURL(emptyFile).href, startup: '-' },
  ]
  targets.push(
    ...deps
      .filter((d) => existsSync(join(repoRoot, 'node_modules', d)))
      .map((d) => ({ label: d, spec: d, startup: atStart.has(d) ? 'yes' : 'no' })),
  )
  // How each part is reached at start; the certs code only for a site that uses certificates (certs-wiring.ts).
  const parts: ReadonlyArray<readonly [string, string]> = [
    ['dist/agent/app.js', 'yes (root)'],
    ['dist/agent/config/load.js', 'yes (main.js)'],
    ['dist/local-broker/index.js', 'via app.js'],
    ['dist/buffer/index.js', 'via app.js'],
    ['dist/bridge/index.js', 'via app.js'],
    ['dist/certs/index.js', 'only with certs (buildAgent)'],
  ]
  for (const [f, startup] of parts) {
    if (existsSync(join(repoRoot, f))) targets.push({ label: f, spec: pathToFileURL(join(repoRoot, f)).href, startup })
  }
  const rows: Row[] = []
  try {
    for (const t of targets) {
      process.stderr.write(`[bench] breakdown: import cost of ${t.label}\n`)
      try {
        const c = await importCost(t.spec)
        rows.push({
          module: t.label,
          'imported at agent start': t.startup,
          'RSS added (MB)': mbKb(c.rssKb),
          'anonymous (MB)': mbKb(c.anonKb),
          'file-backed (MB)': mbKb(c.fileKb),
          'live heap (MB)': mbB(c.heap),
          'import time (ms)': fmt(c.ms, 0),
        })
      } catch (err) {
        rows.push({
          module: t.label,
          'imported at agent start': t.startup,
          'RSS added (MB)': `failed: ${(err as Error).message.split('\n')[0] ?? ''}`,
        })
      }
    }
  } finally {
    rmSync(emptyDir, { recursive: true, force: true })
  }
  const [baseline, ...rest] = rows
  rest.sort((a, b) => Number(b['RSS added (MB)']) - Number(a['RSS added (MB)']))
  return baseline === undefined ? rest : [baseline, ...rest]
}

/** `npm run bench -- memory-breakdown` */
export async function memoryBreakdownScenario(): Promise<Table[]> {
  const haveAgent = existsSync(AGENT_MAIN)
  const layers: Layer[] = [
    bare('none', 'node (listening net server)'),
    bare('net', 'net socket only'),
    bare('parser', 'socket + mqtt-packet parser'),
    bare('aedes', 'bare aedes'),
    bare('aedes', 'bare aedes, mqtt-packet number cache off', { EDGE_BENCH_NO_NUMBER_CACHE: '1' }),
  ]
  if (haveAgent) layers.push(agentLayer)
  const results: LayerResult[] = []
  for (const l of layers) results.push(await layerRun(l))
  const idleOf = results.filter((r) => ['node (listening net server)', 'bare aedes', 'edge-agent'].includes(r.label))
  const tables: Table[] = [
    {
      title: 'memory-breakdown: what idle RSS is made of',
      rows: idleOf.map(idleRow),
      note:
        'file-backed = RssFile (executable and libraries, shared and clean). "native and other" = anonymous RSS - V8 heap committed ' +
        '(malloc: libuv, OpenSSL, ICU, V8 internals, thread stacks, SQLite). "live after GC" after two forced full GCs (probe only).',
    },
    {
      title: `memory-breakdown: one idle connection, layer by layer (${CLIENTS} clients)`,
      rows: results.filter((r) => r.label !== 'node (listening net server)').map(connRow),
      note:
        'as deployed = (RSS with clients - idle RSS) / clients, both sampled until stable, no GC. after GC = the same after two forced full GCs. ' +
        'The mqtt-packet parser and aedes rows include a one-time 65,536-entry Buffer cache that mqtt-packet builds on its first write ' +
        '(about 6 MB, i.e. ~3 KB per connection at 2,000): see the "number cache off" row.',
    },
  ]
  const snaps: Row[] = []
  for (const l of [bare('aedes', 'bare aedes'), ...(haveAgent ? [agentLayer] : [])])
    snaps.push(...(await snapshotRun(l)))
  for (const label of ['bare aedes', 'edge-agent']) {
    const key = `${label}: heap objects added per connection`
    const rows = snaps.filter((r) => key in r)
    if (rows.length > 0)
      tables.push({
        title: `memory-breakdown: heap snapshot diff, ${label}`,
        rows,
        note: 'self sizes of objects in a snapshot with clients minus one without, divided by the number of clients; closures, arrays and strings are grouped by kind.',
      })
  }
  tables.push({
    title: 'memory-breakdown: what importing each dependency costs a fresh Node process',
    rows: await importTable(),
    note: 'Measured in a fresh `node --expose-gc` each: after import and forced GC minus before. Modules shared between packages are counted in each row they appear in.',
  })
  return tables
}
