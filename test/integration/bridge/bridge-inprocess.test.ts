// The Bridge class in-process against an aedes upstream on 127.0.0.1:0
// (MQTT 3.1.1, like another edge-agent), with a MemoryStore: capture rules,
// drops, conflation, echo suppression, loop detection and stop semantics,
// checked message by message.
//
// Glossary
//   upstream  an aedes broker in this process, on a free loopback port
//   bridge    the Bridge under test; "capture" plays the local broker's hook
//   watcher   an mqtt.js client of the upstream
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:net'
import { once } from 'node:events'
import { Aedes } from 'aedes'
import pino from 'pino'
import { MemoryStore, isBufferError } from '../../../src/buffer/index.js'
import { Bridge, BEACON_TOPIC, encodeBeacon, type LocalMessage } from '../../../src/bridge/index.js'
import type { Scope } from '../../helpers/scope.js'
import { client } from '../../helpers/mqtt-clients.js'
import { upstreamOptions } from '../../helpers/upstream-options.js'
import { nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'

const silent = pino({ level: 'silent' })

interface Upstream {
  readonly broker: Aedes
  readonly port: number
  readonly url: string
}

async function upstream(
  t: Scope,
  opts: { holdAcks?: boolean; identity?: 'refuse' | 'disconnect' } = {},
): Promise<Upstream> {
  const broker = await Aedes.createBroker({
    ...(opts.holdAcks === true
      ? {
          // Never authorize the bridge's data messages: no PUBACK ever (a stuck upstream).
          authorizePublish: (c, p, done) => {
            if (c?.id.startsWith('bridge-') !== true || !p.topic.startsWith('x/')) done(null)
          },
        }
      : {}),
    ...(opts.identity === undefined
      ? {}
      : {
          // A cloud broker that does not allow '$' filters: SUBACK 0x80, or it closes the connection (AWS IoT Core).
          authorizeSubscribe: (_c, sub, done) => {
            if (!sub.topic.startsWith('$')) return done(null, sub)
            if (opts.identity === 'refuse') return done(null, null)
            return done(new Error('not allowed'), null)
          },
        }),
  })
  const server: Server = createServer(broker.handle)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  t.after(async () => {
    const closed = new Promise<void>((r) => server.close(() => r()))
    await new Promise<void>((r) => broker.close(() => r()))
    await closed
  })
  return { broker, port, url: `mqtt://127.0.0.1:${port}` }
}

interface Harness {
  readonly bridge: Bridge
  readonly store: MemoryStore
  readonly local: LocalMessage[]
}

async function bridge(
  t: Scope,
  up: Upstream | string,
  u: Partial<Parameters<typeof upstreamOptions>[0]> = {},
  agentId = 'agent-under-test',
): Promise<Harness> {
  const store = new MemoryStore({ maxBytes: 1_000_000 })
  await store.start(new AbortController().signal)
  const local: LocalMessage[] = []
  const b = new Bridge({
    upstream: upstreamOptions({
      name: 'up',
      url: typeof up === 'string' ? up : up.url,
      protocolVersion: 4,
      clientId: `bridge-${agentId}`,
      keepaliveSec: 5,
      reconnect: { minMs: 50, maxMs: 200, resetAfterMs: 1000, probeIntervalMs: 50 },
      rules: [],
      ...u,
    }),
    agent: { id: agentId, site: 'cell-2', level: 2, version: 'test' },
    store,
    publishLocal: async (m) => {
      local.push(m)
    },
    logger: silent,
    identityWaitMs: 50,
    stopGraceMs: 500,
  })
  t.after(async () => {
    await b.stop()
    await store.stop()
  })
  await b.start(new AbortController().signal)
  return { bridge: b, store, local }
}

function connected(b: Bridge, ms = 5_000): Promise<unknown> {
  return b.connected
    ? Promise.resolve()
    : withTimeout(new Promise((r) => b.once('connected', r)), ms, 'the bridge to connect')
}

const pub = (topic: string, payload: string, qos: 0 | 1 | 2 = 1, retain = false) => ({
  topic,
  payload: Buffer.from(payload),
  qos,
  retain,
})

test('captures only topics an out rule matches; the rest is acknowledged at once without a store write', async (t) => {
  const up = await upstream(t)
  const { bridge: b, store } = await bridge(t, up, {
    rules: [{ topic: 'devices/#', direction: 'out', remotePrefix: 'cell-2/' }],
  })
  await connected(b)
  assert.equal(b.capture(pub('other/x', '1')), undefined)
  const watcher = await client(t, up.url)
  await watcher.subscribeAsync('cell-2/#', { qos: 1 })
  const got = nextMessage(watcher, 'cell-2/devices/a')
  const hold = b.capture(pub('devices/a', 'v'))
  assert.ok(hold instanceof Promise)
  await hold
  assert.equal((await got).payload.toString(), 'v')
  assert.equal(store.stats().totals.appended, 1)
})

test('QoS 0 is dropped (and counted) while the upstream is down, unless the rule buffers it', async (t) => {
  const { bridge: b, store } = await bridge(t, 'mqtt://127.0.0.1:1', {
    rules: [
      { topic: 'a/#', direction: 'out' },
      { topic: 'b/#', direction: 'out', bufferQos0: true },
    ],
  })
  assert.equal(b.capture(pub('a/1', 'x', 0)), undefined)
  await b.capture(pub('b/1', 'x', 0))
  await b.capture(pub('a/2', 'x', 1))
  assert.equal(b.status().drops['offline-qos0'], 1)
  assert.equal(store.stats().totals.appended, 2)
})

test('a per-topic rate limit forwards at most N per second per topic and counts the rest', async (t) => {
  const { bridge: b, store } = await bridge(t, 'mqtt://127.0.0.1:1', {
    rules: [{ topic: 't/#', direction: 'out', maxRatePerTopic: 2 }],
  })
  for (let i = 0; i < 5; i++) await b.capture(pub('t/1', String(i)))
  for (let i = 0; i < 2; i++) await b.capture(pub('t/2', String(i)))
  assert.equal(store.stats().totals.appended, 4, 'burst of 2 per topic')
  assert.equal(b.status().drops['rate-limited'], 3)
})

test('latest-only conflation forwards only the newest value of a burst, never out of order', async (t) => {
  const up = await upstream(t)
  const { bridge: b } = await bridge(t, up, {
    rules: [{ topic: 'gauge/#', direction: 'out', conflate: 'latest-only' }],
  })
  const watcher = await client(t, up.url)
  await watcher.subscribeAsync('gauge/#', { qos: 1 })
  await connected(b)
  const values: number[] = []
  const last = new Promise<void>((resolve) => {
    watcher.on('message', (_topic, payload) => {
      values.push(Number(payload.toString()))
      if (values[values.length - 1] === 99) resolve()
    })
  })
  await Promise.all(Array.from({ length: 100 }, (_, i) => b.capture(pub('gauge/p', String(i))) ?? Promise.resolve()))
  await withTimeout(last, 5_000, 'the newest value upstream')
  assert.deepEqual(
    [...values].sort((x, y) => x - y),
    values,
    'never out of order',
  )
  assert.ok(values.length < 100, 'older unsent values were conflated')
  assert.equal(values.length + (b.status().drops['conflated'] ?? 0), 100, 'every value either sent or counted')
})

for (const bridgeFlag of [true, false]) {
  const how = bridgeFlag ? 'the bridge bit (the upstream applies No Local)' : 'the echo guard (no bridge bit)'
  test(`a both rule over MQTT 3.1.1 does not deliver its own messages back, by ${how}, but delivers others`, async (t) => {
    const up = await upstream(t)
    const { bridge: b, local } = await bridge(t, up, {
      bridgeFlag,
      rules: [{ topic: 'shared/#', direction: 'both', remotePrefix: 'cell-2/' }],
    })
    await connected(b)
    await waitFor(() => b.status().totals.connects > 0 && b.status().state === 'connected', 2_000, 'connected')
    const watcher = await client(t, up.url)
    await watcher.subscribeAsync('cell-2/#', { qos: 1 })
    const other = await client(t, up.url)
    // The bridge's own subscription is active once something from upstream arrives through it.
    await waitFor(
      async () => {
        await other.publishAsync('cell-2/shared/probe', 'p', { qos: 1 })
        return local.some((m) => m.topic === 'shared/probe')
      },
      5_000,
      'the bridge subscription',
      100,
    )
    const upward = nextMessage(watcher, 'cell-2/shared/x')
    await b.capture(pub('shared/x', 'mine'))
    await upward
    await other.publishAsync('cell-2/shared/y', 'theirs', { qos: 1 })
    await waitFor(() => local.some((m) => m.topic === 'shared/y'), 5_000, "the other client's message locally")
    assert.deepEqual(
      local.map((m) => m.topic).filter((x) => x !== 'shared/probe'),
      ['shared/y'],
      'the echo of shared/x was suppressed',
    )
    assert.equal(b.status().drops['echo'], bridgeFlag ? undefined : 1)
  })
}

test('an upstream that lists this agent above itself is a loop: forwarding pauses, nothing is sent', async (t) => {
  const up = await upstream(t)
  // The upstream "agent" says: my upstreams include agent-under-test.
  await new Promise<void>((resolve) =>
    up.broker.publish(
      {
        cmd: 'publish',
        topic: BEACON_TOPIC,
        payload: encodeBeacon({ id: 'agent-b', site: 'site-b', level: 3, above: ['agent-under-test'] }),
        qos: 1,
        retain: true,
        dup: false,
      },
      () => resolve(),
    ),
  )
  const watcher = await client(t, up.url)
  await watcher.subscribeAsync('#', { qos: 1 })
  const { bridge: b, store } = await bridge(t, up, { rules: [{ topic: 'x/#', direction: 'out' }] })
  const looped = withTimeout(new Promise((r) => b.once('loop', r)), 5_000, 'loop detection')
  await b.capture(pub('x/1', 'would loop'))
  await looped
  const s = b.status()
  assert.equal(s.loop?.peerSite, 'site-b')
  assert.equal(s.peer?.id, 'agent-b')
  // Short, explicit "nothing arrives" check (aedes checkNoPacket style).
  const stray = await Promise.race([
    nextMessage(watcher, 'x/1', 300).then(
      () => 'arrived',
      () => 'none',
    ),
  ])
  assert.equal(stray, 'none')
  assert.equal(store.stats().queues.find((q) => q.queue === 'up')?.depth, 1, 'kept in the buffer, not dropped')
})

test('stop() gives in-flight messages back to the buffer when the upstream never acknowledges', async (t) => {
  const up = await upstream(t, { holdAcks: true })
  const { bridge: b, store } = await bridge(t, up, { rules: [{ topic: 'x/#', direction: 'out' }] })
  await connected(b)
  await waitFor(() => b.status().state === 'connected', 2_000, 'connected')
  for (let i = 0; i < 3; i++) await b.capture(pub(`x/${i}`, 'v'))
  await waitFor(() => b.status().inflight === 3, 2_000, 'three messages in flight')
  await b.stop()
  const q = store.stats().queues.find((x) => x.queue === 'up')
  assert.equal(q?.depth, 3)
  assert.equal(q?.inFlight, 0, 'released for the next start')
})

test("a full buffer with whenFull 'refuse' rejects the capture, so the device keeps its message", async (t) => {
  const store = new MemoryStore({ maxBytes: 400 })
  await store.start(new AbortController().signal)
  const b = new Bridge({
    upstream: upstreamOptions({
      name: 'up',
      url: 'mqtt://127.0.0.1:1',
      rules: [{ topic: 'x/#', direction: 'out', whenFull: 'refuse' }],
      reconnect: { minMs: 1000, maxMs: 1000 },
    }),
    agent: { id: 'a', site: 's', level: 2, version: 't' },
    store,
    publishLocal: async () => undefined,
    logger: silent,
  })
  t.after(async () => {
    await b.stop()
    await store.stop()
  })
  await b.start(new AbortController().signal)
  let refused: unknown
  for (let i = 0; i < 20 && refused === undefined; i++) {
    await b.capture(pub('x/1', 'y'.repeat(50)))?.catch((err: unknown) => (refused = err))
  }
  assert.ok(isBufferError(refused, 'EDGE_ERR_BUFFER_FULL'), `got ${String(refused)}`)
})

for (const identity of ['refuse', 'disconnect'] as const) {
  test(`an upstream that ${identity === 'refuse' ? 'refuses' : 'disconnects on'} the identity subscription still gets the data (loop detection turns itself off)`, async (t) => {
    const up = await upstream(t, { identity })
    const watcher = await client(t, up.url)
    await watcher.subscribeAsync('x/#', { qos: 1 })
    const { bridge: b } = await bridge(t, up, { rules: [{ topic: 'x/#', direction: 'out' }] })
    const got = nextMessage(watcher, 'x/1', 10_000)
    await b.capture(pub('x/1', 'through'))
    assert.equal((await got).payload.toString(), 'through')
    assert.equal(b.status().loop, null)
  })
}

test('two bridges fighting over one client id back off instead of kicking each other out in a storm', async (t) => {
  const up = await upstream(t)
  const reconnect = { minMs: 200, maxMs: 1000, resetAfterMs: 5000, probeIntervalMs: 50 }
  const one = await bridge(
    t,
    up,
    { clientId: 'bridge-same', reconnect, rules: [{ topic: 'x/#', direction: 'out' }] },
    'agent-one',
  )
  const two = await bridge(
    t,
    up,
    { clientId: 'bridge-same', reconnect, rules: [{ topic: 'x/#', direction: 'out' }] },
    'agent-two',
  )
  // Each session takes the other over; the port always answers, so probes must not cut the backoff short.
  await new Promise((r) => setTimeout(r, 3_000))
  const connects = one.bridge.status().totals.connects + two.bridge.status().totals.connects
  t.diagnostic(`${connects} connections in 3 s`)
  // Backoff 200..1000 ms allows at most ~15 per bridge; probing every 50 ms would allow ~60 each.
  assert.ok(connects <= 30, `${connects} connections in 3 s`)
})
