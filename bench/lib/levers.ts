// The memory-levers scenario: the memory measurement of bench/memory.ts repeated for
// variants (node/V8 flags, malloc env, aedes/mqtt-packet settings), then a QoS 1
// throughput check of every variant (fresh brokers with the same settings, rounds
// interleaved over the variants), so that a lever that saves memory but costs too much
// speed shows it.
//
//   EDGE_BENCH_LEVERS=name,name   run only these variants (names as printed)
//   EDGE_BENCH_SYSTEMS=aedes      only the bare-aedes variants (or agent)
//   EDGE_BENCH_SETTLE_MS          as for `memory` (default 60 000)
//   EDGE_BENCH_TP_MESSAGES=20000  messages in one throughput check
//   EDGE_BENCH_TP_ROUNDS=5        rounds of the check, interleaved over all levers (0 = skip)
import { existsSync } from 'node:fs'
import {
  measure,
  optionsFromEnv,
  systemsFromEnv,
  type MeasureOptions,
  type Measurement,
  type SystemKind,
  type Table,
} from '../memory.js'
import { AGENT_MAIN, startAgent } from './agent.js'
import { startBareAedes, type BrokerProcess } from './bare-aedes.js'
import { freePort } from './ports.js'
import { readProcMemory } from './rss.js'
import { fmt, type Row } from './table.js'
import { measureThroughput } from './throughput.js'

export interface Lever {
  name: string
  target: Extract<SystemKind, 'agent' | 'aedes'>
  flags?: string[]
  env?: Record<string, string>
  noDelay?: boolean
  aedesOpts?: Record<string, unknown>
}

const NO_NUMBER_CACHE = { EDGE_BENCH_NO_NUMBER_CACHE: '1' }

export const LEVERS: Lever[] = [
  { name: 'aedes: default', target: 'aedes' },
  { name: 'aedes: --max-semi-space-size=1', target: 'aedes', flags: ['--max-semi-space-size=1'] },
  { name: 'aedes: --max-semi-space-size=4', target: 'aedes', flags: ['--max-semi-space-size=4'] },
  { name: 'aedes: --optimize-for-size', target: 'aedes', flags: ['--optimize-for-size'] },
  { name: 'aedes: --max-old-space-size=256', target: 'aedes', flags: ['--max-old-space-size=256'] },
  { name: 'aedes: --max-old-space-size=64', target: 'aedes', flags: ['--max-old-space-size=64'] },
  { name: 'aedes: --lite-mode', target: 'aedes', flags: ['--lite-mode'] },
  { name: 'aedes: --single-threaded-gc', target: 'aedes', flags: ['--single-threaded-gc'] },
  { name: 'aedes: MALLOC_ARENA_MAX=2', target: 'aedes', env: { MALLOC_ARENA_MAX: '2' } },
  { name: 'aedes: setNoDelay(true)', target: 'aedes', noDelay: true },
  { name: 'aedes: mqtt-packet cacheNumbers=false', target: 'aedes', env: NO_NUMBER_CACHE },
  {
    name: 'aedes: semi-space 1 + optimize-for-size + cacheNumbers=false',
    target: 'aedes',
    flags: ['--max-semi-space-size=1', '--optimize-for-size'],
    env: NO_NUMBER_CACHE,
  },
  { name: 'agent: as deployed', target: 'agent' },
  { name: 'agent: + --max-semi-space-size=1', target: 'agent', flags: ['--max-semi-space-size=1'] },
  { name: 'agent: + --optimize-for-size', target: 'agent', flags: ['--optimize-for-size'] },
  {
    name: 'agent: + --max-semi-space-size=1 --optimize-for-size',
    target: 'agent',
    flags: ['--max-semi-space-size=1', '--optimize-for-size'],
  },
  { name: 'agent: + --lite-mode', target: 'agent', flags: ['--lite-mode'] },
  { name: 'agent: + MALLOC_ARENA_MAX=2', target: 'agent', env: { MALLOC_ARENA_MAX: '2' } },
]

function startFor(lever: Lever, base: MeasureOptions, port: number): Promise<BrokerProcess> {
  const nodeFlags = [...base.nodeFlags, ...(lever.flags ?? [])]
  if (lever.target === 'aedes') {
    return startBareAedes({
      port,
      nodeFlags,
      fdLimit: base.clients + 1024,
      ...(lever.env !== undefined ? { env: lever.env } : {}),
      ...(lever.noDelay !== undefined ? { noDelay: lever.noDelay } : {}),
      ...(lever.aedesOpts !== undefined ? { aedesOpts: lever.aedesOpts } : {}),
    })
  }
  return freePort().then((adminPort) =>
    startAgent({
      port,
      adminPort,
      nodeFlags,
      fdLimit: base.clients + 1024,
      ...(lever.env !== undefined ? { env: lever.env } : {}),
    }),
  )
}

