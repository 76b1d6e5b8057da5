// `buffer export --out FILE` says how many messages it wrote, whether stderr
// is a terminal (progress bar) or not (a log file, a pipe, ssh without -t);
// an MQTT 5 message's properties are exported with binary data in base64.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { AGENT_MAIN, runCli, startAgent } from '../../helpers/agent-process.js'
import { freePort } from '../../helpers/mosquitto.js'
import { client } from '../../helpers/mqtt-clients.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { withTimeout } from '../../helpers/wait.js'

test('buffer export --out prints the number of messages written, with and without a terminal', async (t) => {
  const dir = tmpDir(t)
  const upstreams = await unreachableUpstream()
  const agent = await startAgent(t, { dir, config: { upstreams } })
  const dev = await client(t, agent.mqttUrl, { clientId: 'pump-7' })
  const N = 7
  for (let i = 0; i < N; i++) await dev.publishAsync('devices/pump-7/telemetry', `m${i}`, { qos: 1 })
  assert.equal((await agent.stop()).code, 0)

  const plain = join(dir, 'plain.jsonl')
  const noTty = await runCli(['buffer', 'export', '--config', agent.configFile, '--out', plain])
  assert.equal(noTty.code, 0, noTty.stderr)
  assert.equal(readFileSync(plain, 'utf8').trim().split('\n').length, N)
  assert.match(noTty.stderr, new RegExp(`exported ${N} messages to `))

  // A terminal: script(1) gives the CLI a pseudo-terminal for stdio.
  const viaTty = join(dir, 'tty.jsonl')
  const cmd = [process.execPath, AGENT_MAIN, 'buffer', 'export', '--config', agent.configFile, '--out', viaTty]
    .map(sh)
    .join(' ')
  const proc = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  const [code] = (await withTimeout(once(proc, 'close'), 30_000, 'export under script(1)')) as [number | null]
  assert.equal(code, 0, out)
  assert.equal(readFileSync(viaTty, 'utf8').trim().split('\n').length, N)
  assert.match(out, new RegExp(`exported ${N} messages to `))
})

test('buffer export writes an MQTT 5 message with its properties, correlation data in base64', async (t) => {
  const dir = tmpDir(t)
  const upstreams = await unreachableUpstream()
  const agent = await startAgent(t, { dir, config: { upstreams } })
  const dev = await client(t, agent.mqttUrl, { clientId: 'pump-8', protocolVersion: 5 })
  const correlation = Buffer.from([0x00, 0xff, 0x80, 0x41])
  await dev.publishAsync('devices/pump-8/telemetry', 'v5', {
    qos: 1,
    properties: { correlationData: correlation, contentType: 'text/plain', userProperties: { line: '4' } },
  })
  assert.equal((await agent.stop()).code, 0)
  const out = await runCli(['buffer', 'export', '--config', agent.configFile])
  assert.equal(out.code, 0, out.stderr)
  const line = JSON.parse(out.stdout.trim()) as { properties?: Record<string, unknown> }
  assert.deepEqual(line.properties, {
    correlationData: correlation.toString('base64'),
    contentType: 'text/plain',
    userProperties: { line: '4' },
  })
})

/** An upstream that never answers (a closed port), so that device telemetry stays in the buffer. */
async function unreachableUpstream() {
  return [
    {
      name: 'site',
      url: `mqtt://127.0.0.1:${await freePort()}`,
      rules: [{ topic: 'devices/+/telemetry', direction: 'out', qos: 1 }],
    },
  ]
}

function sh(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}
