// Store I/O per message at steady rates: device → edge-agent → upstream
// Mosquitto, 10 QoS 1 publishers paced at each rate for a fixed time, the
// upstream connected (every message appended, sent, acknowledged, deleted).
//
//   npm run bench -- store-io
//   node --import tsx bench/store-io.ts  (alone; run `npm run build` first)
//
// Per rate, two runs of the same load on a fresh agent:
//   1. plain: CPU per message (/proc/<pid>/stat), bytes the agent caused to be
//      written to storage (/proc/<pid>/io write_bytes: the block layer's
//      count, WAL and checkpoints together), write syscalls, the WAL fsyncs
//      acknowledgements waited for and the group commits (the agent's
//      /status), publish → PUBACK latency at the devices, and the rate
//      actually reached;
//   2. under `strace -f -c`, which slows every syscall and so only counts:
//      every fsync and fdatasync of the agent's threads (checkpoints too).
// Rates: EDGE_BENCH_STORE_RATES (default 200,2000,20000); seconds per run:
// EDGE_BENCH_STORE_SECONDS (default 10). A rate the machine cannot carry is
// reported as the rate reached, not dropped. Then one more run at
// EDGE_BENCH_STORE_PROFILE_RATE (default 2000; 0 skips it) with `--cpu-prof`:
// the agent's CPU split by stage (bench/lib/cpu-split.ts).
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  agent,
  cpuSeconds,
  mosquitto,
  publishers,
  stopAll,
  subscriber,
  untilDelivered,
  writeSyscalls,
  type LoadProc,
} from './bridge.js'
import { STAGES, cpuSplit } from './lib/cpu-split.js'
import { freePort } from './lib/ports.js'
import { installCleanupHooks, killAllStarted } from './lib/proc.js'
import { printTable, type Row } from './lib/table.js'

const env = process.env
const RATES = (env['EDGE_BENCH_STORE_RATES'] ?? '200,2000,20000').split(',').map(Number)
const SECONDS = Number(env['EDGE_BENCH_STORE_SECONDS'] ?? '10')
const PROFILE_RATE = Number(env['EDGE_BENCH_STORE_PROFILE_RATE'] ?? '2000')
const UPSTREAM_TUNING = ['max_inflight_messages 100', 'max_queued_messages 1000000']

/** Bytes a process caused to be sent to storage (/proc/<pid>/io). */
function writeBytes(pid: number): number {
  const m = /^write_bytes:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
  return Number(m?.[1] ?? NaN)
}

interface Run {
  delivered: number
  walFsyncs: number
  commits: number
  seconds: number
  cpuUs: number
  bytes: number
  writes: number
  fsyncs: number | undefined
  ackP50: number
  ackP99: number
}

