// Soak: seeded random and malformed MQTT traffic with connection churn
// against two agents at once, one with the unit's NODE_OPTIONS and one
// without (it caps its own heap, main.ts): both stay up and healthy, and the
// RSS of each agent's process tree stays under 300 MB.
//
// Knobs: EDGE_TEST_FUZZ_MS (default 600000 = 10 minutes), EDGE_TEST_FUZZ_SEED.
// Traffic is loopback only and bounded: at most CONCURRENCY connections per
// agent at a time, each closed within SESSION_MS, until the deadline.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client, connectPacket, mqttString, packet, publishPacket } from '../../helpers/mqtt-clients.js'
import { nextMessage } from '../../helpers/wait.js'

const DURATION_MS = Number(process.env['EDGE_TEST_FUZZ_MS'] ?? 600_000)
const SEED = Number(process.env['EDGE_TEST_FUZZ_SEED'] ?? 20261203)
const CONCURRENCY = 24
const SESSION_MS = 250
const RSS_LIMIT = 300 * 1024 * 1024

/** mulberry32: small, seeded, good enough to pick scenarios and bytes. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** RSS of a process and its descendants, bytes. */
function treeRss(pid: number): number {
  let rss = 0
  const visit = (p: number): void => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))
      rss += Number(m?.[1] ?? 0) * 1024
      for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/))
        if (c !== '') visit(Number(c))
    } catch {
      // gone meanwhile
    }
  }
  visit(pid)
  return rss
}

interface FuzzResult {
  sessions: number
  bytesSent: number
  maxRss: number
  samples: number[]
}

/** One scenario's bytes: garbage, mutated packets, retained floods, churn, stray acks. */
function scenario(rnd: () => number, n: number): Buffer[] {
  const int = (k: number) => Math.floor(rnd() * k)
  const bytes = (k: number) => Buffer.from(Array.from({ length: k }, () => int(256)))
  const id = `fz-${n}-${int(1e6)}`
  const connect = connectPacket({ clientId: id, keepalive: int(3) === 0 ? 0 : 30 })
  const topic = () => `fuzz/${int(64)}/${int(80)}`
  switch (int(6)) {
    case 0: // garbage from the first byte
      return [bytes(1 + int(1500))]
    case 1: {
      // valid packets with bytes flipped
      const seq = Buffer.concat([
        connect,
        publishPacket(topic(), bytes(int(200)), int(2), 1 + int(100)),
        packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString(topic()), Buffer.from([1])])),
      ])
      for (let i = 0, flips = 1 + int(6); i < flips; i++) seq[int(seq.length)] = int(256)
      return [seq]
    }
    case 2: {
      // retained messages on many topics (thousands in all), QoS 0 and 1
      const out = [connect]
      for (let i = 0, k = 1 + int(20); i < k; i++)
        out.push(publishPacket(topic(), bytes(int(2000)), int(2), 1 + i, 0x01))
      return out
    }
    case 3: // churn: connect and go
      return int(2) === 0 ? [connect] : []
    case 4: {
      // subscriptions, publishes, and acks for ids nobody used
      const out = [
        connect,
        packet(
          0x82,
          Buffer.concat([
            Buffer.from([0, 1 + int(50)]),
            mqttString(int(2) === 0 ? 'fuzz/#' : topic()),
            Buffer.from([int(3)]),
          ]),
        ),
      ]
      for (let i = 0, k = int(10); i < k; i++)
        out.push(Buffer.from([[0x40, 0x50, 0x62, 0x70][int(4)]!, 2, int(256), int(256)]))
      out.push(publishPacket(topic(), bytes(int(500)), int(3), 1 + int(1000)))
      return out
    }
    default: {
      // oversized or truncated lengths, huge remaining length before CONNECT
      return [
        int(2) === 0
          ? Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f])
          : Buffer.concat([connect.subarray(0, int(connect.length)), bytes(int(40))]),
      ]
    }
  }
}

