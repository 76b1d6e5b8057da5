import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { loadConfig } from '../../../src/agent/config/load.js'
import { ConfigError } from '../../../src/agent/config/errors.js'
import { EXAMPLE_CONFIG } from '../../../src/agent/config/example.js'
import { AgentConfigSchema } from '../../../src/agent/config/schema.js'
import { redactConfig } from '../../../src/agent/config/redact.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

function writeConfig(dir: string, text: string): string {
  const file = join(dir, 'site.yaml')
  writeFileSync(file, text)
  return file
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    return err
  }
  assert.fail('expected a ConfigError')
}

test('runs on built-in defaults without a file: MQTT on 0.0.0.0:1883, state in ./data', () => {
  const { config, file } = loadConfig({ env: {}, cwd: '/srv/x' })
  assert.equal(file, undefined)
  assert.deepEqual(config.broker.listeners, [
    {
      protocol: 'mqtt',
      host: '0.0.0.0',
      port: 1883,
      path: '/mqtt',
      allowAnonymous: true,
      useIdentityAsUsername: false,
      mqttVersions: ['3.1', '3.1.1', '5'],
    },
  ])
  assert.equal(config.dataDir, '/srv/x/data')
  assert.equal(config.admin.host, '127.0.0.1')
  assert.equal(config.admin.port, 9180)
  assert.equal(config.broker.limits.maxPayloadBytes, 262144)
  assert.equal(config.log.level, 'info')
})

test('defaults the state directory to $STATE_DIRECTORY (first entry) under systemd', () => {
  const { config } = loadConfig({ env: { STATE_DIRECTORY: '/var/lib/edge-agent:/var/lib/other' }, cwd: '/' })
  assert.equal(config.dataDir, '/var/lib/edge-agent')
})

test("accepts the issue's example config verbatim (public contract)", (t) => {
  const dir = tmpDir(t)
  const file = writeConfig(
    dir,
    `site: { name: plant-a-cell-2, level: 2 }   # level = Purdue level of this segment
dataDir: /var/lib/edge-agent               # default: $STATE_DIRECTORY, else ./data
log: { level: info }
admin: { host: 127.0.0.1, port: 9180 }     # /healthz /status /metrics
broker:
  listeners:
    - { protocol: mqtt, host: 0.0.0.0, port: 1883 }
    - { protocol: ws, host: 0.0.0.0, port: 8080 }
  limits: { maxConnections: 10000, maxPayloadBytes: 262144 }
upstreams:                                 # used by the bridge issue
  - name: site-broker
    url: mqtt://10.0.3.10:1883
    rules:                                 # Mosquitto's bridge semantics:
      - { topic: "devices/+/telemetry", direction: out, qos: 1, localPrefix: "", remotePrefix: "plant-a/cell-2/" }
      - { topic: "devices/+/cmd", direction: in, qos: 1, localPrefix: "", remotePrefix: "plant-a/cell-2/" }
`,
  )
  const { config } = loadConfig({ file, env: {}, cwd: '/' })
  assert.equal(config.site.name, 'plant-a-cell-2')
  assert.equal(config.broker.listeners[1]?.protocol, 'ws')
  assert.equal(config.upstreams[0]?.rules[1]?.direction, 'in')
  assert.equal(config.broker.limits.keepaliveMaxSec, 1200, 'unset limits take their defaults')
})

test('a wrong type names the file, line, key path and what was expected', (t) => {
  const file = writeConfig(tmpDir(t), 'site:\n  name: cell\n  level: "two"\n')
  const err = configError(() => loadConfig({ file, env: {}, cwd: '/' }))
  assert.equal(err.code, 'EDGE_ERR_CONFIG_INVALID')
  assert.equal(err.issues.length, 1)
  assert.equal(err.issues[0]?.path, 'site.level')
  assert.equal(err.issues[0]?.source, `${file}:3:10`)
  assert.match(err.issues[0]?.message ?? '', /must be an integer \(got "two"\)/)
  assert.match(err.message, new RegExp(`${file}:3:10: site\\.level: must be an integer`))
})

