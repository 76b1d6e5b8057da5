// One agent per data directory: a second `run` exits with the lock message
// naming the holder's PID, the first keeps running and keeps its upstream
// link; offline commands that would replace what the agent holds refuse.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { startAgent, runCli } from '../../helpers/agent-process.js'
import { mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'

const missing = mosquittoMissing()

test(
  'a second agent on the same data dir exits 75 naming the PID; the first keeps its upstream link',
  { skip: missing, timeout: 90_000 },
  async (t) => {
    const upstream = await startMosquitto(t)
    const agent = await startAgent(t, {
      config: { upstreams: [{ name: 'site', url: upstream.url, rules: [{ topic: 'a/#', direction: 'out', qos: 1 }] }] },
    })
    await agent.waitForLog((l) => l.msg === 'upstream connected', 15_000, 'upstream connected')
    const second = await runCli(['run', '--config', agent.configFile])
    assert.equal(second.code, 75, second.stderr)
    assert.match(second.stderr, /EDGE_ERR_DATA_DIR_LOCKED/)
    assert.match(second.stderr, new RegExp(`in use by another edge-agent \\(PID ${agent.pid}\\)`))

    // Replacing the CA under a running agent is refused (issuing coordinates through the CA's lock).
    const init = await runCli(['certs', 'init', '--force', '--config', agent.configFile])
    assert.equal(init.code, 75, init.stderr)
    assert.match(init.stderr, new RegExp(`the agent \\(PID ${agent.pid}\\) is running`))

    const status = await agent.status()
    assert.equal(status['agent'].state, 'running')
    assert.equal(status['upstreams'][0].connected, true)
    assert.equal(status['upstreams'][0].totals.connects, 1, 'the upstream link was never taken over')
    assert.ok(!agent.logs.some((l) => l.msg === 'upstream disconnected'), 'no disconnect logged')

    // A clean stop releases the lock: the next agent starts.
    assert.equal((await agent.stop()).code, 0)
    assert.equal(existsSync(join(agent.dir, 'data', 'agent.pid')), false, 'the PID file went with the agent')
    const again = await startAgent(t, { dir: agent.dir })
    assert.equal((await again.status())['agent'].state, 'running')
  },
)

test('a lock left by a killed agent does not block the next start', { timeout: 60_000 }, async (t) => {
  const agent = await startAgent(t)
  await agent.stop('SIGKILL')
  assert.equal(existsSync(join(agent.dir, 'data', 'agent.pid')), true, 'a stale PID file stays after SIGKILL')
  const again = await startAgent(t, { dir: agent.dir })
  assert.equal((await again.status())['agent'].state, 'running')
})
