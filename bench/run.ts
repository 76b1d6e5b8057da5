// Benchmark entry point: `npm run bench [-- SCENARIO[,SCENARIO…]]` (npm builds dist/ first).
//
// With no argument it runs the default scenarios (memory, buffer-append, ingest, bridge) and prints one
// Markdown table (or more) per scenario. A scenario argument picks by exact name, else by
// substring; `all` runs every scenario. Every child process a scenario starts is killed
// by PID when the harness exits, fails or is interrupted (bench/lib/proc.ts).
// Exit code: 0 if every selected scenario succeeded, 1 otherwise, 2 for a bad argument.
import { existsSync, readFileSync } from 'node:fs'
import { cpus, release, totalmem } from 'node:os'
import { execFileSync } from 'node:child_process'
import { memoryScenario, type Table } from './memory.js'
import { memoryLeversScenario } from './lib/levers.js'
import { memoryBreakdownScenario } from './lib/breakdown.js'
import { installCleanupHooks, killAllStarted } from './lib/proc.js'
import { MOSQUITTO_BIN } from './lib/mosquitto.js'
import { printTable, type Row } from './lib/table.js'

interface Scenario {
  name: string
  /** Part of a plain `npm run bench`. */
  byDefault: boolean
  describe: string
  run(): Promise<Table[]>
}

/**
 * A benchmark file owned elsewhere, loaded only if present: its exported function returns rows;
 * rows with a `scenario` column become one table per scenario.
 */
function optionalBench(name: string, file: string, exportName: string, describe: string): Scenario {
  const url = new URL(file, import.meta.url)
  return {
    name,
    byDefault: true,
    describe: `${describe} (bench/${file.replace('./', '')})`,
    async run() {
      if (!existsSync(url)) {
        process.stderr.write(`[bench] ${name}: bench/${file.replace('./', '')} not present, skipped\n`)
        return []
      }
      // A URL string, not a literal path: the file is optional and owned elsewhere.
      const mod = (await import(url.href)) as Record<string, unknown>
      const fn = mod[exportName]
      if (typeof fn !== 'function') throw new Error(`bench/${file.replace('./', '')} does not export ${exportName}()`)
      const rows = (await (fn as () => Promise<Row[]>)()) ?? []
      const byScenario = new Map<string, Row[]>()
      for (const r of rows) {
        const { scenario, ...rest } = r
        const title = scenario === undefined ? name : `${name}: ${String(scenario)}`
        const list = byScenario.get(title) ?? []
        list.push(scenario === undefined ? r : rest)
        byScenario.set(title, list)
      }
      return [...byScenario].map(([title, list]) => ({ title, rows: list }))
    },
  }
}

const scenarios: Scenario[] = [
  {
    name: 'memory',
    byDefault: true,
    describe: 'idle RSS and RSS per idle connection: edge-agent, bare aedes, mosquitto',
    run: memoryScenario,
  },
  optionalBench('buffer-append', './buffer-append.ts', 'runBufferBench', 'SQLite store-and-forward append throughput'),
  {
    ...optionalBench(
      'drop-memory',
      './drop-memory.ts',
      'runDropMemoryBench',
      'RSS, heap and native memory over a long run at a steady rate with the buffer full and evicting',
    ),
    byDefault: false,
  },
  optionalBench(
    'bridge',
    './bridge.ts',
    'runBridgeBench',
    'device → agent → upstream bridge, beside a Mosquitto bridge',
  ),
  {
    ...optionalBench(
      'drop-accounting',
      './drop-accounting.ts',
      'runDropAccountingBench',
      'durable drop counting on a full buffer evicting at 2,000 msg/s, beside in-memory counting',
    ),
    byDefault: false,
  },
  optionalBench(
    'ingest',
    './ingest.ts',
    'runIngestBench',
    'durable QoS 1 ingest with the upstream down, PUBACK latency at 2,000 msg/s, RSS while a backlog builds',
  ),
  {
    ...optionalBench(
      'store-io',
      './store-io.ts',
      'runStoreIoBench',
      'fsyncs, bytes written and PUBACK latency per message at 200, 2,000 and 20,000 msg/s, upstream connected',
    ),
    byDefault: false,
  },
  {
    ...optionalBench(
      'node-red',
      './node-red.ts',
      'runNodeRedBench',
      'Node-RED in the agent: idle RSS, CPU per message, edge nodes against mqtt nodes',
    ),
    byDefault: false,
  },
  {
    name: 'memory-levers',
    byDefault: false,
    describe: 'memory with node flag / env / aedes option variants, plus a throughput check',
    run: memoryLeversScenario,
  },
  {
    name: 'memory-breakdown',
    byDefault: false,
    describe: 'where the memory goes: heap spaces, modules, heap-snapshot diff, socket vs parser vs Client',
    run: memoryBreakdownScenario,
  },
]

function select(arg: string | undefined): Scenario[] {
  if (arg === undefined || arg === '') return scenarios.filter((s) => s.byDefault)
  if (arg === 'all') return scenarios
  const picked: Scenario[] = []
  for (const want of arg
    .split(',')
    .map((w) => w.trim())
    .filter((w) => w !== '')) {
    const exact = scenarios.filter((s) => s.name === want)
    const found = exact.length > 0 ? exact : scenarios.filter((s) => s.name.includes(want))
    if (found.length === 0) return []
    for (const s of found) if (!picked.includes(s)) picked.push(s)
  }
  return picked
}

function environment(): string {
  const cpu = cpus()
  let mosquitto = 'not found'
  try {
    mosquitto =
      /mosquitto version (\S+)/.exec(
        execFileSync(MOSQUITTO_BIN, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
      )?.[1] ?? '?'
  } catch (err) {
    // `mosquitto -h` exits 3 after printing its usage
    const out = (err as { stdout?: string }).stdout ?? ''
    mosquitto = /mosquitto version (\S+)/.exec(out)?.[1] ?? 'not found'
  }
  const aedes = (
    JSON.parse(readFileSync(new URL('../node_modules/aedes/package.json', import.meta.url), 'utf8')) as {
      version: string
    }
  ).version
  return [
    `node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? '?'}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Linux ${release()}`,
    `aedes ${aedes}, mosquitto ${mosquitto}, ${new Date().toISOString()}`,
  ].join('\n')
}

async function main(): Promise<number> {
  installCleanupHooks()
  const arg = process.argv[2]
  const chosen = select(arg)
  if (chosen.length === 0) {
    process.stderr.write(`unknown scenario '${arg ?? ''}'. Scenarios:\n`)
    for (const s of scenarios)
      process.stderr.write(`  ${s.name.padEnd(18)} ${s.byDefault ? '(default) ' : ''}${s.describe}\n`)
    process.stderr.write('  all                every scenario\n')
    return 2
  }
  process.stdout.write(`${environment()}\n`)
  let failed = 0
  for (const s of chosen) {
    process.stderr.write(`[bench] scenario ${s.name}\n`)
    try {
      const tables = await s.run()
      for (const t of tables) printTable(t.title, t.rows, t.note)
    } catch (err) {
      failed++
      process.stderr.write(
        `[bench] scenario ${s.name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      )
      killAllStarted()
    }
  }
  return failed === 0 ? 0 : 1
}

process.exitCode = await main()