/**
 * Throughput of every lever, interleaved: all the levers' brokers are up at once (idle ones
 * cost no CPU), and each round runs the check once against each of them in turn, so a busy
 * spell on a shared machine hits every lever alike. Returns the median per lever and the
 * broker's peak RSS (VmHWM) after all rounds.
 */
async function throughputAll(
  levers: readonly Lever[],
  base: MeasureOptions,
  messages: number,
  rounds: number,
): Promise<Map<Lever, { perSec: number; peakKb: number } | Error>> {
  const out = new Map<Lever, { perSec: number; peakKb: number } | Error>()
  const brokers = new Map<Lever, { b: BrokerProcess; port: number; rates: number[] }>()
  try {
    for (const lever of levers) {
      try {
        const port = await freePort()
        brokers.set(lever, { b: await startFor(lever, base, port), port, rates: [] })
      } catch (err) {
        out.set(lever, err as Error)
      }
    }
    for (let round = 0; round < rounds; round++) {
      process.stderr.write(`[bench] throughput round ${round + 1}/${rounds}\n`)
      for (const [lever, x] of brokers) {
        if (out.has(lever)) continue
        try {
          x.rates.push((await measureThroughput(x.port, messages)).perSec)
        } catch (err) {
          out.set(lever, err as Error)
        }
      }
    }
    for (const [lever, x] of brokers) {
      if (out.has(lever)) continue
      const sorted = [...x.rates].sort((a, b) => a - b)
      out.set(lever, { perSec: sorted[Math.floor(sorted.length / 2)] ?? NaN, peakKb: readProcMemory(x.b.pid).hwmKb })
    }
  } finally {
    for (const x of brokers.values()) await x.b.stop().catch(() => undefined)
  }
  return out
}

/** `npm run bench -- memory-levers` */
export async function memoryLeversScenario(): Promise<Table[]> {
  const base = optionsFromEnv()
  const systems = systemsFromEnv()
  const only = (process.env.EDGE_BENCH_LEVERS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  const messages = Number(process.env.EDGE_BENCH_TP_MESSAGES ?? '20000')
  const rounds = Number(process.env.EDGE_BENCH_TP_ROUNDS ?? '5')
  const picked = LEVERS.filter(
    (l) =>
      systems.includes(l.target) &&
      (only.length === 0 || only.includes(l.name)) &&
      (l.target !== 'agent' || existsSync(AGENT_MAIN)),
  )
  const rows: Row[] = []
  const measured = new Map<Lever, Measurement | Error>()
  const n = base.clients.toLocaleString('en')
  for (const lever of picked) {
    process.stderr.write(`[bench] lever ${lever.name}\n`)
    const opts: MeasureOptions = {
      ...base,
      nodeFlags: [...base.nodeFlags, ...(lever.flags ?? [])],
      ...(lever.env !== undefined ? { env: lever.env } : {}),
      ...(lever.noDelay !== undefined ? { noDelay: lever.noDelay } : {}),
      ...(lever.aedesOpts !== undefined ? { aedesOpts: lever.aedesOpts } : {}),
    }
    measured.set(
      lever,
      await measure(lever.target, opts).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
    )
  }
  const tp = rounds > 0 ? await throughputAll(picked, base, messages, rounds) : new Map<Lever, Error>()
  for (const lever of picked) {
    const m = measured.get(lever)
    const t = tp.get(lever)
    if (m === undefined || m instanceof Error) {
      rows.push({ lever: lever.name, notes: `failed: ${m?.message.split('\n')[0] ?? '?'}` })
      continue
    }
    rows.push({
      lever: lever.name,
      'idle RSS (MB)': fmt(m.idle.rssKb / 1024),
      [`RSS with ${n} (MB)`]: fmt(m.loaded.rssKb / 1024),
      'KB/conn': fmt((m.loaded.rssKb - m.idle.rssKb) / base.clients),
      'idle settled (MB)': fmt(m.idleSettledKb / 1024),
      [`with ${n} settled (MB)`]: fmt(m.loadedSettledKb / 1024),
      'KB/conn settled': fmt((m.loadedSettledKb - m.idleSettledKb) / base.clients),
      'connect (s)': fmt(m.connectMs / 1000, 2),
      [`QoS 1 msg/s (median of ${rounds})`]: t === undefined || t instanceof Error ? '-' : fmt(t.perSec, 0),
      'peak RSS in throughput (MB)': t === undefined || t instanceof Error ? '-' : fmt(t.peakKb / 1024),
      notes: [...m.notes, ...(t instanceof Error ? [`throughput failed: ${t.message.split('\n')[0] ?? ''}`] : [])].join(
        '; ',
      ),
    })
  }
  return [
    {
      title: `memory-levers: ${n} idle clients, and QoS 1 throughput (${messages.toLocaleString('en')} × 64 B, 1 publisher → 1 subscriber)`,
      rows,
      note: 'Each lever runs alone against its own default row; agent rows keep the NODE_OPTIONS of the systemd unit and add the flags shown.',
    },
  ]
}
