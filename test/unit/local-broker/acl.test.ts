// Device isolation rules (src/local-broker/acl.ts), as tables.
// Glossary: "covers" = the allowed filter matches every topic the requested one can.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Acl, AclError, filterCovers, topicMatches } from '../../../src/local-broker/acl.js'
import { identityProblem } from '../../../src/local-broker/tls.js'

const acl = Acl.compile({
  publish: ['devices/{id}/#'],
  subscribe: ['devices/{id}/#'],
  groups: [
    { name: 'presses', members: ['press-*'], publish: ['plant/presses/{id}/#'], subscribe: ['plant/presses/cmd/#'] },
  ],
  requests: ['devices/{id}/$certs/csr'],
  replies: ['devices/{id}/$certs/cert'],
  broadcast: ['$edge/ca/crl'],
})
const d1 = acl.forDevice('d1')
const press = acl.forDevice('press-7')

test('topic matching follows MQTT 3.1.1 §4.7', () => {
  const cases: [string, string, boolean][] = [
    ['a/#', 'a', true], // '#' matches the parent [MQTT-4.7.1-2]
    ['a/#', 'a/b/c', true],
    ['a/+', 'a/b', true],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a/', true], // an empty level is a level
    ['+/+', '/a', true],
    ['#', '$SYS/x', false], // [MQTT-4.7.2-1]
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true],
    ['a/b', 'a/b/', false],
  ]
  for (const [f, t, want] of cases) assert.equal(topicMatches(f, t), want, `${f} vs ${t}`)
})

test('a filter covers another only if it matches everything the other can', () => {
  const cases: [string, string, boolean][] = [
    ['devices/d1/#', 'devices/d1/#', true],
    ['devices/d1/#', 'devices/d1', true],
    ['devices/d1/#', 'devices/d1/+/temp', true],
    ['devices/d1/#', 'devices/d1//x', true],
    ['devices/d1/#', 'devices/+/temp', false],
    ['devices/d1/#', 'devices/#', false],
    ['devices/d1/#', '#', false],
    ['devices/d1/#', '+/+/#', false],
    ['devices/d1/#', '+/d1/#', false],
    ['devices/d1/#', 'devices/d1x/#', false],
    ['devices/d1/+', 'devices/d1/a/b', false],
    ['devices/d1/+', 'devices/d1/#', false],
    ['devices/+/x', 'devices/d1/x', true],
    ['#', '$SYS/#', false],
    ['+/#', '$share/g/devices/d1/#', false],
    ['$edge/ca/crl', '$edge/ca/crl', true],
    ['$edge/ca/crl', '$edge/ca/+', false],
  ]
  for (const [a, r, want] of cases) assert.equal(filterCovers(a, r), want, `${a} covers ${r}`)
})

test("a device publishes only inside its own space, whatever the topic's shape", () => {
  const cases: [string, 'allow' | 'deny' | 'request'][] = [
    ['devices/d1/temp', 'allow'],
    ['devices/d1', 'allow'],
    ['devices/d1/', 'allow'],
    ['devices/d1//deep//levels', 'allow'],
    [`devices/d1/${'x'.repeat(60_000)}`, 'allow'],
    ['devices/d2/temp', 'deny'],
    ['devices/d1x/temp', 'deny'],
    ['devices//d1/temp', 'deny'],
    ['/devices/d1/temp', 'deny'],
    ['devices', 'deny'],
    ['$SYS/broker/x', 'deny'],
    ['$edge/ca/crl', 'deny'],
    [`devices/d2/${'x'.repeat(60_000)}`, 'deny'],
    ['devices/d1/$certs/csr', 'request'],
    ['devices/d1/$certs/cert', 'deny'], // only the agent answers
    ['devices/d2/$certs/csr', 'deny'],
  ]
  for (const [topic, want] of cases) assert.equal(d1.publish(topic), want, topic.slice(0, 60))
})

test('a device subscribes only inside its own space: #, +/+/#, $SYS and other devices are refused', () => {
  const cases: [string, boolean][] = [
    ['devices/d1/#', true],
    ['devices/d1/+', true],
    ['devices/d1/+/+/x', true],
    ['devices/d1//x', true],
    ['devices/d1/$certs/cert', true],
    ['$edge/ca/crl', true],
    ['#', false],
    ['+/+/#', false],
    ['+/#', false],
    ['devices/#', false],
    ['devices/+/#', false],
    ['devices/+/temp', false],
    ['devices/d2/#', false],
    ['$SYS/#', false],
    ['$SYS/broker/clients', false],
    ['$share/g/devices/d1/#', false],
    ['$edge/#', false],
    ['/devices/d1/#', false],
  ]
  for (const [filter, want] of cases) assert.equal(d1.subscribe(filter), want, filter)
})

test('delivery is re-checked: a device receives only topics its subscriptions may match', () => {
  assert.equal(d1.receive('devices/d1/cmd'), true)
  assert.equal(d1.receive('$edge/ca/crl'), true)
  assert.equal(d1.receive('devices/d2/cmd'), false)
  assert.equal(d1.receive('$SYS/x/heartbeat'), false)
})

test('group grants add to the own space of the devices whose id matches', () => {
  assert.deepEqual(press.groups, ['presses'])
  assert.equal(press.publish('plant/presses/press-7/state'), 'allow')
  assert.equal(press.publish('plant/presses/press-8/state'), 'deny')
  assert.equal(press.subscribe('plant/presses/cmd/#'), true)
  assert.equal(press.subscribe('plant/presses/#'), false)
  assert.equal(d1.publish('plant/presses/d1/state'), 'deny', 'd1 is not a member')
  assert.equal(acl.forDevice('press-').groups.length, 1, '* matches the empty string')
  assert.equal(acl.forDevice('xpress-7').groups.length, 0, 'patterns are anchored')
})

test('reply topics are reserved to the agent for every client', () => {
  assert.equal(acl.reservedForAgent('devices/d9/$certs/cert'), true)
  assert.equal(acl.reservedForAgent('devices/d9/$certs/csr'), false)
  assert.equal(acl.reservedForAgent('devices/d9/cert'), false)
})

test('compile refuses invalid templates and request filters', () => {
  assert.throws(() => Acl.compile({ publish: ['devices/{id}/#/x'], subscribe: [] }), AclError)
  assert.throws(() => Acl.compile({ publish: ['devices/{id}+'], subscribe: [] }), AclError)
  assert.throws(() => Acl.compile({ publish: [], subscribe: [], requests: ['devices/+/csr'] }), AclError)
  assert.throws(() => Acl.compile({ publish: [], subscribe: [], broadcast: ['x/{id}'] }), AclError)
})

test('identities that would widen a template or break a topic level are refused (CVE-2017-7650)', () => {
  for (const bad of ['', 'a/b', 'a+', '#', 'x\u0000y', 'tab\tid', ' lead', 'x'.repeat(129), '\ud800']) {
    assert.notEqual(identityProblem(bad, 128), undefined, JSON.stringify(bad))
  }
  for (const ok of ['d1', 'press-7', 'urn:dev:1234', 'Ünïcödé', '$weird', 'a.b_c'])
    assert.equal(identityProblem(ok, 128), undefined, ok)
})
