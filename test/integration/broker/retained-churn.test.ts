// Subscribers that leave during their retained replay: aedes keeps streaming
// the replay to the closed client. The broker must skip those messages, not
// build, write and fail each one while holding the closed client and its
// socket (the fuzz soak's RSS growth). The broker's delivered counter shows
// which: it counts every message authorized for a client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect } from 'node:net'
import { once } from 'node:events'
import { startAgent } from '../../helpers/agent-process.js'
import { client, connectPacket, mqttString, packet } from '../../helpers/mqtt-clients.js'
import { collectMessages, withTimeout } from '../../helpers/wait.js'

const RETAINED = 1500
const LEAVERS = 30

/** CONNECT, SUBSCRIBE rc/# at QoS 1, wait for the CONNACK and SUBACK, then vanish. */
async function subscribeAndLeave(port: number, n: number): Promise<void> {
  const s = netConnect({ host: '127.0.0.1', port })
  await once(s, 'connect')
  const sub = packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString('rc/#'), Buffer.from([1])]))
  s.write(Buffer.concat([connectPacket({ clientId: `leaver-${n}` }), sub]))
  let got = 0
  // CONNACK (4 bytes) + SUBACK (5 bytes): the replay has begun
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      s.on('data', (d: Buffer) => {
        got += d.length
        if (got >= 9) resolve()
      })
      s.once('close', () => reject(new Error(`leaver ${n}: closed after ${got} bytes`)))
    }),
    20_000,
    `leaver ${n}: CONNACK and SUBACK`,
  )
  s.destroy()
}

test('a subscriber that leaves during its retained replay gets no more deliveries', { timeout: 180_000 }, async (t) => {
  const agent = await startAgent(t)
  const pub = await client(t, agent.mqttUrl)
  const payload = Buffer.alloc(512, 0x61)
  for (let i = 0; i < RETAINED; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, RETAINED - i) }, (_, k) =>
        pub.publishAsync(`rc/${i + k}`, payload, { qos: 1, retain: true }),
      ),
    )
  }
  for (let n = 0; n < LEAVERS; n++) await subscribeAndLeave(agent.mqttPort, n)

  // A subscriber that stays gets every retained message, while the leavers'
  // replays, started before it, run alongside.
  const stays = await client(t, agent.mqttUrl)
  const all = collectMessages(stays, RETAINED, (topic) => topic.startsWith('rc/'), 90_000)
  await stays.subscribeAsync('rc/#', { qos: 1 })
  assert.equal((await all).length, RETAINED)

  const broker = (await agent.status())['broker'] as { messagesDelivered: number; clients: number }
  // Without the skip each leaver's replay is delivered in full (about
  // LEAVERS * RETAINED in all by now); with it a leaver gets only what was
  // sent before its close was seen.
  const bound = RETAINED + (LEAVERS * RETAINED) / 4
  assert.ok(
    broker.messagesDelivered < bound,
    `delivered ${broker.messagesDelivered} (bound ${bound}): deliveries went on to clients that had left`,
  )
  assert.equal(broker.clients, 2, 'only the publisher and the subscriber that stayed are connected')
})
