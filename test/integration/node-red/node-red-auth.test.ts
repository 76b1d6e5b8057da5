// Node-RED's editor and admin API are closed to anyone without credentials;
// an admin user made by `nodered passwd` gets in; with Node-RED disabled the
// node-red module is never loaded at all.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { runCli, startAgent, type RunningAgent } from '../../helpers/agent-process.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const WATCH = resolve(import.meta.dirname, 'fixtures/watch-imports.mjs')

function nodeRedUrl(agent: RunningAgent): string {
  const line = agent.logs.find((l) => l.msg === 'node-red started')
  assert.ok(line, "the 'node-red started' log line")
  return line['url'] as string
}

async function login(url: string, username: string, password: string): Promise<Response> {
  return fetch(new URL('/auth/token', url), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username, password }),
  })
}

test('the editor and admin API refuse unauthenticated access; a user made by nodered passwd gets in', async (t) => {
  const imports = join(tmpDir(t), 'imports.log')
  const agent = await startAgent(t, {
    startTimeoutMs: 60_000,
    config: { nodeRed: { enabled: true, host: '127.0.0.1', port: 0 } },
    env: { NODE_OPTIONS: `--import=${WATCH}`, EDGE_TEST_IMPORT_LOG: imports },
  })
  const url = nodeRedUrl(agent)
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/, 'loopback by default')
  // The positive control of the "never loaded" test below.
  assert.match(readFileSync(imports, 'utf8'), /^node-red$/m)
  // No user yet: no editor at all, and every admin route wants credentials.
  assert.equal((await fetch(url)).status, 404)
  for (const path of ['/flows', '/nodes', '/settings', '/context/global']) {
    assert.equal((await fetch(new URL(path, url))).status, 401, `GET ${path}`)
  }
  const post = await fetch(new URL('/flows', url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '[]',
  })
  assert.equal(post.status, 401, 'POST /flows')
  assert.equal(
    (await fetch(new URL('/flows', url), { headers: { authorization: 'Bearer not-the-token' } })).status,
    401,
  )
  // Secrets in the state dir, 0600.
  const nr = join(agent.dir, 'data', 'node-red')
  for (const f of ['.credential-secret', 'cli.json']) assert.equal(statSync(join(nr, f)).mode & 0o777, 0o600, f)
  assert.equal(statSync(nr).mode & 0o777, 0o700)

  const pw = join(agent.dir, 'pw')
  writeFileSync(pw, 'correct horse battery\n')
  const r = await runCli(['nodered', 'passwd', 'ops', '--password-file', pw, '--config', agent.configFile])
  assert.equal(r.code, 0, r.stderr)
  const users = JSON.parse(readFileSync(join(nr, 'users.json'), 'utf8')) as { username: string; password: string }[]
  assert.equal(users[0]?.username, 'ops')
  assert.match(users[0]?.password ?? '', /^\$2[aby]\$10\$/, 'a bcrypt hash, not the password')
  assert.equal(statSync(join(nr, 'users.json')).mode & 0o777, 0o600)

  assert.notEqual((await login(url, 'ops', 'wrong password')).status, 200)
  assert.notEqual((await login(url, 'nobody', 'correct horse battery')).status, 200)
  const ok = await login(url, 'ops', 'correct horse battery')
  assert.equal(ok.status, 200)
  const token = ((await ok.json()) as { access_token: string }).access_token
  const flows = await fetch(new URL('/flows', url), { headers: { authorization: `Bearer ${token}` } })
  assert.equal(flows.status, 200)
  assert.ok(Array.isArray(await flows.json()))

  // A bad password is refused before anything is written.
  writeFileSync(pw, 'short')
  const bad = await runCli(['nodered', 'passwd', 'ops2', '--password-file', pw, '--config', agent.configFile])
  assert.equal(bad.code, 64)
  assert.match(bad.stderr, /EDGE_ERR_NODERED_USER_INVALID/)

  // After a restart with a user, the editor is served (and still asks to log in).
  await agent.stop()
  const again = await startAgent(t, {
    dir: agent.dir,
    startTimeoutMs: 60_000,
    config: { nodeRed: { enabled: true, host: '127.0.0.1', port: 0 } },
  })
  const url2 = nodeRedUrl(again)
  assert.equal((await fetch(url2)).status, 200)
  assert.equal((await fetch(new URL('/flows', url2))).status, 401)
  const secretBefore = readFileSync(join(nr, '.credential-secret'), 'utf8')
  assert.ok(secretBefore.trim().length >= 32, 'the credential secret is kept across restarts')
})

test('with Node-RED disabled the node-red module is never loaded, and the CLI says so', async (t) => {
  const imports = join(tmpDir(t), 'imports.log')
  const agent = await startAgent(t, { env: { NODE_OPTIONS: `--import=${WATCH}`, EDGE_TEST_IMPORT_LOG: imports } })
  const s = await agent.status()
  assert.equal(s['nodeRed'], null)
  assert.equal(existsSync(imports) ? readFileSync(imports, 'utf8') : '', '', 'no node-red import')
  assert.equal(existsSync(join(agent.dir, 'data', 'node-red')), false)
  const file = join(agent.dir, 'flows.json')
  writeFileSync(file, '[]')
  const r = await runCli(['nodered', 'deploy', file, '--config', agent.configFile])
  assert.equal(r.code, 78)
  assert.match(r.stderr, /EDGE_ERR_NODERED_DISABLED/)
  const cfg = await runCli(['config', 'show', '--config', agent.configFile])
  assert.equal(cfg.code, 0, cfg.stderr)
  assert.match(cfg.stdout, /nodeRed:/, 'the effective config always shows the section')
})
