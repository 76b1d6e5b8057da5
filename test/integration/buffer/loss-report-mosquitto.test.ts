// Loss reports reach a real Mosquitto upstream in order with the data: the
// Bridge in-process over a SqliteStore, the link to Mosquitto through a TCP
// proxy the test blocks. While blocked, the small buffer evicts; once the
// link is back the subscriber sees the messages sent before the outage, then
// the loss report, then the messages that survived, and the report's count
// and id range are exactly the drops.
//
// Glossary
//   upstream   mosquitto on a free loopback port (test/helpers/mosquitto.ts)
//   proxy      test/helpers/tcp-proxy.ts between the bridge and mosquitto
//   watcher    an mqtt.js client of mosquitto, directly (not through the proxy)
import { upstreamOptions } from '../../helpers/upstream-options.js'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { estimateMessageBytes, type LossReport, SqliteStore } from '../../../src/buffer/index.js'
import { Bridge } from '../../../src/bridge/index.js'
import { mosquittoMissing, startMosquitto } from '../../helpers/mosquitto.js'
import { client } from '../../helpers/mqtt-clients.js'
import { startProxy } from '../../helpers/tcp-proxy.js'
import { tmpDir } from '../../helpers/tmp-dir.js'
import { collectMessages, waitFor, withTimeout } from '../../helpers/wait.js'

const missing = mosquittoMissing()
const silent = pino({ level: 'silent' })
const REPORT_TOPIC = 'edge-agent/cell-2/drops'
const PAYLOAD = 200

test(
  'the loss report arrives at Mosquitto after the messages before the gap, before those after it, with the drop counts',
  { skip: missing },
  async (t) => {
    const mosq = await startMosquitto(t, { persistence: false })
    const proxy = await startProxy(t, mosq.port)
    const watcher = await client(t, mosq.url, { clientId: 'watcher', protocolVersion: 5 })
    await watcher.subscribeAsync(['cell-2/#', REPORT_TOPIC], { qos: 1 })

    const rowBytes = estimateMessageBytes({
      queue: 'up',
      topic: 'cell-2/plant/m00',
      payload: Buffer.alloc(PAYLOAD),
      rule: 'plant',
      propertiesJson: null,
    })
    const store = new SqliteStore({
      dataDir: tmpDir(t, 'edge-loss-report-'),
      logger: silent,
      maxBytes: 12 * rowBytes,
      minFreeBytes: 0,
    })
    await store.start(AbortSignal.timeout(10_000))
    const bridge = new Bridge({
      upstream: upstreamOptions({
        name: 'up',
        url: proxy.url,
        protocolVersion: 5,
        clientId: 'bridge-loss-report',
        keepaliveSec: 5,
        reconnect: { minMs: 50, maxMs: 200, resetAfterMs: 1000, probeIntervalMs: 50 },
        rules: [
          { name: 'plant', topic: 'plant/#', direction: 'out', remotePrefix: 'cell-2/', whenFull: 'drop-oldest' },
        ],
      }),
      agent: { id: 'agent-under-test', site: 'cell-2', level: 2, version: 'test' },
      store,
      publishLocal: async () => undefined,
      logger: silent,
      identityWaitMs: 50,
      stopGraceMs: 500,
    })
    const ruleFilters = Object.fromEntries(bridge.rules.map((r) => [r.id, r.localFilter]))
    store.setLossReports(new Map([['up', { topic: REPORT_TOPIC, site: 'cell-2', ruleFilters }]]))
    t.after(async () => {
      await bridge.stop()
      await store.stop()
    })
    await bridge.start(new AbortController().signal)
    await waitFor(() => bridge.connected, 10_000, 'the bridge to connect')

    const capture = async (i: number): Promise<void> => {
      const payload = Buffer.alloc(PAYLOAD, 0x20)
      payload.write(`m${String(i).padStart(2, '0')}`)
      const hold = bridge.capture({ topic: `plant/m${String(i).padStart(2, '0')}`, payload, qos: 1, retain: false })
      assert.ok(hold instanceof Promise)
      await withTimeout(hold, 10_000, `capture of m${i}`)
    }
    const isData = (topic: string): boolean => topic.startsWith('cell-2/')
    const label = (m: { topic: string; payload: Buffer }): string =>
      isData(m.topic) ? m.topic.slice('cell-2/plant/'.length) : 'REPORT'

    // Before the outage: m00..m04 go through.
    const before = collectMessages(watcher, 5, isData, 15_000)
    for (let i = 0; i < 5; i++) await capture(i)
    assert.deepEqual((await before).map(label), ['m00', 'm01', 'm02', 'm03', 'm04'])
    await waitFor(() => store.stats().totals.acked === 5, 10_000, 'the store to see the five acknowledged upstream')

    // Outage: m05..m39 captured (acknowledged), the buffer keeps ~12 and evicts the oldest.
    proxy.block()
    await waitFor(() => !bridge.connected, 10_000, 'the bridge to see the link down')
    for (let i = 5; i < 40; i++) await capture(i)
    const evicted = store.stats().drops.byReason['evicted-full']
    assert.ok(evicted > 0, 'the buffer evicted during the outage')
    const survivors = Array.from({ length: 40 - 5 - evicted }, (_, k) => `m${String(5 + evicted + k).padStart(2, '0')}`)

    // Link back: the report, then the survivors, in that order.
    const after = collectMessages(
      watcher,
      survivors.length + 1,
      (topic) => isData(topic) || topic === REPORT_TOPIC,
      20_000,
    )
    proxy.unblock()
    const got = await after
    assert.deepEqual(got.map(label), ['REPORT', ...survivors])
    const report = JSON.parse(got[0]?.payload.toString() ?? '') as LossReport
    assert.equal(got[0]?.qos, 1)
    assert.equal(report.type, 'edge-agent/loss-report')
    assert.equal(report.reason, 'evicted-full')
    assert.equal(report.rule, 'plant')
    assert.equal(report.topicFilter, 'plant/#')
    assert.equal(report.upstream, 'up')
    assert.equal(report.site, 'cell-2')
    assert.equal(report.count, evicted, 'the report counts exactly the drops')
    const durable = store.stats().drops.sinceCreated
    assert.equal(durable?.byRule['plant']?.['evicted-full'], evicted)
    const ranges = store.dropRanges({ rule: 'plant' })
    assert.equal(
      ranges.reduce((n, r) => n + r.count, 0),
      evicted,
    )
    assert.equal(report.firstId, Math.min(...ranges.map((r) => r.firstId ?? Infinity)))
    assert.equal(report.lastId, Math.max(...ranges.map((r) => r.lastId ?? 0)))
    assert.ok(Date.parse(report.firstAt) <= Date.parse(report.lastAt))
  },
)
