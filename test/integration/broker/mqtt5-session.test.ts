// MQTT 5 sessions on the real agent (aedes 2 + broker state in SQLite), with
// mqtt.js 5 and mosquitto_sub -V mqttv5: Session Expiry Interval across a
// client reconnect and across agent restarts (SIGTERM and kill -9), a session
// ended once its interval has passed, and queued messages that keep their
// MQTT 5 properties and Message Expiry Interval (expired ones not delivered,
// the remaining time sent).
import { test } from 'node:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import type { IClientOptions, IConnackPacket, IPublishPacket, MqttClient } from 'mqtt'
import type { Scope } from '../../helpers/scope.js'
import { startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { clientWithConnack, mosquittoClient } from '../../helpers/mqtt-clients.js'
import { waitFor } from '../../helpers/wait.js'

/** An mqtt.js MQTT 5 client, its CONNACK, and the messages it gets (recorded from before the CONNACK). */
async function v5(
  t: Scope,
  a: RunningAgent,
  opts: IClientOptions,
): Promise<[MqttClient, IConnackPacket, IPublishPacket[]]> {
  let got: IPublishPacket[] = []
  // queued messages follow the CONNACK at once, possibly in the same read
  const [c, connack] = await clientWithConnack(t, a.mqttUrl, { protocolVersion: 5, ...opts }, (c) => {
    got = record(c)
  })
  return [c, connack, got]
}

/** A persistent MQTT 5 session: clean start off, the given Session Expiry Interval. */
const session = (clientId: string, sessionExpiryInterval: number): IClientOptions => ({
  clientId,
  clean: false,
  properties: { sessionExpiryInterval },
})

/** Messages as they arrive, with their packets. */
function record(c: MqttClient): IPublishPacket[] {
  const got: IPublishPacket[] = []
  c.on('message', (_t, _p, packet) => got.push(packet))
  return got
}

const expired = (a: RunningAgent, clientId: string, past = true) =>
  a.waitForLog(
    (l) => l.msg === 'broker persistence: session expired' && l['clientId'] === clientId,
    20_000,
    `the session of ${clientId} to expire`,
    past,
  )

/** Starts agents one after another on one data dir; stops them all, then removes the dir, after the test. */
function agentsOnOneDir(t: Scope): () => Promise<RunningAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-v5s-'))
  const agents: RunningAgent[] = []
  // registered first, so it runs before the agents' own after-hooks: stop them all, then remove their dir
  t.after(async () => {
    for (const a of agents) await a.stop('SIGKILL').catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  })
  return async () => {
    const a = await startAgent(t, { dir })
    agents.push(a)
    return a
  }
}

test('a session with an expiry interval survives a reconnect; its queued message keeps its properties', async (t) => {
  const a = await startAgent(t)
  const [sub] = await v5(t, a, session('keep-1', 300))
  await sub.subscribeAsync('v5s/keep', { qos: 1 })
  await sub.endAsync()
  const [pub] = await v5(t, a, { clientId: 'keep-pub' })
  await pub.publishAsync('v5s/keep', 'queued', {
    qos: 1,
    properties: {
      userProperties: { batch: '7' },
      contentType: 'text/plain',
      responseTopic: 'v5s/reply',
      correlationData: Buffer.from('c-1'),
    },
  })
  const [, connack, got] = await v5(t, a, session('keep-1', 300))
  assert.equal(connack.sessionPresent, true, 'the session is still there')
  await waitFor(() => got.length === 1, 10_000, 'the queued message')
  const p = got[0]!.properties
  assert.equal(got[0]!.payload.toString(), 'queued')
  assert.deepEqual({ ...p?.userProperties }, { batch: '7' })
  assert.equal(p?.contentType, 'text/plain')
  assert.equal(p?.responseTopic, 'v5s/reply')
  assert.deepEqual(p?.correlationData, Buffer.from('c-1'))
})

test('a session ends once its expiry interval has passed after the disconnect', async (t) => {
  const a = await startAgent(t)
  const [sub] = await v5(t, a, session('short-1', 1))
  await sub.subscribeAsync('v5s/short', { qos: 1 })
  await sub.endAsync()
  await expired(a, 'short-1')
  const [, connack] = await v5(t, a, session('short-1', 300))
  assert.equal(connack.sessionPresent, false)
  // mosquitto_sub -V mqttv5 with a session expiry: its session (-c -x) outlives it
  const cli = ['-p', String(a.mqttPort), '-V', 'mqttv5', '-i', 'cli-sess', '-c', '-x', '300', '-q', '1']
  const first = await mosquittoClient('mosquitto_sub', [...cli, '-t', 'v5s/cli', '-E'])
  assert.equal(first.code, 0, first.stderr)
  const [pub] = await v5(t, a, { clientId: 'cli-pub' })
  await pub.publishAsync('v5s/cli', 'while away', { qos: 1 })
  const second = await mosquittoClient('mosquitto_sub', [...cli, '-t', 'v5s/cli', '-C', '1', '-W', '10'])
  assert.equal(second.code, 0, second.stderr)
  assert.equal(second.stdout.trim(), 'while away')
})