test('an unknown key is an error that suggests the key meant', (t) => {
  const file = writeConfig(tmpDir(t), 'broker:\n  listners: []\n')
  const err = configError(() => loadConfig({ file, env: {}, cwd: '/' }))
  assert.equal(err.issues[0]?.path, 'broker.listners')
  assert.equal(err.issues[0]?.source, `${file}:2:3`)
  assert.match(
    err.issues[0]?.message ?? '',
    /unknown key \(did you mean 'listeners'\?\); expected one of: listeners, limits/,
  )
})

test('a port out of range is refused with the limit', (t) => {
  const file = writeConfig(tmpDir(t), 'broker:\n  listeners:\n    - { protocol: mqtt, port: 70000 }\n')
  const err = configError(() => loadConfig({ file, env: {}, cwd: '/' }))
  assert.equal(err.issues[0]?.path, 'broker.listeners[0].port')
  assert.match(err.issues[0]?.message ?? '', /must be <= 65535 \(got 70000\)/)
})

test('reports every problem at once', (t) => {
  const file = writeConfig(tmpDir(t), 'site: { level: 9 }\nlog: { level: loud }\nbogus: 1\n')
  const err = configError(() => loadConfig({ file, env: {}, cwd: '/' }))
  assert.deepEqual(err.issues.map((i) => i.path).sort(), ['bogus', 'log.level', 'site.level'])
  assert.match(err.issues.find((i) => i.path === 'log.level')?.message ?? '', /must be one of "fatal", "error"/)
})

test('an invalid protocol lists the allowed ones', () => {
  const err = configError(() =>
    loadConfig({ env: {}, sets: ['broker.listeners[0]={protocol: quic, port: 1}'], cwd: '/' }),
  )
  assert.equal(err.issues[0]?.path, 'broker.listeners[0].protocol')
  assert.match(err.issues[0]?.message ?? '', /must be one of "mqtt", "ws", "mqtts"/)
})

test('YAML syntax errors name the file and line', (t) => {
  const file = writeConfig(tmpDir(t), 'site:\n  name: [unclosed\n')
  const err = configError(() => loadConfig({ file, env: {}, cwd: '/' }))
  assert.equal(err.code, 'EDGE_ERR_CONFIG_SYNTAX')
  assert.match(err.issues[0]?.source ?? '', new RegExp(`^${file}:\\d+:\\d+$`))
})

test('a missing file is a config error, not a crash', () => {
  const err = configError(() => loadConfig({ file: '/nonexistent/site.yaml', env: {}, cwd: '/' }))
  assert.equal(err.code, 'EDGE_ERR_CONFIG_NOT_FOUND')
  assert.match(err.message, /\/nonexistent\/site\.yaml: file not found/)
})

test('precedence: defaults < file < environment < --set', (t) => {
  const file = writeConfig(
    tmpDir(t),
    'log: { level: warn }\nadmin: { port: 9300 }\nbroker: { limits: { maxConnections: 50 } }\n',
  )
  const env = { EDGE_AGENT_ADMIN__PORT: '9400', EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS: '60' }
  const { config } = loadConfig({ file, env, sets: ['broker.limits.maxConnections=70'], cwd: '/' })
  assert.equal(config.log.level, 'warn', 'file over default')
  assert.equal(config.admin.port, 9400, 'env over file')
  assert.equal(config.broker.limits.maxConnections, 70, 'flag over env')
  assert.equal(config.broker.limits.maxPayloadBytes, 262144, 'default where nobody set it')
})

test('--set reaches into arrays and keeps strings as strings', () => {
  const { config } = loadConfig({
    env: {},
    sets: ['broker.listeners[0].port=1884', 'broker.listeners.0.host=127.0.0.1', 'site.name=0123'],
    cwd: '/',
  })
  assert.equal(config.broker.listeners[0]?.port, 1884)
  assert.equal(config.broker.listeners[0]?.host, '127.0.0.1')
  assert.equal(config.site.name, '0123')
})

