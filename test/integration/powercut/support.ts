// Shared by the power-cut tests: a seeded random source (the seed is printed,
// POWERCUT_SEED replays a run), the agent on a PowerCutDisk, and a load of
// QoS 1 publishers that records what the agent acknowledged.
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { freePort } from '../../helpers/mosquitto.js'
import { client } from '../../helpers/mqtt-clients.js'
import type { PowerCutDisk } from '../../helpers/powercut.js'
import type { Scope } from '../../helpers/scope.js'
import { withTimeout } from '../../helpers/wait.js'

/** mulberry32: small, seedable, good enough to pick cut points. */
export function seeded(seed: number): { seed: number; int(min: number, max: number): number } {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  return { seed, int: (min, max) => min + Math.floor(next() * (max - min + 1)) }
}

/** The seed of this run: POWERCUT_SEED, else random. Print it (t.diagnostic) and put it in failure messages. */
export function runSeed(): number {
  const env = process.env['POWERCUT_SEED']
  return env !== undefined && env !== '' ? Number(env) : Math.floor(Math.random() * 2 ** 31)
}

/** An upstream nobody answers on, with an out rule capturing device telemetry: everything stays buffered. */
export async function unreachableUpstreams(): Promise<unknown[]> {
  return [
    {
      name: 'site',
      url: `mqtt://127.0.0.1:${await freePort()}`,
      reconnect: { minMs: 1000, maxMs: 5000 },
      rules: [{ topic: 'devices/+/telemetry', direction: 'out', qos: 1 }],
    },
  ]
}

/** The agent with its dataDir on the power-cut disk (its config file stays on the real disk). */
export function agentOnDisk(t: Scope, disk: PowerCutDisk, config: Record<string, unknown>): Promise<RunningAgent> {
  return startAgent(t, {
    config: { log: { level: 'info' }, ...config, dataDir: join(disk.path, 'data') },
    startTimeoutMs: 60_000,
  })
}

export interface Acked {
  publisher: number
  round: number
  seq: number
  /** When the PUBACK arrived (epoch ms). */
  at: number
}

/**
 * `publishers` devices publish QoS 1 `<round>:<publisher>:<seq>` with a few
 * messages in flight each, until stop() is called or the connection dies.
 * `acked` holds what got a PUBACK.
 */
export async function startLoad(
  t: Scope,
  url: string,
  round: number,
  publishers: number,
): Promise<{ acked: Acked[]; stop(): Promise<void> }> {
  const acked: Acked[] = []
  let stopped = false
  const devices: MqttClient[] = await Promise.all(
    Array.from({ length: publishers }, (_, i) => client(t, url, { clientId: `dev-${i}` })),
  )
  const loops = devices.map(async (d, i) => {
    let next = 0
    // Sequential per device: the order of the acks is the order of the sends.
    while (!stopped && next < 100_000) {
      const seq = next++
      try {
        await d.publishAsync(`devices/dev-${i}/telemetry`, `${round}:${i}:${seq}`, { qos: 1 })
      } catch {
        return
      }
      acked.push({ publisher: i, round, seq, at: Date.now() })
    }
  })
  return {
    acked,
    async stop() {
      stopped = true
      for (const d of devices) d.end(true)
      await withTimeout(Promise.all(loops), 30_000, 'the publishers to stop')
    },
  }
}

export interface StoredView {
  integrity: string
  /** publisher → payloads in id order, as [round, seq]. */
  byPublisher: Map<number, Array<[number, number]>>
  rows: number
}

/** Opens the buffer file as the next start would (WAL recovery), checks it and reads every row. */
export function readStore(dataDir: string): StoredView {
  const db = new Database(join(dataDir, 'edge-agent.db'))
  try {
    const integrity = String(db.pragma('integrity_check', { simple: true }))
    const byPublisher = new Map<number, Array<[number, number]>>()
    let rows = 0
    const hasTable = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'buffer_messages'").get() !== undefined
    if (hasTable) {
      for (const p of db
        .prepare('SELECT payload FROM buffer_messages ORDER BY id')
        .pluck()
        .iterate() as IterableIterator<Buffer>) {
        const [r, pub, s] = p.toString().split(':').map(Number)
        let list = byPublisher.get(pub ?? -1)
        if (list === undefined) byPublisher.set(pub ?? -1, (list = []))
        list.push([r ?? -1, s ?? -1])
        rows++
      }
    }
    return { integrity, byPublisher, rows }
  } finally {
    db.close()
  }
}

/** Acknowledged messages missing from the store, and per-publisher order violations. */
export function compare(acked: readonly Acked[], view: StoredView): { missing: Acked[]; disorder: string[] } {
  const have = new Map<number, Set<string>>()
  for (const [p, list] of view.byPublisher) have.set(p, new Set(list.map(([r, s]) => `${r}:${s}`)))
  const missing = acked.filter((a) => !have.get(a.publisher)?.has(`${a.round}:${a.seq}`))
  const disorder: string[] = []
  for (const [p, list] of view.byPublisher) {
    for (let i = 1; i < list.length; i++) {
      const [r0, s0] = list[i - 1] ?? [0, 0]
      const [r1, s1] = list[i] ?? [0, 0]
      if (r1 < r0 || (r1 === r0 && s1 <= s0)) disorder.push(`publisher ${p}: ${r0}:${s0} before ${r1}:${s1}`)
    }
  }
  return { missing, disorder }
}
