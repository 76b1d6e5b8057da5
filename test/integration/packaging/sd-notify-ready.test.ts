// The agent and systemd's notify protocol, end to end: the real dist/agent/main.js
// with NOTIFY_SOCKET pointing at a FAKE socket sends READY=1 only once its listeners
// are up (an MQTT connect made the moment READY arrives succeeds), pets the watchdog,
// and says STOPPING=1 on SIGTERM.
//
// Glossary
//   fake socket | an AF_UNIX SOCK_DGRAM socket bound by a small python3 process that
//               | prints each datagram as a JSON line; it plays PID 1. BARRIER=1
//               | datagrams (systemd-notify's own synchronisation) are ignored.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import mqtt from 'mqtt'
import { stringify } from 'yaml'
import { withTimeout } from '../../helpers/wait.js'
import { startFakeNotifySocket } from '../../helpers/fake-notify-socket.js'
import { freePort } from '../../helpers/mosquitto.js'

const REPO = resolve(import.meta.dirname, '../../..')
const MAIN = join(REPO, 'dist/agent/main.js')

function why(): string | false {
  if (!existsSync('/usr/bin/systemd-notify')) return '/usr/bin/systemd-notify is missing (apt-get install systemd)'
  if (spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status !== 0)
    return 'python3 is missing: it binds the fake notify socket'
  if (!existsSync(MAIN)) return 'dist/agent/main.js is missing: npm run build'
  const compiled = readdirSync(join(REPO, 'dist/agent'), { recursive: true, encoding: 'utf8' }).filter(
    (f) => f.endsWith('.js') && f !== 'sd-notify.js',
  )
  const wired = compiled.some((f) => /createNotifier\s*\(/.test(readFileSync(join(REPO, 'dist/agent', f), 'utf8')))
  if (!wired)
    return 'the agent does not call createNotifier() yet (src/agent/main.ts: ready() after start, stopping() on SIGTERM)'
  return false
}
const skip = why()

test(
  'the agent sends READY=1 only after its listeners are up, pets the watchdog and sends STOPPING=1',
  { skip },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sd-notify-ready-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const sock = await startFakeNotifySocket(t)
    const sockPath = sock.path
    const datagram = async (
      what: string,
      pred: (f: Record<string, string>) => boolean,
      ms: number,
    ): Promise<Record<string, string>> => (await sock.waitFor(what, (d) => pred(d.fields), ms)).fields

    const mqttPort = await freePort()
    const adminPort = await freePort()
    const configFile = join(dir, 'config.yaml')
    writeFileSync(
      configFile,
      stringify({
        site: { name: 'sd-notify', level: 2 },
        dataDir: join(dir, 'data'),
        log: { level: 'info', format: 'json' },
        admin: { host: '127.0.0.1', port: adminPort },
        broker: { listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: mqttPort }] },
      }),
    )
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: sockPath, WATCHDOG_USEC: '1000000' }
    for (const k of ['PATH', 'HOME', 'LANG']) if (process.env[k] !== undefined) env[k] = process.env[k]
    let output = ''
    const agent = spawn(process.execPath, [MAIN, 'run', '--config', configFile], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = once(agent, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    t.after(async () => {
      if (agent.exitCode === null && agent.signalCode === null) {
        agent.kill('SIGKILL')
        await exited
      }
    })
    agent.stdout.setEncoding('utf8').on('data', (c: string) => (output += c))
    agent.stderr.setEncoding('utf8').on('data', (c: string) => (output += c))

    const ready = await datagram('READY=1', (f) => f.READY === '1', 30_000)
    // The moment READY arrives, the MQTT listener must already accept connections.
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { reconnectPeriod: 0, connectTimeout: 5000 })
    await client.endAsync()
    assert.equal(ready.MAINPID, String(agent.pid), 'READY names the node process as the main PID')
    const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`)
    assert.equal(health.status, 200)

    await datagram('WATCHDOG=1', (f) => f.WATCHDOG === '1', 10_000)

    agent.kill('SIGTERM')
    await datagram('STOPPING=1', (f) => f.STOPPING === '1', 15_000)
    const [code] = await withTimeout(exited, 30_000, 'the agent to exit after SIGTERM')
    assert.equal(code, 0, output)
    const order = sock.received
      .map(({ fields: f }) => (f.READY ? 'READY' : f.STOPPING ? 'STOPPING' : null))
      .filter((x) => x !== null)
    assert.deepEqual(order, ['READY', 'STOPPING'])
  },
)