test('an error in a value set by environment names the variable', () => {
  const err = configError(() => loadConfig({ env: { EDGE_AGENT_ADMIN__PORT: 'abc' }, cwd: '/' }))
  assert.equal(err.issues[0]?.source, 'env EDGE_AGENT_ADMIN__PORT')
  assert.equal(err.issues[0]?.path, 'admin.port')
  assert.match(err.issues[0]?.message ?? '', /must be an integer \(got "abc"\)/)
})

test('an environment variable naming no key is an error, not ignored', () => {
  const err = configError(() => loadConfig({ env: { EDGE_AGENT_BROKER__LIMTS__X: '1' }, cwd: '/' }))
  assert.match(err.issues[0]?.message ?? '', /no config key matches 'LIMTS' under 'broker'/)
})

test('the admin endpoint may only bind to loopback', () => {
  const err = configError(() => loadConfig({ env: {}, sets: ['admin.host=0.0.0.0'], cwd: '/' }))
  assert.equal(err.issues[0]?.path, 'admin.host')
  assert.equal(err.issues[0]?.source, '--set admin.host')
  assert.match(err.issues[0]?.message ?? '', /loopback/)
})

test('two listeners on one address are refused', () => {
  const err = configError(() =>
    loadConfig({
      env: {},
      sets: ['broker.listeners=[{protocol: mqtt, port: 1883}, {protocol: ws, port: 1883}]'],
      cwd: '/',
    }),
  )
  assert.equal(err.issues[0]?.path, 'broker.listeners[1].port')
  assert.match(err.issues[0]?.message ?? '', /same address as broker\.listeners\[0\]/)
})

test('invalid bridge topic filters are refused with the spec rule', () => {
  const err = configError(() =>
    loadConfig({
      env: {},
      sets: ['upstreams=[{name: up, url: "mqtt://127.0.0.1:1", rules: [{topic: "a/#/b", direction: out}]}]'],
      cwd: '/',
    }),
  )
  assert.equal(err.issues[0]?.path, 'upstreams[0].rules[0].topic')
  assert.match(err.issues[0]?.message ?? '', /MQTT-4\.7\.1-2/)
})

test('a relative dataDir in a file is relative to the file, not the cwd', (t) => {
  const dir = tmpDir(t)
  const file = writeConfig(dir, 'dataDir: state\n')
  assert.equal(loadConfig({ file, env: {}, cwd: '/' }).config.dataDir, join(dir, 'state'))
})

test('the loaded config is deeply frozen', () => {
  const { config } = loadConfig({ env: {}, cwd: '/' })
  assert.ok(Object.isFrozen(config.broker.limits))
  assert.throws(() => {
    ;(config.broker.limits as { maxConnections: number }).maxConnections = 1
  }, TypeError)
})

test('the example written by `config init` is valid and documents every key of the schema', (t) => {
  const file = writeConfig(tmpDir(t), EXAMPLE_CONFIG)
  loadConfig({ file, env: {}, cwd: '/' })
  const keys = new Set<string>()
  const walk = (node: { properties?: Record<string, unknown>; items?: unknown }): void => {
    for (const [k, v] of Object.entries(node.properties ?? {})) {
      keys.add(k)
      walk(v as typeof node)
    }
    if (node.items) walk(node.items)
  }
  walk(AgentConfigSchema)
  const undocumented = [...keys].filter((k) => !new RegExp(`\\b${k}:`).test(EXAMPLE_CONFIG))
  assert.deepEqual(undocumented, [])
  assert.ok(parse(EXAMPLE_CONFIG))
})

test('redaction hides passwords and URL credentials', () => {
  const shown = redactConfig({ upstreams: [{ url: 'mqtt://user:s3cret@host:1883', password: 'x' }] }) as {
    upstreams: { url: string; password: string }[]
  }
  assert.equal(shown.upstreams[0]?.url, 'mqtt://user:[redacted]@host:1883')
  assert.equal(shown.upstreams[0]?.password, '[redacted]')
})