async function fuzz(agent: RunningAgent, seed: number, until: number): Promise<FuzzResult> {
  const rnd = prng(seed)
  const result: FuzzResult = { sessions: 0, bytesSent: 0, maxRss: 0, samples: [] }
  const sample = (): void => {
    const rss = treeRss(agent.pid)
    result.maxRss = Math.max(result.maxRss, rss)
    result.samples.push(Math.round(rss / 1048576))
  }
  const sampler = setInterval(sample, 2_000)
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const chunks = scenario(rnd, result.sessions++)
      const s: Socket = netConnect({ host: '127.0.0.1', port: agent.mqttPort })
      const done = (): void => {
        clearTimeout(timer)
        s.destroy()
        resolve()
      }
      const timer = setTimeout(done, SESSION_MS)
      s.on('error', done)
      s.on('close', done)
      s.on('data', () => undefined)
      s.once('connect', () => {
        for (const c of chunks) {
          result.bytesSent += c.length
          s.write(c)
        }
        if (chunks.length === 0 || rnd() < 0.3) s.end()
      })
    })
  const worker = async (): Promise<void> => {
    while (Date.now() < until && agent.proc.exitCode === null) await one()
  }
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  } finally {
    clearInterval(sampler)
  }
  sample()
  return result
}

async function healthy(t: { after(fn: () => unknown): void }, agent: RunningAgent): Promise<void> {
  assert.equal(agent.proc.exitCode, null, 'the agent is still running')
  const res = await fetch(`${agent.adminUrl}/healthz`)
  assert.equal(res.status, 200, await res.text())
  const sub = await client(t, agent.mqttUrl)
  await sub.subscribeAsync('after/fuzz', { qos: 1 })
  const got = nextMessage(sub, 'after/fuzz')
  const pub = await client(t, agent.mqttUrl)
  await pub.publishAsync('after/fuzz', 'still serving', { qos: 1 })
  assert.equal((await got).payload.toString(), 'still serving')
}

test(
  `random and malformed traffic with churn for ${DURATION_MS / 1000} s: both agents stay healthy under 300 MB RSS`,
  { timeout: DURATION_MS + 300_000 },
  async (t) => {
    const withFlags = await startAgent(t)
    const withoutFlags = await startAgent(t, { env: { NODE_OPTIONS: '' } })
    const until = Date.now() + DURATION_MS
    const [a, b] = await Promise.all([fuzz(withFlags, SEED, until), fuzz(withoutFlags, SEED + 1, until)])
    for (const [name, r] of [
      ['with NODE_OPTIONS', a],
      ['without NODE_OPTIONS', b],
    ] as const) {
      t.diagnostic(
        `${name}: ${r.sessions} connections, ${(r.bytesSent / 1048576).toFixed(1)} MiB sent, max RSS ${(r.maxRss / 1048576).toFixed(0)} MB, samples ${r.samples.join(' ')}`,
      )
    }
    for (const [name, agent] of [
      ['with NODE_OPTIONS', withFlags],
      ['without NODE_OPTIONS', withoutFlags],
    ] as const) {
      const st: Record<string, any> = await agent.status().catch((err: unknown) => ({ error: String(err) }))
      t.diagnostic(
        `${name}: broker ${JSON.stringify(st['broker']?.['clients'])} clients, state ${JSON.stringify(st['buffer']?.['brokerState'])}`,
      )
    }
    assert.ok(a.sessions > 100 && b.sessions > 100, 'the generator ran')
    await healthy(t, withFlags)
    await healthy(t, withoutFlags)
    assert.ok(a.maxRss < RSS_LIMIT, `with NODE_OPTIONS: max RSS ${a.maxRss} >= ${RSS_LIMIT}`)
    assert.ok(b.maxRss < RSS_LIMIT, `without NODE_OPTIONS: max RSS ${b.maxRss} >= ${RSS_LIMIT}`)
  },
)
