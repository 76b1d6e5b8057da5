// User name and password logins on the local broker, with real clients
// (mosquitto_pub/sub, mqtt.js, Python paho-mqtt), a password file written by
// Debian's mosquitto_passwd, per-listener anonymous policy, `edge-agent users`
// while the agent runs, and the failed-login limit.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { fileScope } from '../../helpers/scope.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { AGENT_MAIN, startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { client, refusedConnect, mosquittoClient } from '../../helpers/mqtt-clients.js'
import { nextMessage, waitFor, withTimeout } from '../../helpers/wait.js'

// Debian's python3 (python3-paho-mqtt), not whatever python3 comes first on PATH.
const PYTHON = process.env['EDGE_TEST_PYTHON'] ?? '/usr/bin/python3'
const scope = fileScope()
let agent: RunningAgent
let closedPort: number
let openPort: number
let passwd: string

/** Runs `edge-agent <args>` with `input` on stdin. */
async function cli(args: string[], input: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const proc = spawn(process.execPath, [AGENT_MAIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  proc.stdin.end(input)
  const [code] = (await withTimeout(once(proc, 'close'), 30_000, `edge-agent ${args.join(' ')}`)) as [number | null]
  return { code, stdout, stderr }
}

function mosquittoPasswd(args: string[]): void {
  const r = spawnSync('mosquitto_passwd', args, { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
}

/** Connects with Python paho-mqtt and prints the CONNACK return code. */
function paho(port: number, username: string | undefined, password: string | undefined): Promise<number> {
  const script = `
import sys, paho.mqtt.client as mqtt
done = []
def on_connect(c, userdata, flags, rc, *rest):
    done.append(int(getattr(rc, 'value', rc)))
    c.disconnect()
kw = {}
if hasattr(mqtt, 'CallbackAPIVersion'):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id='paho-auth', protocol=mqtt.MQTTv311)
else:
    c = mqtt.Client(client_id='paho-auth', protocol=mqtt.MQTTv311)
if sys.argv[2] != '-':
    c.username_pw_set(sys.argv[2], None if sys.argv[3] == '-' else sys.argv[3])
c.on_connect = on_connect
c.connect('127.0.0.1', int(sys.argv[1]), keepalive=30)
c.loop_start()
import time
for _ in range(200):
    if done: break
    time.sleep(0.05)
c.loop_stop()
print(done[0] if done else -1)
`
  return new Promise((resolve, reject) => {
    const proc = spawn(PYTHON, ['-c', script, String(port), username ?? '-', password ?? '-'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
    proc.stderr.setEncoding('utf8').on('data', (c: string) => (err += c))
    proc.once('close', (code) =>
      code === 0 ? resolve(Number(out.trim())) : reject(new Error(`paho exited ${code}: ${err}`)),
    )
  })
}

before(async () => {
  const dir = tmpDir(scope)
  passwd = join(dir, 'passwd')
  // Debian's mosquitto_passwd: $7$ (PBKDF2-SHA512) by default, $6$ with -H sha512.
  mosquittoPasswd(['-c', '-b', passwd, 'alice', 'alice-secret'])
  mosquittoPasswd(['-H', 'sha512', '-b', passwd, 'bob', 'bob:with colon'])
  agent = await startAgent(scope, {
    config: {
      broker: {
        listeners: [
          { protocol: 'mqtt', host: '127.0.0.1', port: 0, allowAnonymous: false },
          { protocol: 'mqtt', host: '127.0.0.1', port: 0, allowAnonymous: true },
        ],
        auth: { passwordFile: passwd, maxFailedLogins: 1000 },
      },
    },
  })
  const bound = (await agent.status())['broker']['listeners'] as { port: number }[]
  closedPort = bound[0]!.port
  openPort = bound[1]!.port
})

test("accepts mosquitto_passwd's $7$ and $6$ hashes from mosquitto_pub -u/-P", async () => {
  for (const [u, p] of [
    ['alice', 'alice-secret'],
    ['bob', 'bob:with colon'],
  ]) {
    const r = await mosquittoClient('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      String(closedPort),
      '-u',
      u!,
      '-P',
      p!,
      '-t',
      `auth/${u}`,
      '-m',
      'x',
      '-q',
      '1',
    ])
    assert.equal(r.code, 0, `${u}: ${r.stderr}`)
  }
})

test('a subscriber logged in with mosquitto_sub receives what a password user publishes', async (t) => {
  const sub = spawn('mosquitto_sub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(closedPort),
    '-u',
    'alice',
    '-P',
    'alice-secret',
    '-t',
    'auth/sub',
    '-C',
    '1',
    '-q',
    '1',
  ])
  t.after(() => sub.kill('SIGKILL'))
  let out = ''
  sub.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
  const exited = once(sub, 'close')
  const pub = await client(t, `mqtt://127.0.0.1:${closedPort}`, { username: 'bob', password: 'bob:with colon' })
  // mosquitto_sub has no "subscribed" signal: publish retained so it arrives whenever the SUBACK comes.
  await pub.publishAsync('auth/sub', 'hello', { qos: 1, retain: true })
  await withTimeout(exited, 15_000, 'mosquitto_sub to receive one message')
  assert.equal(out.trim(), 'hello')
  await pub.publishAsync('auth/sub', '', { qos: 1, retain: true })
})

test('refuses a bad password and an unknown user with CONNACK 4 (mqtt.js and mosquitto_pub)', async () => {
  const bad = await refusedConnect(`mqtt://127.0.0.1:${closedPort}`, { username: 'alice', password: 'wrong' })
  assert.equal(bad.code, 4)
  const unknown = await refusedConnect(`mqtt://127.0.0.1:${closedPort}`, {
    username: 'mallory',
    password: 'alice-secret',
  })
  assert.equal(unknown.code, 4)
  const r = await mosquittoClient('mosquitto_pub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(closedPort),
    '-u',
    'alice',
    '-P',
    'nope',
    '-t',
    'auth/x',
    '-m',
    'x',
  ])
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /not authori[sz]ed|bad user ?name or password/i)
})

test('anonymous clients: refused (CONNACK 5) where allowAnonymous is false, accepted where true', async (t) => {
  const refused = await refusedConnect(`mqtt://127.0.0.1:${closedPort}`)
  assert.equal(refused.code, 5)
  const ok = await client(t, `mqtt://127.0.0.1:${openPort}`)
  assert.equal(ok.connected, true)
  // a user name on the open listener is still checked once a password file exists
  const bad = await refusedConnect(`mqtt://127.0.0.1:${openPort}`, { username: 'alice', password: 'wrong' })
  assert.equal(bad.code, 4)
})

test('Python paho-mqtt: good password 0, bad password 4, unknown user 4, anonymous 5', async () => {
  assert.equal(await paho(closedPort, 'alice', 'alice-secret'), 0)
  assert.equal(await paho(closedPort, 'alice', 'wrong'), 4)
  assert.equal(await paho(closedPort, 'eve', 'x'), 4)
  assert.equal(await paho(closedPort, undefined, undefined), 5)
  assert.equal(await paho(openPort, undefined, undefined), 0)
})

test('`users add` while the agent runs applies without a restart; `users remove` too', async (t) => {
  const set = ['--set', `broker.auth.passwordFile=${passwd}`]
  const add = await cli(['users', 'add', 'carol', ...set], 'carol-secret-1\n')
  assert.equal(add.code, 0, add.stderr)
  const url = `mqtt://127.0.0.1:${closedPort}`
  const carol = await waitFor(
    async () => {
      try {
        return await client(t, url, { username: 'carol', password: 'carol-secret-1', clientId: `carol-${Date.now()}` })
      } catch {
        return undefined
      }
    },
    15_000,
    'carol to be able to log in',
    200,
  )
  assert.equal(carol.connected, true)
  const list = await cli(['users', 'list', '--json', ...set], '')
  const users = (JSON.parse(list.stdout) as { users: { username: string; hash: string }[] }).users
  assert.deepEqual(users.map((u) => u.username).sort(), ['alice', 'bob', 'carol'])
  assert.match(users.find((u) => u.username === 'bob')!.hash, /sha512 \(weak\)/)
  assert.match(users.find((u) => u.username === 'carol')!.hash, /pbkdf2-sha512/)

  const rm = await cli(['users', 'remove', 'carol', ...set], '')
  assert.equal(rm.code, 0, rm.stderr)
  await waitFor(
    async () =>
      (await refusedConnect(url, { username: 'carol', password: 'carol-secret-1' }).catch(() => ({ code: 0 }))).code ===
      4,
    15_000,
    'carol to be refused after removal',
    200,
  )
})

test('`users add` refuses an existing user, and a password on argv is not an option', async () => {
  const set = ['--set', `broker.auth.passwordFile=${passwd}`]
  const again = await cli(['users', 'add', 'alice', ...set], 'x\n')
  assert.equal(again.code, 1)
  assert.match(again.stderr, /exists/)
  const argv = await cli(['users', 'add', 'dave', '--password', 'x', ...set], '')
  assert.equal(argv.code, 64)
})

test('the log never contains a password', async () => {
  const text = JSON.stringify(agent.logs)
  for (const secret of ['alice-secret', 'bob:with colon', 'carol-secret-1', 'wrong'])
    assert.ok(!text.includes(secret), secret)
  assert.ok(agent.logs.some((l) => l.msg === 'login refused' && l['reason'] === 'badCredentials'))
})

test('failed logins per address are limited: past the limit even a good password is refused (CONNACK 5), counted', async (t) => {
  const dir = tmpDir(t)
  const file = join(dir, 'passwd')
  mosquittoPasswd(['-c', '-b', file, 'alice', 'alice-secret'])
  const a = await startAgent(t, {
    config: { broker: { auth: { passwordFile: file, maxFailedLogins: 3, failedLoginWindowSec: 3600 } } },
  })
  for (let i = 0; i < 3; i++)
    assert.equal((await refusedConnect(a.mqttUrl, { username: 'alice', password: `bad${i}` })).code, 4)
  assert.equal((await refusedConnect(a.mqttUrl, { username: 'alice', password: 'alice-secret' })).code, 5)
  const refused = (await a.status())['broker']['refused'] as Record<string, number>
  assert.equal(refused['badCredentials'], 3)
  assert.equal(refused['loginRateLimited'], 1)
  // an anonymous client from the same address is not affected (allowAnonymous defaults to true)
  const anon = await client(t, a.mqttUrl)
  const got = nextMessage(anon, 'rl/x')
  await anon.subscribeAsync('rl/x', { qos: 1 })
  await anon.publishAsync('rl/x', 'y', { qos: 1 })
  assert.equal((await got).payload.toString(), 'y')
})
