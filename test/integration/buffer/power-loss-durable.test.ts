// The power-loss drop (issue #20) is counted like any other drop (issue #19):
// durably, in the drop ledger and its totals since creation, in /metrics,
// in `buffer drops`, and upstream as a loss report, and it is still there
// after another restart.
//
// The cut itself is test/integration/powercut's job (a FUSE disk). Here the
// state it leaves is made directly, which needs no FUSE: in durability
// 'normal' a cut rolls the store back to its last checkpoint while the run
// record (edge-agent.run.json, fsync'd) still names the acknowledged ids
// above it. A clean run, then its record rewritten as a run that never
// stopped and had acknowledged 5 ids more, is exactly that state.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { RUN_FILE_NAME, type LossReport } from '../../../src/buffer/index.js'
import { runCli, startAgent } from '../../helpers/agent-process.js'
import { client } from '../../helpers/mqtt-clients.js'
import { freePort, mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { waitFor } from '../../helpers/wait.js'

const missing = mosquittoMissing()
const LOST = 5

test(
  'a power-loss drop is durable: ledger, totals, metrics, `buffer drops`, a loss report, and another restart',
  { skip: missing },
  async (t) => {
    const dir = tmpDir(t)
    const port = await freePort()
    const config = {
      site: { name: 'cell-7' },
      buffer: { durability: 'normal' },
      upstreams: [
        {
          name: 'site',
          url: `mqtt://127.0.0.1:${port}`,
          reconnect: { minMs: 50, maxMs: 200 },
          rules: [
            { name: 'telemetry', topic: 'devices/+/telemetry', direction: 'out', qos: 1, remotePrefix: 'cell-7/' },
          ],
        },
      ],
    }
    // A run that stores 20 acknowledged messages (the upstream is down) and stops cleanly.
    const first = await startAgent(t, { dir, config })
    const device = await client(t, first.mqttUrl, { clientId: 'dev-1', reconnectPeriod: 0 })
    for (let seq = 0; seq < 20; seq++) await device.publishAsync('devices/dev-1/telemetry', `${seq}`, { qos: 1 })
    device.end(true)
    assert.equal((await first.stop()).code, 0)

    const runFile = join(dir, 'data', RUN_FILE_NAME)
    const clean = JSON.parse(readFileSync(runFile, 'utf8')) as { state: string; ackedHighId: number }
    assert.equal(clean.state, 'clean')
    assert.ok(clean.ackedHighId >= 20, `acknowledged ids recorded (${clean.ackedHighId})`)
    const from = clean.ackedHighId + 1
    const to = clean.ackedHighId + LOST
    writeFileSync(runFile, JSON.stringify({ ...clean, state: 'running', ackedHighId: to }))

    // The upstream is back; the report must reach it.
    const mosq = await startMosquitto(t, { port, persistence: false })
    const watcher = await client(t, mosq.url, { clientId: 'watcher' })
    const reports: LossReport[] = []
    const data: string[] = []
    watcher.on('message', (topic, p) => {
      if (topic === 'edge-agent/cell-7/drops') reports.push(JSON.parse(p.toString()) as LossReport)
      else data.push(p.toString())
    })
    await watcher.subscribeAsync(['cell-7/#', 'edge-agent/cell-7/drops'], { qos: 1 })

    const second = await startAgent(t, { dir, config })
    const status = await second.status()
    assert.equal(status['buffer']['lastRun']['ended'], 'unclean')
    assert.deepEqual(
      status['buffer']['lastRun']['loss']['ids'],
      { from, to },
      "'normal' keeps next_id exact: the lost ids are known",
    )
    assert.equal(status['buffer']['drops']['byReason']['power-loss'], LOST)
    assert.equal(status['buffer']['drops']['sinceCreated']['byReason']['power-loss'], LOST)
    assert.equal(status['buffer']['drops']['sinceCreated']['byRule']['']['power-loss'], LOST)
    const metrics = await (await fetch(`${second.adminUrl}/metrics`)).text()
    assert.match(
      metrics,
      new RegExp(`^edge_agent_buffer_dropped_durable_total\\{rule="",reason="power-loss"\\} ${LOST}$`, 'm'),
    )
    await waitFor(
      () => reports.length > 0 && data.length >= 20,
      30_000,
      'the loss report and the stored messages upstream',
    )
    assert.equal(reports.length, 1)
    const r = reports[0] as LossReport
    assert.equal(r.reason, 'power-loss')
    assert.equal(r.count, LOST)
    assert.equal(r.upstream, 'site')
    assert.equal(r.rule, '')
    assert.deepEqual([r.firstId, r.lastId], [from, to])
    assert.equal((await second.stop()).code, 0)

    // Another restart: the last run was clean and lost nothing, the power-loss count stays.
    const third = await startAgent(t, { dir, config })
    const again = await third.status()
    assert.equal(again['buffer']['lastRun']['ended'], 'clean')
    assert.equal(again['buffer']['lastRun']['loss'], null)
    assert.equal(again['buffer']['drops']['byReason']['power-loss'], 0, 'not counted again')
    assert.equal(again['buffer']['drops']['sinceCreated']['byReason']['power-loss'], LOST)
    const cli = await runCli(['buffer', 'drops', '--config', third.configFile, '--json'])
    assert.equal(cli.code, 0, cli.stderr)
    const ledger = JSON.parse(cli.stdout) as {
      total: number
      ranges: Array<{ reason: string; rule: string; count: number; firstId: number | null; lastId: number | null }>
    }
    assert.equal(ledger.total, LOST)
    assert.deepEqual(
      ledger.ranges.map((x) => [x.reason, x.rule, x.count, x.firstId, x.lastId]),
      [['power-loss', '', LOST, from, to]],
    )
    const table = await runCli(['buffer', 'drops', '--config', third.configFile, '--since', '1h'])
    assert.equal(table.code, 0, table.stderr)
    assert.match(table.stdout, /power-loss/)
    assert.equal((await third.stop()).code, 0)
    assert.equal(reports.length, 1, 'one report, not one per start')
  },
)