test('across an agent restart: sessions keep their deadlines, queued messages their expiry', async (t) => {
  const start = agentsOnOneDir(t)
  const first = await start()
  const [long] = await v5(t, first, session('long-1', 300))
  await long.subscribeAsync('v5s/r/#', { qos: 1 })
  await long.endAsync()
  const [short] = await v5(t, first, session('short-2', 2))
  await short.subscribeAsync('v5s/r/#', { qos: 1 })
  await short.endAsync()
  const shortGone = Date.now()
  const [pub] = await v5(t, first, { clientId: 'r-pub' })
  const published = Date.now()
  await pub.publishAsync('v5s/r/soon', 'stale', { qos: 1, properties: { messageExpiryInterval: 1 } })
  await pub.publishAsync('v5s/r/later', 'fresh', {
    qos: 1,
    properties: { messageExpiryInterval: 120, userProperties: { k: 'v' } },
  })
  await pub.endAsync()
  assert.equal((await first.stop()).code, 0)
  // the 1-second message and the 2-second session are past their expiry while the agent is down
  await waitFor(
    () => Date.now() >= published + 2_100 && Date.now() >= shortGone + 2_100,
    5_000,
    'the expiry of the message and the session',
  )

  const second = await start()
  // ended by the sweep at start (before the listeners opened), from the deadline stored at its disconnect
  const [, gone] = await v5(t, second, session('short-2', 300))
  assert.equal(gone.sessionPresent, false, 'the 2 s session ended, its deadline fell while the agent was down')
  await expired(second, 'short-2')
  const [, connack, got] = await v5(t, second, session('long-1', 300))
  assert.equal(connack.sessionPresent, true, 'the 300 s session is still there')
  await waitFor(() => got.some((p) => p.topic === 'v5s/r/later'), 10_000, 'the queued message')
  assert.deepEqual(
    got.map((p) => p.topic),
    ['v5s/r/later'],
    'the expired message is not delivered',
  )
  const remaining = got[0]!.properties?.messageExpiryInterval ?? 0
  assert.ok(remaining >= 1 && remaining <= 118, `remaining expiry sent (${remaining} s)`)
  assert.deepEqual({ ...got[0]!.properties?.userProperties }, { k: 'v' })
})

test('kill -9 with an MQTT 5 client connected: its session expiry counts from the next start', async (t) => {
  const start = agentsOnOneDir(t)
  const first = await start()
  const [c] = await v5(t, first, session('crash-1', 2))
  await c.subscribeAsync('v5s/crash', { qos: 1 })
  const [k] = await v5(t, first, session('crash-keep', 600))
  await k.subscribeAsync('v5s/crash', { qos: 1 })
  await first.stop('SIGKILL')
  const second = await start()
  await expired(second, 'crash-1')
  const [, connack] = await v5(t, second, session('crash-1', 300))
  assert.equal(connack.sessionPresent, false)
  const [, kept] = await v5(t, second, session('crash-keep', 600))
  assert.equal(kept.sessionPresent, true)
})

test('Will Delay Interval: the will of a dropped MQTT 5 client comes after its delay, not if it is back in time', async (t) => {
  const a = await startAgent(t)
  const [watcher, , wills] = await v5(t, a, { clientId: 'will-watch' })
  await watcher.subscribeAsync('v5s/will/#', { qos: 1 })
  const will = (topic: string) => ({
    topic,
    payload: Buffer.from('gone'),
    qos: 1 as const,
    retain: false,
    properties: { willDelayInterval: 2 },
  })
  // dropped and back within the delay: no will
  const [back] = await v5(t, a, { ...session('will-back', 60), will: will('v5s/will/back') })
  ;(back as unknown as { stream: { destroy(): void } }).stream.destroy()
  const [returned] = await v5(t, a, session('will-back', 60))
  // dropped for good: the will after 2 s
  const [drop] = await v5(t, a, { ...session('will-drop', 60), will: will('v5s/will/drop') })
  const dropped = Date.now()
  ;(drop as unknown as { stream: { destroy(): void } }).stream.destroy()
  await waitFor(() => wills.some((p) => p.topic === 'v5s/will/drop'), 15_000, 'the delayed will')
  assert.ok(Date.now() - dropped >= 1_900, 'not before its delay')
  // the will of 'will-back' would have come 2 s after its drop, before this one
  assert.deepEqual(
    wills.map((p) => p.topic),
    ['v5s/will/drop'],
  )
  await returned.endAsync()
})
