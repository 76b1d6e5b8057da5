// Power cuts and the broker's durable state (durability 'full'): a retained
// message and a QoS 1 message queued for an offline persistent session are
// there after the cut if their publisher got its PUBACK before it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import mqtt from 'mqtt'
import { client } from '../../helpers/mqtt-clients.js'
import { PowerCutDisk, powerCutUnsupported } from '../../helpers/powercut.js'
import { waitFor, withTimeout } from '../../helpers/wait.js'
import { agentOnDisk, runSeed, seeded } from './support.js'

const CUTS = 5
const KEYS = 5

test(`${CUTS} power cuts while retained and queued QoS 1 messages are published: every acknowledged one survives`, async (t) => {
  const unsupported = await powerCutUnsupported()
  if (unsupported !== null) return t.skip(unsupported)
  const rnd = seeded(runSeed())
  t.diagnostic(`seed ${rnd.seed} (replay with POWERCUT_SEED=${rnd.seed})`)
  const disk = await PowerCutDisk.create(t)
  const config = { buffer: { durability: 'full' } }

  // The persistent session, made durable by a clean stop before the first cut.
  const first = await agentOnDisk(t, disk, config)
  const hmi = await client(t, first.mqttUrl, { clientId: 'hmi-1', clean: false })
  await hmi.subscribeAsync('plant/alarms', { qos: 1 })
  await hmi.endAsync()
  assert.equal((await first.stop()).code, 0)

  let checked = 0
  for (let round = 0; round < CUTS; round++) {
    const where = `seed ${rnd.seed}, cut ${round + 1}`
    const agent = await agentOnDisk(t, disk, config)
    const pub = await client(t, agent.mqttUrl, { clientId: 'plc-1' })
    const alarms: string[] = []
    const retained = new Map<number, number>()
    const cutAfter = rnd.int(1, 60)
    let acks = 0
    let stopped = false
    const loop = (async () => {
      for (let seq = 0; !stopped && seq < 10_000; seq++) {
        try {
          if (seq % 2 === 0) {
            await pub.publishAsync('plant/alarms', `a${round}-${seq}`, { qos: 1 })
            alarms.push(`a${round}-${seq}`)
          } else {
            const key = seq % KEYS
            await pub.publishAsync(`plant/state/${key}`, String(round * 100_000 + seq), { qos: 1, retain: true })
            retained.set(key, round * 100_000 + seq)
          }
        } catch {
          return
        }
        acks++
      }
    })()
    await waitFor(() => acks >= cutAfter, 60_000, `${cutAfter} acknowledgements (${where})`)
    process.kill(agent.pid, 'SIGKILL')
    await agent.exited
    await disk.cut()
    stopped = true
    pub.end(true)
    await withTimeout(loop, 30_000, 'the publisher to stop')
    await disk.mount()

    const again = await agentOnDisk(t, disk, config)
    // The session: present, with every acknowledged alarm in order (unacknowledged ones may follow).
    const back = mqtt.connect(again.mqttUrl, { clientId: 'hmi-1', clean: false, reconnectPeriod: 0 })
    back.on('error', () => undefined)
    const got: string[] = []
    back.on('message', (_topic, p: Buffer) => got.push(p.toString()))
    const connack = await withTimeout(
      new Promise<{ sessionPresent: boolean }>((r) => back.once('connect', r)),
      10_000,
      'reconnect',
    )
    assert.equal(connack.sessionPresent, true, `${where}: the session survived`)
    await waitFor(
      () => got.length >= alarms.length,
      20_000,
      `${alarms.length} queued alarms (got ${got.length}; ${where})`,
    ).catch(() => undefined)
    const thisRound = got.filter((g) => g.startsWith(`a${round}-`))
    assert.deepEqual(thisRound.slice(0, alarms.length), alarms, `${where}: queued alarms`)
    await back.endAsync()

    // Retained: each key holds its last acknowledged value or a newer one.
    const late = await client(t, again.mqttUrl, { clientId: `late-${round}` })
    const seen = new Map<number, number>()
    late.on('message', (topic, p: Buffer, packet) => {
      if (packet.retain) seen.set(Number(topic.split('/')[2]), Number(p.toString()))
    })
    await late.subscribeAsync('plant/state/#', { qos: 1 })
    await waitFor(() => [...retained.keys()].every((k) => seen.has(k)), 10_000, `retained values (${where})`).catch(
      () => undefined,
    )
    for (const [k, v] of retained) {
      assert.ok((seen.get(k) ?? -1) >= v, `${where}: retained plant/state/${k} is ${seen.get(k)}, acknowledged ${v}`)
    }
    await late.endAsync()
    checked += alarms.length + retained.size
    assert.equal((await again.stop()).code, 0)
  }
  t.diagnostic(`${CUTS} cuts, ${checked} acknowledged alarms and retained values checked`)
})
