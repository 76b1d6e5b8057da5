// Start and stop as systemd does it: SIGTERM under traffic exits 0 quickly
// and quietly; a port already taken is a clear runtime failure.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { startAgent, runCli } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { withTimeout } from '../../helpers/wait.js'

test('SIGTERM during traffic: exits 0 within 5 s with nothing logged at error level', async (t) => {
  const agent = await startAgent(t)
  const subs = await Promise.all([1, 2, 3].map((i) => client(t, agent.mqttUrl, { clientId: `sub-${i}` })))
  for (const s of subs) await s.subscribeAsync('load/#', { qos: 1 })
  const pubs = await Promise.all([1, 2, 3, 4].map((i) => client(t, agent.mqttUrl, { clientId: `pub-${i}` })))
  let delivered = 0
  subs[0]?.on('message', () => delivered++)
  // Publishers keep sending QoS 0 and 1 until the broker goes away.
  let running = true
  const loops = pubs.map(async (p, i) => {
    for (let n = 0; running && n < 1_000_000; n++) {
      try {
        await p.publishAsync(`load/${i}`, Buffer.alloc(200), { qos: (n % 2) as 0 | 1 })
      } catch {
        return
      }
    }
  })
  await withTimeout(
    new Promise<void>((resolve) => {
      const check = () => (delivered >= 500 ? resolve() : setImmediate(check))
      check()
    }),
    10_000,
    'traffic to be flowing',
  )
  const t0 = Date.now()
  const { code, signal } = await agent.stop('SIGTERM', 10_000)
  const elapsed = Date.now() - t0
  // A publish in flight when the broker went away never settles with
  // reconnect off: stop the loops without waiting for them.
  running = false
  void Promise.allSettled(loops)
  assert.equal(signal, null)
  assert.equal(code, 0)
  assert.ok(elapsed < 5_000, `stopped in ${elapsed} ms`)
  const errors = agent.logs.filter((l) => l.level >= 50)
  assert.deepEqual(errors, [], 'no error or fatal log lines')
  assert.ok(agent.logs.some((l) => l.msg === 'agent stopped'))
})

test('SIGINT stops it the same way', async (t) => {
  const agent = await startAgent(t)
  const { code } = await agent.stop('SIGINT')
  assert.equal(code, 0)
})

test('a listener port already in use fails the start with exit 1 and a clear message', async (t) => {
  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.after(() => blocker.close())
  const port = (blocker.address() as { port: number }).port
  const dir = tmpDir(t)
  const r = await runCli([
    'run',
    '--set',
    `broker.listeners[0].host=127.0.0.1`,
    '--set',
    `broker.listeners[0].port=${port}`,
    '--set',
    'admin.port=0',
    '--set',
    `dataDir=${dir}`,
    '--set',
    'log.format=json',
  ])
  assert.equal(r.code, 1)
  const fatal = r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { level: number; msg: string; err?: { code?: string; message?: string } })
    .find((l) => l.level === 60)
  assert.equal(fatal?.msg, 'agent failed to start')
  assert.equal(fatal?.err?.code, 'EDGE_ERR_BROKER_LISTEN_FAILED')
  assert.match(fatal?.err?.message ?? '', new RegExp(`cannot listen on mqtt://127\\.0\\.0\\.1:${port}: .*EADDRINUSE`))
})
