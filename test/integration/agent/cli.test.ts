// The command line as an operator meets it: help, exit codes, config commands.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

test('--help teaches: commands, examples and exit codes', async () => {
  const r = await runCli(['--help'])
  assert.equal(r.code, 0)
  for (const word of ['run', 'config', 'status', 'Examples:', 'Exit codes:', '78'])
    assert.ok(r.stdout.includes(word), `help mentions ${word}`)
  const run = await runCli(['run', '--help'])
  assert.equal(run.code, 0)
  assert.match(run.stdout, /--set <key=value>/)
  assert.match(run.stdout, /EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS/)
})

test('--version prints the package version', async () => {
  const r = await runCli(['--version'])
  assert.equal(r.code, 0)
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
  assert.equal(r.stdout.trim(), pkg.version)
})

test('a usage error exits 64 and says what was wrong', async () => {
  const r = await runCli(['run', '--no-such-flag'])
  assert.equal(r.code, 64)
  assert.match(r.stderr, /unknown option '--no-such-flag'/)
  const none = await runCli([])
  assert.equal(none.code, 64)
  assert.match(none.stderr, /Usage: edge-agent/)
})

test('run with an invalid config exits 78 before touching state, naming file and key path', async (t) => {
  const dir = tmpDir(t)
  const file = join(dir, 'site.yaml')
  writeFileSync(
    file,
    `dataDir: ${join(dir, 'state')}\nbroker:\n  listeners:\n    - { protocol: mqtt, port: 99999 }\n  limts: {}\n`,
  )
  const r = await runCli(['run', '--config', file])
  assert.equal(r.code, 78)
  assert.match(r.stderr, new RegExp(`${file}:4:31: broker\\.listeners\\[0\\]\\.port: must be <= 65535 \\(got 99999\\)`))
  assert.match(r.stderr, /broker\.limts: unknown key \(did you mean 'limits'\?\)/)
  assert.throws(() => readFileSync(join(dir, 'state')), /ENOENT/, 'the state directory was not created')
})

test('config validate: exit 0 when valid, 78 with --json issues when not', async (t) => {
  const dir = tmpDir(t)
  const good = join(dir, 'good.yaml')
  writeFileSync(good, 'site: { name: cell-1, level: 2 }\n')
  const ok = await runCli(['config', 'validate', '--config', good])
  assert.equal(ok.code, 0)
  assert.match(ok.stdout, /config ok/)

  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'site: { name: cell-1, level: "x" }\n')
  const r = await runCli(['config', 'validate', '--config', bad, '--json'])
  assert.equal(r.code, 78)
  const body = JSON.parse(r.stdout) as { valid: boolean; issues: { path: string; source: string }[] }
  assert.equal(body.valid, false)
  assert.equal(body.issues[0]?.path, 'site.level')
  assert.match(body.issues[0]?.source ?? '', /bad\.yaml:1:/)
})

test('config validate reads $EDGE_AGENT_CONFIG and env overrides', async (t) => {
  const file = join(tmpDir(t), 'site.yaml')
  writeFileSync(file, 'log: { level: info }\n')
  const r = await runCli(['config', 'validate'], { env: { EDGE_AGENT_CONFIG: file, EDGE_AGENT_LOG__LEVEL: 'chatty' } })
  assert.equal(r.code, 78)
  assert.match(r.stderr, /env EDGE_AGENT_LOG__LEVEL: log\.level: must be one of/)
})

test('config show prints the effective config with defaults and redacted secrets', async (t) => {
  const file = join(tmpDir(t), 'site.yaml')
  writeFileSync(file, 'upstreams:\n  - { name: up, url: "mqtt://gw:hunter2@10.0.0.1:1883" }\n')
  const r = await runCli(['config', 'show', '--config', file, '--json'])
  assert.equal(r.code, 0)
  const shown = JSON.parse(r.stdout) as { upstreams: { url: string }[]; broker: { limits: { maxConnections: number } } }
  assert.equal(shown.upstreams[0]?.url, 'mqtt://gw:[redacted]@10.0.0.1:1883')
  assert.equal(shown.broker.limits.maxConnections, 10000)
  assert.doesNotMatch(r.stdout, /hunter2/)
  const yaml = await runCli(['config', 'show', '--config', file])
  assert.match(yaml.stdout, /maxConnections: 10000/)
})

test('config init writes a commented example that validates, and will not overwrite without --force', async (t) => {
  const file = join(tmpDir(t), 'site.yaml')
  const first = await runCli(['config', 'init', '--out', file])
  assert.equal(first.code, 0)
  assert.match(readFileSync(file, 'utf8'), /^# edge-agent site config/)
  assert.equal((await runCli(['config', 'validate', '--config', file])).code, 0)
  const again = await runCli(['config', 'init', '--out', file])
  assert.equal(again.code, 1)
  assert.match(again.stderr, /exists; use --force/)
  assert.equal((await runCli(['config', 'init', '--out', file, '--force'])).code, 0)
})

test('config schema prints the JSON Schema shipped in schema/edge-agent.schema.json', async () => {
  const r = await runCli(['config', 'schema'])
  assert.equal(r.code, 0)
  const printed = JSON.parse(r.stdout) as { properties: Record<string, unknown> }
  assert.ok(printed.properties['broker'])
  const shipped = readFileSync(new URL('../../../schema/edge-agent.schema.json', import.meta.url), 'utf8')
  assert.equal(
    r.stdout,
    shipped,
    'schema/edge-agent.schema.json is stale: run `node dist/agent/main.js config schema > schema/edge-agent.schema.json`',
  )
})

test('status exits 69 with a hint when no agent answers', async () => {
  const r = await runCli(['status', '--url', 'http://127.0.0.1:1'])
  assert.equal(r.code, 69)
  assert.match(r.stderr, /no agent answering at http:\/\/127\.0\.0\.1:1/)
  const j = await runCli(['status', '--url', 'http://127.0.0.1:1', '--json'])
  assert.equal(j.code, 69)
  assert.equal((JSON.parse(j.stdout) as { reachable: boolean }).reachable, false)
})
