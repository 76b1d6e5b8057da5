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
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { test } from 'node:test'
import mqtt from 'mqtt'
import { stringify } from 'yaml'
import { withTimeout } from '../../helpers/wait.js'

const REPO = resolve(import.meta.dirname, '../../..')
const MAIN = join(REPO, 'dist/agent/main.js')

function why(): string | false {
  if (!existsSync('/usr/bin/systemd-notify')) return '/usr/bin/systemd-notify is missing (apt-get install systemd)'
  if (spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status !== 0) return 'python3 is missing: it binds the fake notify socket'
  if (!existsSync(MAIN)) return 'dist/agent/main.js is missing: npm run build'
  const compiled = readdirSync(join(REPO, 'dist/agent'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js') && f !== 'sd-notify.js')
  const wired = compiled.some((f) => /createNotifier\s*\(/.test(readFileSync(join(REPO, 'dist/agent', f), 'utf8')))
  if (!wired) return 'the agent does not call createNotifier() yet (src/agent/main.ts: ready() after start, stopping() on SIGTERM)'
  return false
}
const skip = why()

const RECEIVER_PY = String.raw`
import array, json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"listening": sys.argv[1]}), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
    print(json.dumps({"t": time.time() * 1000, "msg": msg.decode("utf-8", "replace")}), flush=True)
`

async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  await new Promise<void>((r) => server.close(() => r()))
  return port
}

test('the agent sends READY=1 only after its listeners are up, pets the watchdog and sends STOPPING=1', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sd-notify-ready-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const sockPath = join(dir, 'notify.sock')
  writeFileSync(join(dir, 'receiver.py'), RECEIVER_PY)
  const receiver = spawn('python3', ['-u', join(dir, 'receiver.py'), sockPath], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => void (receiver.exitCode === null && receiver.kill('SIGKILL')))

  const datagrams: Array<Record<string, string>> = []
  const listeners = new Set<() => void>()
  let bound: () => void = () => {}
  const isBound = new Promise<void>((r) => (bound = r))
  createInterface({ input: receiver.stdout! }).on('line', (line) => {
    const obj = JSON.parse(line) as { listening?: string; msg?: string }
    if (obj.listening !== undefined) return bound()
    const fields = Object.fromEntries((obj.msg ?? '').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    if (fields.BARRIER === '1') return
    datagrams.push(fields)
    for (const l of listeners) l()
  })
  const datagram = (what: string, pred: (f: Record<string, string>) => boolean, ms: number): Promise<Record<string, string>> =>
    withTimeout(
      new Promise((resolveFields) => {
        const check = (): void => {
          const hit = datagrams.find(pred)
          if (hit) {
            listeners.delete(check)
            resolveFields(hit)
          }
        }
        listeners.add(check)
        check()
      }),
      ms,
      `${what} on the fake notify socket (got ${JSON.stringify(datagrams)})`,
    )
  await withTimeout(isBound, 5000, 'the fake notify socket to be bound')

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
  const agent = spawn(process.execPath, [MAIN, 'run', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] })
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
  const order = datagrams.map((f) => (f.READY ? 'READY' : f.STOPPING ? 'STOPPING' : null)).filter((x) => x !== null)
  assert.deepEqual(order, ['READY', 'STOPPING'])
})
