// The buffer's promises, checked on the real agent process: nothing a device
// got a PUBACK for is lost across kill -9; a corrupt file does not stop the
// agent; broker state survives a restart; `refuse` is back-pressure.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readdirSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { startAgent, runCli } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { startMosquitto, freePort } from '../../helpers/mosquitto.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { collectMessages, nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'
import { BufferInspector } from '../../../src/buffer/index.js'

/** An upstream that never answers (a closed port), and an out rule that captures device telemetry. */
async function unreachableUpstream(rule: Record<string, unknown> = {}) {
  return [
    {
      name: 'site',
      url: `mqtt://127.0.0.1:${await freePort()}`,
      reconnect: { minMs: 50, maxMs: 200 },
      rules: [{ topic: 'devices/+/telemetry', direction: 'out', qos: 1, ...rule }],
    },
  ]
}

/**
 * kill -9 while 10 devices publish 20,000 QoS 1 messages: every PUBACKed message is in the store, in per-device
 * order. `version(i)` is device i's MQTT version; MQTT 5 devices send user properties, which must be stored too.
 */
async function killNineCustody(t: TestContext, version: (device: number) => 4 | 5): Promise<void> {
  const dir = tmpDir(t)
  const upstreams = await unreachableUpstream()
  const agent = await startAgent(t, { dir, config: { log: { level: 'info' }, upstreams } })
  const CLIENTS = 10
  const PER_CLIENT = 2_000
  const seed = Date.now() % 100_000
  // Kill once this many PUBACKs arrived: somewhere in the middle, varying by run.
  const killAt = 4_000 + ((seed * 7919) % 12_000)
  t.diagnostic(`seed ${seed}: kill -9 after ${killAt} acknowledgements`)

  const acked: number[][] = Array.from({ length: CLIENTS }, () => [])
  let total = 0
  let resolveKill: () => void = () => undefined
  const killNow = new Promise<void>((r) => (resolveKill = r))
  const devices = await Promise.all(
    Array.from({ length: CLIENTS }, (_, i) =>
      client(t, agent.mqttUrl, { clientId: `dev-${i}`, reconnectPeriod: 0, protocolVersion: version(i) }),
    ),
  )
  const publishing = devices.map(async (d, i) => {
    // Up to 20 in flight per device, as a real client with a send window.
    let next = 0
    const worker = async () => {
      while (next < PER_CLIENT) {
        const seq = next++
        try {
          await d.publishAsync(
            `devices/dev-${i}/telemetry`,
            `${i}:${seq}`,
            version(i) === 5 ? { qos: 1, properties: { userProperties: { seq: String(seq) } } } : { qos: 1 },
          )
        } catch {
          return
        }
        acked[i]?.push(seq)
        if (++total === killAt) resolveKill()
      }
    }
    await Promise.all(Array.from({ length: 20 }, worker))
  })
  await withTimeout(Promise.race([killNow, Promise.all(publishing)]), 120_000, `${killAt} acknowledgements`)
  process.kill(agent.pid, 'SIGKILL')
  await agent.exited
  for (const d of devices) d.end(true)
  const ackedCount = acked.reduce((n, a) => n + a.length, 0)

  // Restart on the same state: the store opens (quick_check) and keeps serving.
  const again = await startAgent(t, { dir, config: { upstreams } })
  const status = await again.status()
  assert.equal(status['buffer']['health']['state'], 'ok')
  assert.equal(status['buffer']['quarantine']['count'], 0, 'the file was not corrupted by the kill')
  await again.stop()

  const inspector = BufferInspector.open(join(dir, 'data'))
  t.after(() => inspector.close())
  const stored: number[][] = Array.from({ length: CLIENTS }, () => [])
  let withProperties = 0
  for (const row of inspector.rows('site')) {
    const [c, s] = row.payload.toString().split(':').map(Number)
    stored[c ?? -1]?.push(s ?? -1)
    if (version(c ?? -1) === 5) {
      assert.deepEqual(row.properties?.userProperties, { seq: String(s) }, `device ${c}: user properties stored`)
      withProperties++
    }
  }
  for (let i = 0; i < CLIENTS; i++) {
    const have = new Set(stored[i])
    const missing = (acked[i] ?? []).filter((s) => !have.has(s))
    assert.deepEqual(missing, [], `device ${i}: acknowledged but not stored`)
    const seqs = stored[i] ?? []
    for (let k = 1; k < seqs.length; k++) {
      assert.ok(
        (seqs[k] ?? 0) > (seqs[k - 1] ?? 0),
        `device ${i}: order broken at ${k} (${seqs[k - 1]} then ${seqs[k]})`,
      )
    }
  }
  const storedCount = stored.reduce((n, a) => n + a.length, 0)
  t.diagnostic(
    `acknowledged ${ackedCount}, stored ${storedCount} (stored but unacknowledged: ${storedCount - ackedCount})`,
  )
  assert.ok(storedCount >= ackedCount)
  if (Array.from({ length: CLIENTS }, (_, i) => version(i)).includes(5)) assert.ok(withProperties > 0)
}

