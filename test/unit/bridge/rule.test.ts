// BridgeRule.parse / parseRuleSet and the topic helpers: table tests after
// Mosquitto's bridge `topic` examples and thin-edge's rule checks.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BridgeRule, parseRuleSet, type BridgeRuleInput } from '../../../src/bridge/rule.js'
import { filtersOverlap, topicFilterProblem, topicMatches } from '../../../src/bridge/topic.js'
import { BridgeError } from '../../../src/bridge/errors.js'

test('maps local topics up and upstream topics down with Mosquitto prefix semantics', () => {
  const cases: { rule: BridgeRuleInput; local: string; remote: string }[] = [
    {
      rule: { topic: 'devices/+/telemetry', direction: 'out', remotePrefix: 'site-a/line-3/' },
      local: 'devices/7/telemetry',
      remote: 'site-a/line-3/devices/7/telemetry',
    },
    {
      rule: { topic: '#', direction: 'out', localPrefix: 'up/', remotePrefix: 'cell-2/' },
      local: 'up/a/b',
      remote: 'cell-2/a/b',
    },
    {
      rule: { topic: 'cmd/#', direction: 'in', localPrefix: 'devices/', remotePrefix: 'plant/cell-2/' },
      local: 'devices/cmd/pump-1',
      remote: 'plant/cell-2/cmd/pump-1',
    },
    { rule: { topic: 'x', direction: 'both' }, local: 'x', remote: 'x' },
  ]
  for (const c of cases) {
    const r = BridgeRule.parse(c.rule)
    if (r.forwardsOut) assert.equal(r.mapOutbound(c.local), c.remote, `out ${JSON.stringify(c.rule)}`)
    if (r.forwardsIn) assert.equal(r.mapInbound(c.remote), c.local, `in ${JSON.stringify(c.rule)}`)
  }
})

test('a rule maps only in its own direction and only topics under its prefix', () => {
  const out = BridgeRule.parse({ topic: 'a/#', direction: 'out', localPrefix: 'l/', remotePrefix: 'r/' })
  assert.equal(out.mapInbound('r/a/1'), undefined)
  assert.equal(out.mapOutbound('a/1'), undefined, 'without the local prefix')
  assert.equal(out.mapOutbound('l/b/1'), undefined)
  assert.equal(out.mapOutbound('l/a'), 'r/a', "'a/#' matches its parent level")
  const inn = BridgeRule.parse({ topic: 'a/+', direction: 'in', remotePrefix: 'r/' })
  assert.equal(inn.mapOutbound('a/1'), undefined)
  assert.equal(inn.mapInbound('r/a/1/2'), undefined)
})

test('forwards with the lower of the message QoS and the rule QoS', () => {
  const r = BridgeRule.parse({ topic: '#', direction: 'out', qos: 1 })
  assert.deepEqual(
    [0, 1, 2].map((q) => r.effectiveQos(q)),
    [0, 1, 1],
  )
})

test('fills the documented defaults', () => {
  const r = BridgeRule.parse({ topic: 't', direction: 'out' }, 3)
  assert.equal(r.qos, 1)
  assert.equal(r.id, '3:t')
  assert.equal(r.ttlSec, 604800)
  assert.equal(r.whenFull, 'auto')
  assert.equal(r.conflate, 'none')
  assert.equal(r.retainAsPublished, true)
  assert.equal(r.bufferQos0, false)
})

test('rejects invalid rules with a typed error naming the key', () => {
  const cases: { rule: BridgeRuleInput; key: string; match: RegExp }[] = [
    { rule: { topic: 'a/#/b', direction: 'out' }, key: 'topic', match: /MQTT-4\.7\.1-2/ },
    { rule: { topic: 'a+/b', direction: 'out' }, key: 'topic', match: /MQTT-4\.7\.1-3/ },
    { rule: { topic: '', direction: 'out' }, key: 'topic', match: /empty/ },
    { rule: { topic: '$SYS/#', direction: 'out' }, key: 'topic', match: /\$/ },
    { rule: { topic: 'a', direction: 'sideways' as 'out' }, key: 'direction', match: /out/ },
    { rule: { topic: 'a', direction: 'out', qos: 3 }, key: 'qos', match: /0, 1 or 2/ },
    { rule: { topic: 'a', direction: 'out', remotePrefix: 'site' }, key: 'remotePrefix', match: /end with '\/'/ },
    { rule: { topic: 'a', direction: 'out', localPrefix: 'x/+/' }, key: 'localPrefix', match: /\+/ },
    { rule: { topic: 'a', direction: 'out', ttlSec: -1 }, key: 'ttlSec', match: /0 and/ },
    { rule: { topic: 'a', direction: 'out', priority: 1.5 }, key: 'priority', match: /integer/ },
  ]
  for (const c of cases) {
    assert.throws(
      () => BridgeRule.parse(c.rule),
      (err: unknown) => {
        assert.ok(err instanceof BridgeError, 'a BridgeError')
        assert.equal(err.code, 'EDGE_ERR_BRIDGE_RULE_INVALID')
        assert.deepEqual(err.path, [c.key], JSON.stringify(c.rule))
        assert.match(err.message, c.match)
        return true
      },
    )
  }
})

