// Live reload: `edge-agent reload` (POST /reload) and SIGHUP apply an edited
// config to the running agent while a device stays connected and publishing;
// an invalid config changes nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { parse, stringify } from 'yaml'
import { startAgent, runCli } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { nextMessage, waitFor } from '../../helpers/wait.js'
import { mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'

const missing = mosquittoMissing()
const FAST_RECONNECT = { minMs: 200, maxMs: 1000, resetAfterMs: 2000, probeIntervalMs: 200 }

interface Rule {
  topic: string
  direction: string
  qos?: number
}

function editRules(file: string, edit: (rules: Rule[]) => void): void {
  const config = parse(readFileSync(file, 'utf8')) as { upstreams: { rules: Rule[] }[] }
  edit(config.upstreams[0]?.rules as Rule[])
  writeFileSync(file, stringify(config))
}

test(
  'reload and SIGHUP add bridge rules while a device keeps publishing QoS 1; an invalid config changes nothing',
  { skip: missing, timeout: 120_000 },
  async (t) => {
    const upstream = await startMosquitto(t)
    const agent = await startAgent(t, {
      config: {
        upstreams: [
          {
            name: 'site',
            url: upstream.url,
            keepaliveSec: 5,
            reconnect: FAST_RECONNECT,
            rules: [{ topic: 'a/#', direction: 'out', qos: 1 }],
          },
        ],
      },
    })
    await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'upstream connected')
    const observer = await client(t, upstream.url, { protocolVersion: 5, clientId: 'observer' })
    await observer.subscribeAsync('#', { qos: 1 })
    const seen = new Set<string>()
    observer.on('message', (topic, payload) => void seen.add(`${topic}=${payload.toString()}`))

    const device = await client(t, agent.mqttUrl, { clientId: 'dev-reload', reconnectPeriod: 0 })
    let closed = 0
    device.on('close', () => void closed++)

    // A device publishing QoS 1 all along, acknowledged message by message.
    const total = 200
    let acked = 0
    let stop = false
    const publishing = (async () => {
      for (let i = 0; i < total && !stop; i++) {
        await device.publishAsync(`a/${i}`, String(i), { qos: 1 })
        acked++
      }
    })()

    await waitFor(() => acked >= 20, 20_000, 'the device publishing')
    editRules(agent.configFile, (rules) => rules.push({ topic: 'b/#', direction: 'out', qos: 1 }))
    const r = await runCli(['reload', '--config', agent.configFile, '--url', agent.adminUrl])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /applied: upstreams\.site/)
    const b = nextMessage(observer, 'b/1', 20_000)
    await device.publishAsync('b/1', 'new rule', { qos: 1 })
    assert.equal((await b).payload.toString(), 'new rule')

    // An invalid config: refused, exit 78, the running rules stay.
    const good = readFileSync(agent.configFile, 'utf8')
    editRules(agent.configFile, (rules) => rules.push({ topic: 'c/#', direction: 'sideways' }))
    const bad = readFileSync(agent.configFile, 'utf8')
    const refused = await runCli(['reload', '--config', agent.configFile, '--url', agent.adminUrl])
    assert.equal(refused.code, 78, refused.stdout + refused.stderr)
    assert.match(refused.stderr, /upstreams\[0\]\.rules\[2\]\.direction: must be one of/)
    assert.match(refused.stderr, /the running agent keeps its config/)
    // The agent checks too, whoever asks (POST /reload, SIGHUP).
    const res = await fetch(new URL('/reload', agent.adminUrl), { method: 'POST' })
    assert.equal(res.status, 422)
    const body = (await res.json()) as { ok: boolean; issues: { path: string }[] }
    assert.equal(body.ok, false)
    assert.equal(body.issues[0]?.path, 'upstreams[0].rules[2].direction')
    const refusedLog = agent.waitForLog(
      (l) => l.msg.startsWith('reload refused'),
      20_000,
      'reload refused after SIGHUP',
      false,
    )
    process.kill(agent.pid, 'SIGHUP')
    await refusedLog
    assert.equal(readFileSync(agent.configFile, 'utf8'), bad, 'reload never writes the file')
    const b2 = nextMessage(observer, 'b/2', 20_000)
    await device.publishAsync('b/2', 'still', { qos: 1 })
    await b2

    // SIGHUP (systemctl reload) does the same.
    writeFileSync(agent.configFile, good)
    editRules(agent.configFile, (rules) => rules.push({ topic: 'c/#', direction: 'out', qos: 1 }))
    const reloaded = agent.waitForLog((l) => l.msg === 'config reloaded', 20_000, 'config reloaded after SIGHUP', false)
    process.kill(agent.pid, 'SIGHUP')
    await reloaded
    const c = nextMessage(observer, 'c/1', 20_000)
    await device.publishAsync('c/1', 'by sighup', { qos: 1 })
    await c

    stop = acked >= total
    await publishing
    // Every acknowledged message reached the upstream: nothing lost across two bridge swaps.
    await waitFor(
      () => Array.from({ length: acked }, (_, i) => `a/${i}=${i}`).every((k) => seen.has(k)),
      30_000,
      `all ${acked} messages upstream`,
    )
    assert.equal(closed, 0, 'the device connection never dropped')
    assert.ok(
      agent.logs.every((l) => l.msg !== 'agent stopping'),
      'the agent never stopped',
    )
  },
)

test('reload reports what needs a restart and applies the rest', { timeout: 60_000 }, async (t) => {
  const agent = await startAgent(t)
  const config = parse(readFileSync(agent.configFile, 'utf8')) as Record<string, any>
  config['broker'].listeners[0].port = 1
  config['log'].level = 'warn'
  config['broker'].limits = { keepaliveMaxSec: 60, maxPayloadBytes: 1000 }
  writeFileSync(agent.configFile, stringify(config))
  const r = await runCli(['reload', '--json', '--config', agent.configFile, '--url', agent.adminUrl])
  assert.equal(r.code, 0, r.stderr)
  const body = JSON.parse(r.stdout) as { applied: string[]; needsRestart: string[] }
  assert.deepEqual(body.applied.sort(), ['broker.limits.keepaliveMaxSec', 'log.level'])
  assert.deepEqual(body.needsRestart.sort(), ['broker.limits.maxPayloadBytes', 'broker.listeners'])
  assert.ok(agent.logs.some((l) => l.msg === 'config changes that need a restart'))
  // The device listener did not move.
  const status = await agent.status()
  assert.equal(status['broker'].listeners[0].port, agent.mqttPort)
})
