// Node-RED in the agent: what it costs. `npm run bench -- node-red`.
//
// Rows: the agent without Node-RED; with it enabled and no flows; with a flow
// normalising every device message (edge in → function → edge out); the same
// flow with the standard mqtt in / mqtt out nodes over the loopback listener.
// Columns: idle RSS (settled, after start and after the flow is deployed), and
// agent CPU time per device message while a device publishes N QoS 1 messages
// and a subscriber receives what the flow publishes (or the raw messages, when
// there is no flow). No upstream: the buffer is not in the path, so the
// difference between rows is Node-RED's. One run, on whatever machine this is.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { deployedEnv, launchAgent } from './lib/agent.js'
import { freePort } from './lib/ports.js'
import { readProcMemory, sampleUntilStable } from './lib/rss.js'
import type { Row } from './lib/table.js'
import { fmt } from './lib/table.js'
import { waitFor } from './lib/wait.js'

const N = Number(process.env['EDGE_BENCH_NODERED_MESSAGES'] ?? 3000)
const NORMALISE = `msg.topic = 'site/' + msg.topic.split('/')[1] + '/temperature'
msg.payload = { celsius: Number(msg.payload) / 10 }
return msg`

type Mode = 'off' | 'idle' | 'edge' | 'mqtt'

function flows(mode: Mode, port: number): unknown[] {
  if (mode === 'edge') {
    return [
      { id: 't', type: 'tab' },
      { id: 'i', type: 'edge in', z: 't', topic: 'devices/+/raw', datatype: 'utf8', wires: [['f']] },
      { id: 'f', type: 'function', z: 't', func: NORMALISE, outputs: 1, wires: [['o']] },
      { id: 'o', type: 'edge out', z: 't', topic: '', qos: '1', retain: 'false', wires: [] },
    ]
  }
  if (mode === 'mqtt') {
    return [
      { id: 't', type: 'tab' },
      {
        id: 'b',
        type: 'mqtt-broker',
        broker: '127.0.0.1',
        port: String(port),
        clientid: 'bench-nr',
        autoConnect: true,
        protocolVersion: '4',
        keepalive: '60',
        cleansession: true,
      },
      {
        id: 'i',
        type: 'mqtt in',
        z: 't',
        topic: 'devices/+/raw',
        qos: '1',
        datatype: 'utf8',
        broker: 'b',
        inputs: 0,
        wires: [['f']],
      },
      { id: 'f', type: 'function', z: 't', func: NORMALISE, outputs: 1, wires: [['o']] },
      { id: 'o', type: 'mqtt out', z: 't', topic: '', qos: '1', retain: 'false', broker: 'b', wires: [] },
    ]
  }
  return []
}

function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime
  return (ticks * 1000) / 100 // USER_HZ = 100 on Linux
}

async function one(mode: Mode): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bench-nodered-'))
  const [port, adminPort] = [await freePort(), await freePort()]
  const configFile = join(dir, 'config.yaml')
  writeFileSync(
    configFile,
    [
      `dataDir: ${JSON.stringify(join(dir, 'data'))}`,
      'log: { level: warn }',
      `admin: { host: 127.0.0.1, port: ${adminPort} }`,
      `broker: { listeners: [{ protocol: mqtt, host: 127.0.0.1, port: ${port} }] }`,
      `nodeRed: { enabled: ${mode !== 'off'}, host: 127.0.0.1, port: 0, maxPublishRatePerSec: 1000000 }`,
      '',
    ].join('\n'),
  )
  const agent = await launchAgent({ configFile, adminPort, dir, env: deployedEnv() })
  try {
    const idle = await sampleUntilStable(agent.pid, { timeoutMs: 30_000 })
    let flowRss = idle.rssKb
    const outTopic = mode === 'edge' || mode === 'mqtt' ? 'site/+/temperature' : 'devices/+/raw'
    const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'bench-sub' })
    await sub.subscribeAsync(outTopic, { qos: 1 })
    let got = 0
    sub.on('message', () => got++)
    const dev = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'bench-dev' })
    if (mode === 'edge' || mode === 'mqtt') {
      const ep = JSON.parse(readFileSync(join(dir, 'data', 'node-red', 'cli.json'), 'utf8')) as {
        url: string
        token: string
      }
      const res = await fetch(new URL('/flows', ep.url), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${ep.token}`,
          'content-type': 'application/json',
          'Node-RED-Deployment-Type': 'full',
        },
        body: JSON.stringify(flows(mode, port)),
      })
      if (!res.ok) throw new Error(`deploy: HTTP ${res.status}`)
      // Warm up until the flow answers (the mqtt nodes connect on their own schedule).
      await waitFor(
        async () => {
          await dev.publishAsync('devices/w/raw', '1', { qos: 1 })
          return got > 0
        },
        { what: 'the flow to answer', timeoutMs: 60_000, intervalMs: 500 },
      )
      flowRss = (await sampleUntilStable(agent.pid, { timeoutMs: 30_000 })).rssKb
    }
    got = 0
    const c0 = cpuMs(agent.pid)
    const t0 = performance.now()
    const window = 50
    for (let i = 0; i < N; i += window) {
      await Promise.all(
        Array.from({ length: Math.min(window, N - i) }, (_, k) =>
          dev.publishAsync('devices/b/raw', String(i + k), { qos: 1 }),
        ),
      )
    }
    await waitFor(() => got >= N, { what: `${N} messages at the subscriber`, timeoutMs: 120_000, intervalMs: 20 })
    const wallMs = performance.now() - t0
    const cpu = cpuMs(agent.pid) - c0
    const rssAfter = readProcMemory(agent.pid).rssKb
    await dev.endAsync()
    await sub.endAsync()
    return {
      agent: {
        off: 'Node-RED disabled',
        idle: 'Node-RED enabled, no flows',
        edge: 'flow with edge in/out',
        mqtt: 'flow with mqtt in/out (loopback)',
      }[mode],
      'idle RSS MiB': fmt(idle.rssKb / 1024),
      'RSS with flow MiB': fmt(flowRss / 1024),
      'RSS after load MiB': fmt(rssAfter / 1024),
      'CPU µs/msg': fmt((cpu * 1000) / N, 0),
      'msg/s': fmt((N * 1000) / wallMs, 0),
    }
  } finally {
    await agent.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function runNodeRedBench(): Promise<Row[]> {
  const rows: Row[] = []
  for (const mode of ['off', 'idle', 'edge', 'mqtt'] as const) rows.push(await one(mode))
  return rows
}
