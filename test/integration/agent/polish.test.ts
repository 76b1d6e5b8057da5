// What an operator meets in the first hour: a busy admin port named with an
// error code, /healthz and status saying "degraded" with the upstream down,
// JSON log lines without duplicate keys, shell completion.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { AGENT_MAIN, runCli, startAgent } from '../../helpers/agent-process.js'
import { freePort } from '../../helpers/mosquitto.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { waitFor } from '../../helpers/wait.js'

test('an admin port in use fails with EDGE_ERR_ADMIN_LISTEN_FAILED naming the endpoint', async (t) => {
  const busy = createServer()
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => busy.close(() => resolve())))
  const port = (busy.address() as { port: number }).port
  const dir = tmpDir(t)
  const file = join(dir, 'site.yaml')
  writeFileSync(
    file,
    `dataDir: ${join(dir, 'data')}\nlog: { format: json }\nadmin: { port: ${port} }\nbroker: { listeners: [ { protocol: mqtt, host: 127.0.0.1, port: 0 } ] }\n`,
  )
  const r = await runCli(['run', '--config', file], { timeoutMs: 30_000 })
  assert.equal(r.code, 1)
  assert.match(r.stdout, /EDGE_ERR_ADMIN_LISTEN_FAILED/)
  assert.match(r.stdout, new RegExp(`admin endpoint http://127\\.0\\.0\\.1:${port}: address in use`))
})

test('with the upstream down, /healthz answers 200 "degraded" and status says so', { timeout: 60_000 }, async (t) => {
  const closed = await freePort()
  const agent = await startAgent(t, {
    config: {
      upstreams: [{ name: 'up', url: `mqtt://127.0.0.1:${closed}`, rules: [{ topic: 'a/#', direction: 'out' }] }],
    },
  })
  const res = await fetch(new URL('/healthz', agent.adminUrl))
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { status: 'degraded', upstreamsDown: ['up'], state: 'running' })
  const s = await runCli(['status', '--url', agent.adminUrl])
  assert.equal(s.code, 0, s.stderr)
  assert.match(s.stdout, /running, degraded \(upstream down: up\)/)
})

test('JSON log lines carry each key once', { timeout: 60_000 }, async (t) => {
  const dir = tmpDir(t)
  const file = join(dir, 'site.yaml')
  writeFileSync(
    file,
    `dataDir: ${join(dir, 'data')}\nlog: { format: json, level: debug }\nadmin: { port: 0 }\ncerts: { autoInit: true }\n` +
      `broker: { listeners: [ { protocol: mqtt, host: 127.0.0.1, port: 0 }, { protocol: mqtts, host: 127.0.0.1, port: 0 } ] }\n`,
  )
  const proc = spawn(process.execPath, [AGENT_MAIN, 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(proc, 'exit')
  let out = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
  try {
    await waitFor(() => out.includes('"msg":"agent started"'), 30_000, 'agent started')
  } finally {
    // Before the temp dir's cleanup (after-hooks run in registration order).
    proc.kill('SIGKILL')
    await exited
  }
  for (const line of out.split('\n').filter(Boolean)) {
    // Top-level keys: a string key right after { or , at depth 1.
    const keys: string[] = []
    let depth = 0
    for (let i = 0; i < line.length; i++) {
      const ch = line[i]
      if (ch === '"') {
        const end = line.indexOf('"', i + 1)
        let j = i + 1
        let s = ''
        for (; j < line.length && line[j] !== '"'; j++) s += line[j] === '\\' ? line[++j] : line[j]
        if (depth === 1 && line[j + 1] === ':') keys.push(s)
        i = end < 0 ? line.length : j
      } else if (ch === '{' || ch === '[') depth++
      else if (ch === '}' || ch === ']') depth--
    }
    assert.equal(new Set(keys).size, keys.length, `duplicate key in ${line}`)
  }
})

test('bash and zsh completion scripts complete commands, subcommands and options', async () => {
  const bash = await runCli(['completion', 'bash'])
  assert.equal(bash.code, 0)
  const drive = (words: string[]): string =>
    spawnSync(
      'bash',
      [
        '-c',
        `${bash.stdout}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _edge_agent; echo "\${COMPREPLY[@]}"`,
      ],
      { encoding: 'utf8' },
    ).stdout.trim()
  assert.equal(drive(['edge-agent', 'bridge', 'ad']), 'add')
  assert.match(drive(['edge-agent', 'bridge', 'add', '--upstream', 'up', '--to']), /--topic/)
  assert.match(drive(['edge-agent', '']), /\bdoctor\b.*\breload\b|\breload\b.*\bdoctor\b/)
  const zsh = await runCli(['completion', 'zsh'])
  assert.equal(zsh.code, 0)
  assert.match(zsh.stdout, /^#compdef edge-agent/)
  assert.match(zsh.stdout, /bashcompinit/)
})

test('a listener that cannot bind is reported once, with its code', async (t) => {
  const busy = createServer()
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => busy.close(() => resolve())))
  const port = (busy.address() as { port: number }).port
  const dir = tmpDir(t)
  const file = join(dir, 'site.yaml')
  writeFileSync(
    file,
    `dataDir: ${join(dir, 'data')}\nlog: { format: json }\nadmin: { port: 0 }\nbroker: { listeners: [ { protocol: mqtt, host: 127.0.0.1, port: ${port} } ] }\n`,
  )
  const r = await runCli(['run', '--config', file], { timeoutMs: 30_000 })
  assert.equal(r.code, 1)
  const fatal = r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { msg: string; err?: { code: string; message: string } })
    .find((l) => l.msg === 'agent failed to start')
  assert.equal(fatal?.err?.code, 'EDGE_ERR_BROKER_LISTEN_FAILED')
  assert.equal(fatal.err.message.split('EADDRINUSE').length - 1, 1, `EADDRINUSE once in: ${fatal.err.message}`)
})