test('rejects a rule whose prefix lacks a trailing slash', () => {
  assert.throws(() => BridgeRule.parse({ topic: 't', direction: 'out', remotePrefix: 'plant-a' }), {
    code: 'EDGE_ERR_BRIDGE_RULE_INVALID',
  })
})

test('refuses two out rules that would forward the same local message twice', () => {
  const { problems } = parseRuleSet([
    { topic: 'devices/#', direction: 'out', remotePrefix: 'a/' },
    { topic: 'devices/+/telemetry', direction: 'out', remotePrefix: 'b/' },
  ])
  assert.equal(problems.length, 1)
  assert.deepEqual(problems[0]?.path, [1, 'topic'])
  assert.match(problems[0]?.message ?? '', /forwarded twice/)
})

test('refuses two in rules that would deliver the same upstream message twice', () => {
  const { problems } = parseRuleSet([
    { topic: 'cmd/+', direction: 'in', localPrefix: 'x/' },
    { topic: 'cmd/#', direction: 'in', localPrefix: 'y/' },
  ])
  assert.match(problems[0]?.message ?? '', /delivered twice/)
})

test('refuses an in rule that would receive what an out rule sends (a loop on MQTT 3.1.1)', () => {
  const { problems } = parseRuleSet([
    { topic: 'devices/#', direction: 'out', remotePrefix: 'cell/' },
    { topic: '#', direction: 'in', remotePrefix: 'cell/', localPrefix: 'from-up/' },
  ])
  assert.equal(problems.length, 1)
  assert.match(problems[0]?.message ?? '', /loop/)
})

test('accepts disjoint rule sets, including the public example', () => {
  const { rules, problems } = parseRuleSet([
    { topic: 'devices/+/telemetry', direction: 'out', qos: 1, localPrefix: '', remotePrefix: 'plant-a/cell-2/' },
    { topic: 'devices/+/cmd', direction: 'in', qos: 1, localPrefix: '', remotePrefix: 'plant-a/cell-2/' },
    { topic: 'shared/#', direction: 'both', remotePrefix: 'plant-a/cell-2/' },
  ])
  assert.deepEqual(problems, [])
  assert.equal(rules.length, 3)
})

test('reports every problem of a rule set at once, with the rule index in the path', () => {
  const { problems } = parseRuleSet([
    { topic: 'a/#/b', direction: 'out' },
    { topic: 'ok', direction: 'out' },
    { topic: 'c', direction: 'in', qos: 7 },
  ])
  assert.deepEqual(
    problems.map((p) => p.path),
    [
      [0, 'topic'],
      [2, 'qos'],
    ],
  )
})

test('matches filters per MQTT §4.7', () => {
  const cases: [string, string, boolean][] = [
    ['a/b', 'a/b', true],
    ['a/+', 'a/b', true],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a', false],
    ['a/+', 'a/', true],
    ['a/#', 'a', true],
    ['a/#', 'a/b/c', true],
    ['#', 'a/b', true],
    ['#', '$SYS/x', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true],
    ['a/b', 'a/bc', false],
    ['+/+', '/x', true],
  ]
  for (const [f, t, want] of cases) assert.equal(topicMatches(f, t), want, `${f} vs ${t}`)
})

test('detects overlapping filters', () => {
  const cases: [string, string, boolean][] = [
    ['a/#', 'a', true],
    ['a/+', 'a', false],
    ['a/+/c', 'a/b/+', true],
    ['a/b', 'a/c', false],
    ['#', '$SYS/#', false],
    ['+/+', 'x/#', true],
    ['x/y/z', 'x/+', false],
  ]
  for (const [a, b, want] of cases) {
    assert.equal(filtersOverlap(a, b), want, `${a} vs ${b}`)
    assert.equal(filtersOverlap(b, a), want, `${b} vs ${a}`)
  }
})

test('validates topic filters with the spec rule in the message', () => {
  assert.equal(topicFilterProblem('a/+/#'), undefined)
  assert.match(topicFilterProblem('a/#/b') ?? '', /MQTT-4\.7\.1-2/)
  assert.match(topicFilterProblem('a\u0000') ?? '', /NUL/)
})