test('kill -9 while 10 devices publish 20,000 QoS 1 messages: every PUBACKed message is in the store, in per-device order', async (t) => {
  await killNineCustody(t, () => 4)
})

test('the same kill -9 with MQTT 3.1.1 and MQTT 5 devices side by side: nothing acknowledged is lost, properties kept', async (t) => {
  await killNineCustody(t, (i) => (i % 2 === 0 ? 5 : 4))
})

test('a corrupt database file at start is moved aside, a fresh store is created, and the agent runs', async (t) => {
  const dir = tmpDir(t)
  mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 })
  writeFileSync(
    join(dir, 'data', 'edge-agent.db'),
    Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(8192, 0xa5)]),
  )
  const agent = await startAgent(t, { dir, config: { upstreams: await unreachableUpstream() } })
  const line = await agent.waitForLog(
    (l) => typeof l['movedTo'] === 'string' || /quarantin|moved aside/i.test(l.msg),
    5_000,
    'the quarantine log line',
  )
  assert.ok(line.level >= 40, 'logged as a warning or worse')
  const aside = readdirSync(join(dir, 'data')).filter(
    (f) => f.startsWith('edge-agent.db.corrupt') || (f.includes('corrupt') && !f.endsWith('-wal')),
  )
  assert.ok(aside.length >= 1, `moved-aside file in ${readdirSync(join(dir, 'data')).join(', ')}`)
  const status = await agent.status()
  assert.equal(status['buffer']['quarantine']['count'], 1)
  // And it works: a captured message is stored.
  const dev = await client(t, agent.mqttUrl, { clientId: 'after-corruption' })
  await dev.publishAsync('devices/after-corruption/telemetry', 'ok', { qos: 1 })
  await waitFor(
    async () => (await agent.status())['buffer']['totals']['appended'] === 1,
    5_000,
    'the message to be stored',
  )
  const metrics = await (await fetch(`${agent.adminUrl}/metrics`)).text()
  assert.match(metrics, /^edge_agent_buffer_quarantined_total 1$/m)
})

test('retained messages and a persistent session queue survive an agent restart', async (t) => {
  const dir = tmpDir(t)
  const first = await startAgent(t, { dir })
  const pub = await client(t, first.mqttUrl, { clientId: 'publisher' })
  await pub.publishAsync('plant/line-1/state', 'running', { qos: 1, retain: true })
  const sub = await client(t, first.mqttUrl, { clientId: 'hmi-1', clean: false })
  await sub.subscribeAsync('plant/line-1/alarms', { qos: 1 })
  await sub.endAsync()
  await pub.publishAsync('plant/line-1/alarms', 'overtemp', { qos: 1 })
  await pub.publishAsync('plant/line-1/alarms', 'pressure', { qos: 1 })
  pub.end(true)
  const { code } = await first.stop()
  assert.equal(code, 0)

  const second = await startAgent(t, { dir })
  const back = mqtt.connect(second.mqttUrl, { clientId: 'hmi-1', clean: false, reconnectPeriod: 0 })
  t.after(() => back.endAsync(true))
  back.on('error', () => undefined)
  const queued = collectMessages(back, 2, (topic) => topic === 'plant/line-1/alarms', 10_000)
  const connack = await withTimeout(
    new Promise<{ sessionPresent: boolean }>((r) => back.once('connect', r)),
    10_000,
    'reconnect',
  )
  assert.equal(connack.sessionPresent, true, 'the session survived the restart')
  assert.deepEqual(
    (await queued).map((m) => m.payload.toString()),
    ['overtemp', 'pressure'],
  )

  const late = await client(t, second.mqttUrl, { clientId: 'late' })
  const retained = nextMessage(late, 'plant/line-1/state')
  await late.subscribeAsync('plant/#', { qos: 1 })
  const m = await retained
  assert.equal(m.payload.toString(), 'running')
  assert.equal(m.retain, true)
})