/** strace attached to every thread of `pid`, counting fsync/fdatasync until stopped. */
function countFsyncs(pid: number): { stop(): Promise<number> } {
  const tracer = spawn('strace', ['-f', '-c', '-e', 'trace=fsync,fdatasync', '-p', String(pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let report = ''
  tracer.stderr.setEncoding('utf8').on('data', (c: string) => (report += c))
  return {
    async stop() {
      const exited = new Promise((r) => tracer.once('exit', r))
      tracer.kill('SIGINT')
      await exited
      let n = 0
      for (const m of report.matchAll(/^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$/gm)) {
        n += Number(m[1])
      }
      return n
    },
  }
}

async function oneRun(rate: number, traced: boolean): Promise<Run> {
  const up = await mosquitto('upstream', await freePort(), UPSTREAM_TUNING)
  const a = await agent(up.url, [{ topic: 'bench/#', direction: 'out', qos: 1, remotePrefix: 'site/' }])
  const procs: LoadProc[] = []
  try {
    await a.nextConnected(10_000).catch(() => undefined)
    const sub = await subscriber(up.url, 'site/bench/#')
    procs.push(sub)
    const pubs = await publishers(a.url, { rate, durationMs: SECONDS * 1000 })
    procs.push(...pubs)
    const tracer = traced ? countFsyncs(a.pid) : undefined
    const s0 = (await a.status()).buffer.totals
    const cpu0 = cpuSeconds(a.pid)
    const b0 = writeBytes(a.pid)
    const w0 = writeSyscalls(a.pid)
    const t0 = Date.now()
    type Done = { acked: number; ackP50: number; ackP99: number }
    const dones = pubs.map((p) => p.next<Done>('done', SECONDS * 1000 + 120_000))
    for (const p of pubs) p.started.child.send({ type: 'go' })
    const done = await Promise.all(dones)
    const acked = done.reduce((n, d) => n + d.acked, 0)
    const r = await untilDelivered(sub, acked, 120_000)
    const cpu1 = cpuSeconds(a.pid)
    const s1 = (await a.status()).buffer.totals
    const run: Run = {
      delivered: r.unique,
      walFsyncs: s1.walFsyncs - s0.walFsyncs,
      commits: s1.commits - s0.commits,
      seconds: (Date.now() - t0) / 1000,
      cpuUs: (cpu1.user + cpu1.sys - cpu0.user - cpu0.sys) * 1e6,
      bytes: writeBytes(a.pid) - b0,
      writes: writeSyscalls(a.pid) - w0,
      fsyncs: await tracer?.stop(),
      // The publishers' halves are equal: the mean of their percentiles is close enough for a table.
      ackP50: done.reduce((n, d) => n + d.ackP50, 0) / done.length,
      ackP99: Math.max(...done.map((d) => d.ackP99)),
    }
    return run
  } finally {
    await stopAll(procs)
    await a.stop()
    await up.stop()
    up.cleanup()
  }
}

/** One plain run with the agent under `--cpu-prof` (written when it stops): CPU ms and share per stage. */
async function profiledRun(rate: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-prof-'))
  const flags = env['EDGE_BENCH_AGENT_NODE_FLAGS']
  env['EDGE_BENCH_AGENT_NODE_FLAGS'] = `${flags ?? ''} --cpu-prof --cpu-prof-dir=${dir}`
  try {
    const run = await oneRun(rate, false)
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
    if (file === undefined) throw new Error(`no CPU profile written in ${dir}`)
    const split = cpuSplit(join(dir, file))
    const total = STAGES.reduce((n, s) => n + split[s], 0)
    const row: Row = {
      'rate msg/s': rate,
      delivered: run.delivered,
      'agent CPU s (whole run)': Math.round(total) / 1000,
    }
    for (const s of STAGES) row[`${s} %`] = Math.round((split[s] / Math.max(1, total)) * 1000) / 10
    return row
  } finally {
    if (flags === undefined) delete env['EDGE_BENCH_AGENT_NODE_FLAGS']
    else env['EDGE_BENCH_AGENT_NODE_FLAGS'] = flags
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function runStoreIoBench(): Promise<Row[]> {
  installCleanupHooks()
  const rows: Row[] = []
  try {
    for (const rate of RATES) {
      const plain = await oneRun(rate, false)
      const traced = await oneRun(rate, true)
      const per = (x: number, n: number): number => Math.round((x / Math.max(1, n)) * 100) / 100
      rows.push({
        'rate asked msg/s': rate,
        'rate reached msg/s': Math.round(plain.delivered / SECONDS),
        delivered: plain.delivered,
        'WAL fsyncs/s': Math.round(plain.walFsyncs / plain.seconds),
        'WAL fsyncs/msg': per(plain.walFsyncs, plain.delivered),
        'commits/msg': per(plain.commits, plain.delivered),
        'all fsyncs/msg (strace)': traced.fsyncs === undefined ? 'n/a' : per(traced.fsyncs, traced.delivered),
        'bytes written/msg': Math.round(plain.bytes / Math.max(1, plain.delivered)),
        'write syscalls/msg': per(plain.writes, plain.delivered),
        'CPU µs/msg': Math.round(plain.cpuUs / Math.max(1, plain.delivered)),
        'PUBACK p50 ms': Math.round(plain.ackP50 * 10) / 10,
        'PUBACK p99 ms': Math.round(plain.ackP99 * 10) / 10,
      })
    }
    if (PROFILE_RATE > 0) rows.push({ scenario: 'CPU split by stage', ...(await profiledRun(PROFILE_RATE)) })
  } finally {
    killAllStarted()
  }
  return rows
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await runStoreIoBench()
  printTable(
    `store I/O per message, ${SECONDS} s per rate`,
    rows.filter((r) => r['scenario'] === undefined),
  )
  for (const r of rows.filter((x) => x['scenario'] !== undefined)) {
    const { scenario, ...rest } = r
    printTable(String(scenario), [rest])
  }
}
