// Purdue topology over real network namespaces:
//
//   L2 (cell)        L3 (site)           L4 (enterprise)
//   devices ─ A  ──veth──  B  ──veth──  Mosquitto ─ observer
//            10.200.1.1  .1.2  10.200.2.1  .2.2
//
// L2 reaches only L3 and L3 only L4 (no routes, no forwarding); every
// connection is opened upward. Devices in L2 publish QoS 1 at a steady rate
// for DURATION; the L3–L4 link is cut for the middle half of it (30 s of 60),
// then the L2–L3 link for a sixth (10 s). Afterwards the observer at L4 must
// have every message (zero loss), in per-topic order; duplicates are counted
// and reported. Then a command published at L4 must reach its device in L2.
//
// The CI run is the timeline (60 s). For a quicker local run:
//   EDGE_TEST_PURDUE_SECONDS=12 node --import tsx --test test/integration/bridge/purdue-topology.test.ts
//
// Glossary
//   A, B      real agents (dist/agent/main.js), A in L2 bridging to B over MQTT
//             3.1.1, B in L3 bridging to Mosquitto over MQTT 5
//   actor     test/integration/bridge/fixtures/purdue-actor.ts in a namespace
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Scope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'
import { NetnsLab, netnsUnavailable, type Namespace } from '../../helpers/netns.js'
import { withTimeout } from '../../helpers/wait.js'

const SECONDS = Number(process.env['EDGE_TEST_PURDUE_SECONDS'] ?? '60')
const DEVICES = 5
const RATE = 20 // per device per second: 100 msg/s in all
const ACTOR = fileURLToPath(new URL('./fixtures/purdue-actor.ts', import.meta.url))
const REPO = fileURLToPath(new URL('../../../', import.meta.url))

const skip = mosquittoMissing() ?? (await netnsUnavailable())

interface Actor {
  readonly proc: ChildProcess
  next<T>(type: string, ms: number, what: string): Promise<T>
  send(m: unknown): void
  readonly events: { type: string; [k: string]: unknown }[]
}