test("refuse policy: a full buffer withholds the PUBACK, and the device's messages arrive once space returns", async (t) => {
  const upstream = await startMosquitto(t)
  // Down from the start (its port stays reserved for its return); nothing to save, so SIGKILL.
  await upstream.stop(true)
  const agent = await startAgent(t, {
    config: {
      buffer: { maxBytes: 12_000 },
      upstreams: [
        {
          name: 'site',
          url: upstream.url,
          protocolVersion: 4,
          reconnect: { minMs: 50, maxMs: 200 },
          rules: [
            { topic: 'devices/+/telemetry', direction: 'out', qos: 1, whenFull: 'refuse', remotePrefix: 'cell/' },
          ],
        },
      ],
    },
  })
  // The device retries by itself, as real devices do: reconnect and resend.
  const device = mqtt.connect(agent.mqttUrl, { clientId: 'dev-r', clean: false, reconnectPeriod: 100 })
  t.after(() => device.endAsync(true))
  device.on('error', () => undefined)
  await withTimeout(new Promise<void>((r) => device.once('connect', () => r())), 10_000, 'device connect')
  const N = 60
  const payload = (i: number) => `${String(i).padStart(3, '0')}:${'x'.repeat(400)}`
  const acks = Array.from({ length: N }, (_, i) =>
    device.publishAsync('devices/dev-r/telemetry', payload(i), { qos: 1 }),
  )
  let acked = 0
  for (const a of acks)
    void a.then(
      () => acked++,
      () => undefined,
    )
  // The buffer fills: refusals are counted and the PUBACKs stop.
  await waitFor(
    async () => ((await agent.status())['buffer']['drops']['byReason']['refused'] ?? 0) > 0,
    20_000,
    'a refusal',
  )
  const status = await agent.status()
  assert.ok(status['buffer']['totals']['messages'] < N, 'not everything fit')
  assert.ok(acked < N, 'some PUBACKs were withheld')

  // Space returns: the upstream comes back, the bridge drains, the device resends.
  const watcher = await (async () => {
    await upstream.start()
    return client(t, upstream.url, { clientId: 'l3-watcher' })
  })()
  const got = new Set<string>()
  watcher.on('message', (_topic, p: Buffer) => got.add(p.toString().slice(0, 3)))
  await watcher.subscribeAsync('cell/devices/dev-r/telemetry', { qos: 1 })
  await withTimeout(Promise.all(acks), 60_000, 'every publish to be acknowledged in the end')
  await waitFor(() => got.size === N, 30_000, `all ${N} messages upstream (have ${got.size})`)
})

test('buffer stats, peek and export show what waits to go upstream; purge asks first', async (t) => {
  const dir = tmpDir(t)
  const agent = await startAgent(t, { dir, config: { upstreams: await unreachableUpstream() } })
  const dev = await client(t, agent.mqttUrl, { clientId: 'pump-1' })
  for (let i = 0; i < 5; i++) await dev.publishAsync('devices/pump-1/telemetry', `{"rpm":${1400 + i}}`, { qos: 1 })

  const stats = await runCli(['buffer', 'stats', '--config', agent.configFile, '--url', agent.adminUrl])
  assert.equal(stats.code, 0, stats.stderr)
  assert.match(stats.stdout, /site\s+5\s/)
  assert.match(stats.stdout, /buffer\s+ok/)
  const json = JSON.parse(
    (await runCli(['buffer', 'stats', '--url', agent.adminUrl, '--config', agent.configFile, '--json'])).stdout,
  ) as {
    source: string
    queues: { queue: string; depth: number }[]
  }
  assert.equal(json.source, 'agent')
  assert.equal(json.queues[0]?.depth, 5)

  const peek = await runCli(['buffer', 'peek', '--config', agent.configFile, '-n', '2'])
  assert.equal(peek.code, 0, peek.stderr)
  assert.match(peek.stdout, /devices\/pump-1\/telemetry.*\{"rpm":1400\}/)
  assert.doesNotMatch(peek.stdout, /1402/)

  const out = join(dir, 'backlog.jsonl')
  const exp = await runCli(['buffer', 'export', '--config', agent.configFile, '--out', out])
  assert.equal(exp.code, 0, exp.stderr)
  const { readFileSync } = await import('node:fs')
  const lines = readFileSync(out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { payloadText: string; payload: string })
  assert.deepEqual(
    lines.map((l) => l.payloadText),
    [0, 1, 2, 3, 4].map((i) => `{"rpm":${1400 + i}}`),
  )
  assert.equal(Buffer.from(lines[0]?.payload ?? '', 'base64').toString(), '{"rpm":1400}')

  const refused = await runCli(['buffer', 'purge', '--config', agent.configFile])
  assert.equal(refused.code, 1, 'no terminal to confirm on: nothing purged')
  assert.match(refused.stderr, /not purged/)
  const purged = await runCli(['buffer', 'purge', '--config', agent.configFile, '--yes'])
  assert.equal(purged.code, 0, purged.stderr)
  assert.match(purged.stdout, /purged 5 messages/)
  await waitFor(
    async () => (await agent.status())['buffer']['totals']['messages'] === 0,
    10_000,
    'the agent to see the purge',
  )
})
