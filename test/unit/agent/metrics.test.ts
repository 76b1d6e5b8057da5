import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MetricsText, byLabel } from '../../../src/agent/metrics.js'
import { RateMeter } from '../../../src/agent/rate-meter.js'
import { fsyncSummary, table } from '../../../src/agent/status-view.js'
import { FsyncTimings } from '../../../src/storage/index.js'

test('renders Prometheus text with HELP, TYPE and escaped labels', () => {
  const text = new MetricsText()
    .gauge('edge_agent_broker_clients', 'Devices connected', 3)
    .counter('edge_agent_broker_refused_total', 'Refusals', byLabel('reason', { maxConnections: 2, 'say "hi"\n': 1 }))
    .toString()
  assert.equal(
    text,
    [
      '# HELP edge_agent_broker_clients Devices connected',
      '# TYPE edge_agent_broker_clients gauge',
      'edge_agent_broker_clients 3',
      '# HELP edge_agent_broker_refused_total Refusals',
      '# TYPE edge_agent_broker_refused_total counter',
      'edge_agent_broker_refused_total{reason="maxConnections"} 2',
      'edge_agent_broker_refused_total{reason="say \\"hi\\"\\n"} 1',
      '',
    ].join('\n'),
  )
})

test('renders a histogram as cumulative buckets with le, +Inf, sum and count', () => {
  const text = new MetricsText()
    .histogram('edge_agent_x_seconds', 'X', { bounds: [0.001, 0.5], counts: [2, 0, 3], sumSec: 7.25 })
    .toString()
  assert.equal(
    text,
    [
      '# HELP edge_agent_x_seconds X',
      '# TYPE edge_agent_x_seconds histogram',
      'edge_agent_x_seconds_bucket{le="0.001"} 2',
      'edge_agent_x_seconds_bucket{le="0.5"} 2',
      'edge_agent_x_seconds_bucket{le="+Inf"} 5',
      'edge_agent_x_seconds_sum 7.25',
      'edge_agent_x_seconds_count 5',
      '',
    ].join('\n'),
  )
})

test('rate meter: per-second rate over the sliding window', () => {
  let now = 0
  let count = 0
  const meter = new RateMeter(
    () => ({ received: count }),
    10_000,
    1_000,
    () => now,
  )
  assert.deepEqual(meter.rates(), { received: 0 })
  meter.sample()
  for (let s = 1; s <= 20; s++) {
    now = s * 1000
    count += s <= 10 ? 100 : 50
    meter.sample()
  }
  // The window now covers seconds 10..20, all at 50/s.
  assert.equal(meter.rates()['received'], 50)
})

test('status tables align columns', () => {
  assert.equal(
    table(
      ['A', 'BB'],
      [
        ['long value', 'x'],
        ['y', 'z'],
      ],
    ),
    'A           BB\nlong value  x\ny           z',
  )
})

test('status names the fsyncs, the slowest, and stalls over a second', () => {
  const t = new FsyncTimings()
  for (const ms of [0.4, 2, 14]) t.record(ms)
  assert.equal(fsyncSummary(t.snapshot()), '3, slowest 14 ms')
  t.record(1_000) // exactly a second: not over it
  assert.equal(fsyncSummary(t.snapshot()), '4, slowest 1.0 s')
  t.record(1_700)
  t.record(4_200)
  assert.equal(fsyncSummary(t.snapshot()), '6, slowest 4.2 s, 2 over 1 s: the storage stalls')
})
