// Where commands find the config (--config > $EDGE_AGENT_CONFIG > systemd >
// /etc/edge-agent/config.yaml > defaults), that they say which one, and that
// state commands refuse to invent ./data when none was found.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

function site(dir: string, name: string): string {
  const file = join(dir, `${name}.yaml`)
  writeFileSync(file, `site: { name: ${name}, level: 2 }\ndataDir: ${join(dir, `${name}-data`)}\n`)
  return file
}

/** An environment with no config anywhere: the /etc root points at an empty temp dir. */
function bareEnv(root: string): Record<string, string> {
  return {
    EDGE_AGENT_SYSCONFDIR: join(root, 'etc'),
    EDGE_AGENT_CONFIG: '',
    CONFIGURATION_DIRECTORY: '',
    STATE_DIRECTORY: '',
  }
}

test('without --config, commands use $EDGE_AGENT_CONFIG, else the default path, and say which', async (t) => {
  const root = tmpDir(t)
  const env = bareEnv(root)
  mkdirSync(join(root, 'etc', 'edge-agent'), { recursive: true })
  const etc = join(root, 'etc', 'edge-agent', 'config.yaml')
  writeFileSync(etc, `site: { name: from-etc, level: 2 }\ndataDir: ${join(root, 'etc-data')}\n`)

  const fromEtc = await runCli(['config', 'show', '--json'], { env, cwd: root })
  assert.equal(fromEtc.code, 0, fromEtc.stderr)
  assert.equal((JSON.parse(fromEtc.stdout) as { site: { name: string } }).site.name, 'from-etc')
  const v = await runCli(['config', 'validate', '--json'], { env, cwd: root })
  assert.equal(v.code, 0, v.stderr)
  assert.deepEqual((JSON.parse(v.stdout) as { config: unknown }).config, { file: etc, source: 'default-path' })

  const other = site(root, 'from-env')
  const fromEnv = await runCli(['config', 'validate', '--json'], {
    env: { ...env, EDGE_AGENT_CONFIG: other },
    cwd: root,
  })
  assert.equal(fromEnv.code, 0, fromEnv.stderr)
  assert.deepEqual((JSON.parse(fromEnv.stdout) as { config: unknown }).config, { file: other, source: 'env' })

  const flag = site(root, 'from-flag')
  const fromFlag = await runCli(['config', 'show', '--json', '--config', flag], {
    env: { ...env, EDGE_AGENT_CONFIG: other },
    cwd: root,
  })
  assert.equal((JSON.parse(fromFlag.stdout) as { site: { name: string } }).site.name, 'from-flag')
})

test('with no config found, state commands refuse to create ./data and name the choices', async (t) => {
  const root = tmpDir(t)
  const env = bareEnv(root)
  for (const args of [
    ['certs', 'init'],
    ['buffer', 'peek'],
    ['certs', 'list'],
  ]) {
    const r = await runCli(args, { env, cwd: root })
    assert.equal(r.code, 78, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, /no config found/)
    assert.match(r.stderr, /site init/)
    assert.match(r.stderr, /--config FILE/)
  }
  assert.deepEqual(readdirSync(root), [], 'nothing was created in the current directory')
  // Naming the data dir is a deliberate choice, and allowed.
  const named = await runCli(['certs', 'list', '--set', `dataDir=${join(root, 'state')}`], { env, cwd: root })
  assert.notEqual(named.code, 78, named.stderr)
})

test('config validate without a file says it used built-in defaults', async (t) => {
  const root = tmpDir(t)
  const r = await runCli(['config', 'validate', '--json'], { env: bareEnv(root), cwd: root })
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual((JSON.parse(r.stdout) as { config: unknown }).config, { source: 'defaults' })
  assert.equal(existsSync(join(root, 'data')), false)
})

test('--set errors name the flag, not "defaults"', async (t) => {
  const root = tmpDir(t)
  const r = await runCli(['config', 'validate', '--set', 'brokr.limits.maxConnections=5'], {
    env: bareEnv(root),
    cwd: root,
  })
  assert.equal(r.code, 78)
  assert.match(r.stderr, /--set brokr\.limits\.maxConnections: brokr: unknown key \(did you mean 'broker'\?\)/)
  assert.doesNotMatch(r.stderr, /defaults/)
})
