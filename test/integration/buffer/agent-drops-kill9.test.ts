// Drop accounting on the real agent across kill -9 (issue #19): a device
// publishes QoS 1 while the upstream is down and the small buffer evicts;
// the agent is SIGKILLed mid-stream and started again with Mosquitto now
// listening. Then, exactly:
//   committed = delivered to Mosquitto + evictions counted since creation,
// and the one loss report arrives before the survivors, counting the drops.
//
// Glossary
//   acked      PUBACKs the device got before the kill (seqs 0..acked-1, one publish at a time)
//   committed  acked, plus the one publish in flight at the kill if the agent committed it
//              (then it is the newest row: nothing evicts it afterwards, so it is delivered)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import type { LossReport } from '../../../src/buffer/index.js'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { freePort, mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { waitFor, withTimeout } from '../../helpers/wait.js'

const missing = mosquittoMissing()

test(
  'agent kill -9 while evicting: delivered + durable drops = committed, and the loss report says so',
  { skip: missing },
  async (t) => {
    const dir = tmpDir(t)
    const port = await freePort()
    const config = {
      site: { name: 'cell-9' },
      buffer: { maxBytes: 64 * 1024 },
      upstreams: [
        {
          name: 'site',
          url: `mqtt://127.0.0.1:${port}`,
          reconnect: { minMs: 50, maxMs: 200 },
          rules: [
            {
              name: 'telemetry',
              topic: 'devices/+/telemetry',
              direction: 'out',
              qos: 1,
              remotePrefix: 'cell-9/',
              whenFull: 'drop-oldest',
            },
          ],
        },
      ],
    }
    const agent = await startAgent(t, { dir, config })
    const device = await client(t, agent.mqttUrl, { clientId: 'dev-1', reconnectPeriod: 0 })
    const killAt = randomInt(400, 1200)
    t.diagnostic(`kill -9 after ${killAt} PUBACKs`)
    const payload = (seq: number): string => `${seq}:`.padEnd(400, '.')
    let acked = 0
    const publishing = (async () => {
      for (let seq = 0; seq < 5_000; seq++) {
        try {
          await device.publishAsync('devices/dev-1/telemetry', payload(seq), { qos: 1 })
        } catch {
          return
        }
        acked = seq + 1
        if (acked === killAt) process.kill(agent.pid, 'SIGKILL')
      }
    })()
    await withTimeout(agent.exited, 120_000, 'the agent to be killed')
    device.end(true)
    await publishing
    assert.ok(acked >= killAt)

    // Mosquitto comes up on the upstream's port; a watcher waits for everything.
    const mosq = await startMosquitto(t, { port, persistence: false })
    const watcher = await client(t, mosq.url, { clientId: 'watcher' })
    const data: number[] = []
    const reports: LossReport[] = []
    const order: string[] = []
    watcher.on('message', (topic, p) => {
      if (topic === 'edge-agent/cell-9/drops') {
        reports.push(JSON.parse(p.toString()) as LossReport)
        order.push('report')
      } else if (topic === 'cell-9/devices/dev-1/telemetry') {
        data.push(Number(p.toString().split(':')[0]))
        order.push('data')
      }
    })
    await watcher.subscribeAsync(['cell-9/#', 'edge-agent/cell-9/drops'], { qos: 1 })

    const again = await startAgent(t, { dir, config })
    await waitFor(
      async () => (await again.status())['buffer']['totals']['messages'] === 0,
      60_000,
      'the buffer to drain',
    )
    const status = await again.status()
    const evicted: number = status['buffer']['drops']['sinceCreated']['byRule']['telemetry']['evicted-full']
    const delivered = new Set(data)
    await waitFor(() => delivered.size + evicted >= acked && reports.length > 0, 20_000, 'delivery to finish')
    const committed = delivered.has(acked) ? acked + 1 : acked
    assert.equal(delivered.size + evicted, committed, `${delivered.size} delivered + ${evicted} evicted`)
    for (let seq = committed - 1; seq >= committed - delivered.size; seq--)
      assert.ok(delivered.has(seq), `survivor ${seq} delivered`)
    assert.equal(
      reports.reduce((n, r) => n + r.count, 0),
      evicted,
      'the loss reports count every eviction',
    )
    assert.ok(
      reports.every(
        (r) => r.reason === 'evicted-full' && r.rule === 'telemetry' && r.topicFilter === 'devices/+/telemetry',
      ),
    )
    assert.equal(order[0], 'report', 'the report comes before the survivors (the gap is at the head)')
    assert.deepEqual(Object.keys(status['buffer']['drops']['sinceCreated']['byReason']), ['evicted-full'])

    // The ledger from the CLI, on the file of the running agent.
    const cli = await runCli(['buffer', 'drops', '--config', again.configFile, '--json'])
    assert.equal(cli.code, 0, cli.stderr)
    const ledger = JSON.parse(cli.stdout) as {
      total: number
      ranges: Array<{ reason: string; rule: string; count: number; firstId: number | null }>
    }
    assert.equal(ledger.total, evicted)
    assert.ok(ledger.ranges.every((r) => r.reason === 'evicted-full' && r.rule === 'telemetry' && r.firstId !== null))
    const table = await runCli(['buffer', 'drops', '--config', again.configFile, '--since', '1h'])
    assert.match(table.stdout, /evicted-full\s+telemetry\s+site\s+cell-9\/devices\/dev-1\/telemetry/)
    const none = JSON.parse(
      (await runCli(['buffer', 'drops', '--config', again.configFile, '--rule', 'nope', '--json'])).stdout,
    ) as { total: number }
    assert.equal(none.total, 0)
    const bad = await runCli(['buffer', 'drops', '--config', again.configFile, '--since', 'yesterday-ish'])
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /ISO 8601/)
    t.diagnostic(
      `${acked} acked, ${committed} committed, ${delivered.size} delivered, ${evicted} evicted, ${reports.length} report(s)`,
    )
  },
)