async function actor(t: Scope, ns: Namespace, env: Record<string, string>): Promise<Actor> {
  const proc = spawn(ns.exec[0] as string, [...ns.exec.slice(1), process.execPath, '--import', 'tsx', ACTOR], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = once(proc, 'exit')
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  const events: Actor['events'] = []
  const waiters: { type: string; resolve: (m: unknown) => void }[] = []
  proc.on('message', (m: { type: string }) => {
    const i = waiters.findIndex((w) => w.type === m.type)
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(m)
    else events.push(m)
  })
  const a: Actor = {
    proc,
    events,
    next<T>(type: string, ms: number, what: string): Promise<T> {
      const j = events.findIndex((e) => e.type === type)
      if (j >= 0) return Promise.resolve(events.splice(j, 1)[0] as T)
      return withTimeout(
        new Promise<T>((resolve, reject) => {
          waiters.push({ type, resolve: resolve as (m: unknown) => void })
          void exited.then(([code]) => reject(new Error(`actor exited (${String(code)}) while waiting for ${what}`)))
        }),
        ms,
        what,
      )
    },
    send: (m) => proc.send(m as object),
  }
  await a.next('ready', 30_000, `the actor (${env['ROLE']}) in ${ns.name} to be ready`)
  return a
}

const at = (s: number): number => Math.round(s * 1000)

test(
  `Purdue L2 → L3 → L4 through link cuts: zero loss, per-topic order, commands down (${SECONDS} s)`,
  { skip, timeout: 240_000 },
  async (t) => {
    const lab = new NetnsLab(t) // registered first: its cleanup runs after every process is killed
    const l2 = await lab.namespace('l2')
    const l3 = await lab.namespace('l3')
    const l4 = await lab.namespace('l4')
    const l23 = await lab.link(l2, l3)
    const l34 = await lab.link(l3, l4)

    const enterprise = await startMosquitto(t, { netns: l4.name, host: l34.b.address, port: 1883 })
    const observer = await actor(t, l4, {
      ROLE: 'observer',
      URL: enterprise.url,
      FILTER: 'site-a/cell-2/devices/+/telemetry',
    })

    const bridgeTiming = {
      keepaliveSec: 3,
      reconnect: { minMs: 200, maxMs: 2000, resetAfterMs: 5000, probeIntervalMs: 250 },
    }
    const b: RunningAgent = await startAgent(t, {
      prefix: l3.exec,
      config: {
        site: { name: 'site-a', level: 3 },
        broker: { listeners: [{ protocol: 'mqtt', host: l23.b.address, port: 0 }] },
        upstreams: [
          {
            name: 'enterprise',
            url: `mqtt://${l34.b.address}:1883`,
            ...bridgeTiming,
            rules: [
              { topic: 'cell-2/devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: 'site-a/' },
              { topic: 'edge-agent/+/status', direction: 'out', qos: 1, remotePrefix: 'site-a/' },
              { topic: 'cell-2/devices/+/cmd', direction: 'in', qos: 1, remotePrefix: 'site-a/' },
            ],
          },
        ],
      },
    })
    await b.waitForLog((l) => l.msg === 'upstream connected', 20_000, 'B connected to L4')

    const a: RunningAgent = await startAgent(t, {
      prefix: l2.exec,
      config: {
        site: { name: 'cell-2', level: 2 },
        upstreams: [
          {
            name: 'site',
            url: `mqtt://${l23.b.address}:${b.mqttPort}`,
            protocolVersion: 4, // aedes at L3 speaks MQTT 3.1.1
            ...bridgeTiming,
            rules: [
              { topic: 'devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: 'cell-2/' },
              { topic: 'devices/+/cmd', direction: 'in', qos: 1, remotePrefix: 'cell-2/' },
            ],
          },
        ],
      },
    })
    await a.waitForLog((l) => l.msg === 'upstream connected', 20_000, 'A connected to B')

    const devices = await actor(t, l2, {
      ROLE: 'devices',
      URL: a.mqttUrl,
      DEVICES: String(DEVICES),
      RATE: String(RATE),
      DURATION_MS: String(at(SECONDS)),
    })

    // Timeline: cut L3–L4 for the middle half, then L2–L3 for a sixth.
    const cut34 = { from: SECONDS / 4, to: (SECONDS * 3) / 4 }
    const cut23 = { from: cut34.to + SECONDS / 30, to: cut34.to + SECONDS / 30 + SECONDS / 6 }
    const t0 = Date.now()
    const sleepUntil = async (s: number): Promise<void> => {
      const ms = t0 + at(s) - Date.now()
      if (ms > 0) await new Promise((r) => setTimeout(r, ms))
    }
    devices.send({ type: 'go' })
    await sleepUntil(cut34.from)
    await l34.down()
    t.diagnostic(`L3–L4 down at ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    await b.waitForLog((l) => l.msg === 'upstream connection lost', at(10), 'B noticing the cut (keepalive)', false)
    await sleepUntil(cut34.to)
    const bBack = b.waitForLog((l) => l.msg === 'upstream connected', at(10), 'B reconnecting to L4', false)
    await l34.up()
    const l34UpAt = Date.now()
    await bBack
    t.diagnostic(`L3–L4 up at ${((l34UpAt - t0) / 1000).toFixed(1)} s, B reconnected after ${Date.now() - l34UpAt} ms`)
    await sleepUntil(cut23.from)
    const aLost = a
      .waitForLog((l) => l.msg === 'upstream connection lost', at(cut23.to - cut23.from), 'A noticing the cut', false)
      .then(
        () => true,
        () => false, // a cut shorter than 1.5 × keepalive may pass unnoticed: TCP carries on
      )
    await l23.down()
    t.diagnostic(`L2–L3 down at ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    await sleepUntil(cut23.to)
    const aBack = a.waitForLog((l) => l.msg === 'upstream connected', at(10), 'A reconnecting to B', false)
    await l23.up()
    const l23UpAt = Date.now()
    if (await aLost) {
      await aBack
      t.diagnostic(
        `L2–L3 up at ${((l23UpAt - t0) / 1000).toFixed(1)} s, A reconnected after ${Date.now() - l23UpAt} ms`,
      )
    } else {
      void aBack.catch(() => undefined)
      t.diagnostic(`L2–L3 up at ${((l23UpAt - t0) / 1000).toFixed(1)} s, before A's keepalive noticed`)
    }
    if (SECONDS >= 60) assert.ok(await aLost, 'a 10 s cut is noticed (keepalive 3 s)')

    const done = await devices.next<{ acked: number[]; failed: number[] }>(
      'done',
      at(SECONDS) + 30_000,
      'the devices to finish',
    )
    assert.deepEqual(done.failed, new Array<number>(DEVICES).fill(0), 'every device publish was acknowledged by A')
    const expected = new Map(done.acked.map((n, i) => [`site-a/cell-2/devices/d${i}/telemetry`, n]))
    const total = done.acked.reduce((x, y) => x + y, 0)
    t.diagnostic(`devices published ${total} QoS 1 messages`)

    type Report = {
      topics: Record<string, { unique: number; contiguous: number; dups: number; reordered: number }>
      status: string[]
    }
    let report: Report | undefined
    const deadline = Date.now() + 60_000
    for (;;) {
      observer.send({ type: 'report' })
      report = await observer.next<Report>('report', 10_000, 'an observer report')
      const complete = [...expected].every(([topic, n]) => (report?.topics[topic]?.contiguous ?? 0) >= n)
      if (complete || Date.now() > deadline) break
      await new Promise((r) => setTimeout(r, 500))
    }
    const r = report
    let dups = 0
    for (const [topic, n] of expected) {
      const got = r.topics[topic]
      assert.ok(got !== undefined, `${topic} reached L4`)
      assert.equal(
        got.contiguous,
        n,
        `${topic}: every one of ${n} messages at L4 (zero loss); at L4: ${JSON.stringify(got)}, ` +
          `waited ${((Date.now() - deadline + 60_000) / 1000).toFixed(0)} s after the devices finished`,
      )
      assert.equal(got.unique, n, `${topic}: nothing unexpected`)
      assert.equal(got.reordered, 0, `${topic}: in order`)
      dups += got.dups
    }
    t.diagnostic(
      `L4 has all ${total} messages in per-topic order; duplicates ${dups} (${((dups / total) * 100).toFixed(2)} %)`,
    )
    // Bounded by the windows: at most one window per hop per link reset.
    assert.ok(dups <= 2 * 100 * 2, `duplicates ${dups} within 2 resets × 2 hops × window 100`)

    // A command from the enterprise reaches the device in the cell.
    const cmd = devices.next<{ device: number; topic: string; payload: string }>(
      'cmd',
      30_000,
      'the command at the L2 device',
    )
    observer.send({ type: 'publish', topic: 'site-a/cell-2/devices/d3/cmd', payload: 'stop-line' })
    await observer.next('published', 10_000, 'the command published at L4')
    const got = await cmd
    assert.equal(got.device, 3)
    assert.equal(got.topic, 'devices/d3/cmd')
    assert.equal(got.payload, 'stop-line')

    // Both gateways' status went up to L4 (birth relayed through B).
    assert.ok(
      r.status.some((s) => s.startsWith('site-a/edge-agent/cell-2/status')),
      `A's status relayed to L4: ${r.status.join(' | ')}`,
    )
    assert.ok(
      r.status.some((s) => s.startsWith('edge-agent/site-a/status')),
      "B's own status at L4",
    )
  },
)
