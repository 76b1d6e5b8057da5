// The client ACL: who gets which rules, %u/%c/{id} substitution, read and
// deny, and Mosquitto's acl_file.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AclError } from '../../../src/local-broker/acl.js'
import { ClientAcl, filtersOverlap, parseMosquittoAcl } from '../../../src/local-broker/client-acl.js'

test('is off (everything allowed, $ topics too) until a rule is configured', () => {
  const r = ClientAcl.off().forClient(undefined, 'c1')
  assert.equal(ClientAcl.off().enabled, false)
  assert.equal(r.publish('$aws/things/x'), true)
  assert.equal(r.subscribe('#'), true)
  assert.equal(r.receive('a/b'), true)
})

test('users, groups and patterns, with %u, {id} and %c; deny by default once on', () => {
  const acl = ClientAcl.compile({
    users: [{ name: 'plc-1', publish: ['plant/line1/#'], subscribe: ['plant/line1/cmd/#'] }],
    groups: [{ name: 'hmis', members: ['hmi-*'], read: ['plant/#'], publish: ['plant/+/cmd/%u'] }],
    patterns: [{ publish: ['clients/%c/#', 'users/{id}/#'], subscribe: ['clients/%c/#'] }],
  })
  const plc = acl.forClient('plc-1', 'c-plc')
  assert.equal(plc.publish('plant/line1/temp'), true)
  assert.equal(plc.publish('plant/line2/temp'), false)
  assert.equal(plc.publish('clients/c-plc/x'), true)
  assert.equal(plc.publish('users/plc-1/x'), true)
  assert.equal(plc.subscribe('plant/line1/cmd/+'), true)
  assert.equal(plc.subscribe('plant/#'), false, 'not covered by a subscribe filter and no read rule')
  const hmi = acl.forClient('hmi-7', 'c-hmi')
  assert.equal(hmi.publish('plant/line1/cmd/hmi-7'), true)
  assert.equal(hmi.publish('plant/line1/cmd/hmi-8'), false)
  assert.equal(hmi.subscribe('#'), true, 'overlaps a read filter: allowed, deliveries filtered')
  assert.equal(hmi.receive('plant/line1/temp'), true)
  assert.equal(hmi.receive('other/x'), false)
  assert.equal(hmi.subscribe('other/#'), false)
  const anon = acl.forClient(undefined, 'c-anon')
  assert.equal(anon.publish('plant/line1/temp'), false)
  assert.equal(anon.publish('clients/c-anon/x'), true, 'patterns without %u apply to anonymous clients')
  assert.equal(anon.publish('users//x'), false)
})

test('a user name or client id with / + # gets no rule that uses it (CVE-2017-7650)', () => {
  const acl = ClientAcl.compile({ patterns: [{ publish: ['clients/%c/#', 'u/%u/#'] }] })
  assert.equal(acl.forClient('a', '#').publish('clients/x/y'), false)
  assert.equal(acl.forClient('+', 'c').publish('u/x/y'), false)
  assert.equal(acl.forClient('a/b', 'c').publish('u/a/b/y'), false)
})

test('deny wins over grants for publish, overlapping subscriptions and delivery', () => {
  const acl = ClientAcl.compile({ users: [{ name: 'u', publish: ['#'], subscribe: ['#'], deny: ['secret/#'] }] })
  const r = acl.forClient('u', 'c')
  assert.equal(r.publish('secret/x'), false)
  assert.equal(r.publish('open/x'), true)
  assert.equal(r.subscribe('secret/+'), false)
  assert.equal(r.subscribe('#'), false, '# overlaps the denied space')
  assert.equal(r.subscribe('open/#'), true)
  assert.equal(r.receive('secret/a'), false)
})

test('refuses invalid filters with EDGE_ERR_BROKER_ACL_INVALID naming where', () => {
  assert.throws(
    () => ClientAcl.compile({ users: [{ name: 'u', publish: ['a/#/b'] }] }),
    (e: unknown) =>
      e instanceof AclError && e.code === 'EDGE_ERR_BROKER_ACL_INVALID' && /users\[0\] \(u\)\.publish/.test(e.message),
  )
})

test('filtersOverlap: wildcards, lengths and $ topics', () => {
  const cases: [string, string, boolean][] = [
    ['a/+', 'a/b', true],
    ['a/#', 'b/#', false],
    ['a/+/c', 'a/b/+', true],
    ['a/b', 'a/b/c', false],
    ['#', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true],
    ['a/#', 'a', true],
  ]
  for (const [a, b, want] of cases) assert.equal(filtersOverlap(a, b), want, `${a} ~ ${b}`)
})

test("imports Mosquitto's acl_file: anonymous topics, users, patterns, access kinds", () => {
  const text = [
    '# comment',
    'topic read public/#',
    '',
    'user alice',
    'topic readwrite alice/#',
    'topic write  cmd/alice',
    'topic deny alice/secret',
    'topic plain/topic with space',
    'user bob',
    'topic read bob/#',
    'pattern write clients/%c/out',
  ].join('\n')
  const acl = ClientAcl.compile(parseMosquittoAcl(text))
  const alice = acl.forClient('alice', 'ca')
  assert.equal(alice.publish('alice/x'), true)
  assert.equal(alice.publish('cmd/alice'), true)
  assert.equal(alice.publish('alice/secret'), false)
  assert.equal(alice.publish('plain/topic with space'), true)
  assert.equal(alice.receive('alice/x'), true)
  assert.equal(alice.receive('cmd/alice'), false)
  assert.equal(alice.publish('clients/ca/out'), true)
  const bob = acl.forClient('bob', 'cb')
  assert.equal(bob.publish('bob/x'), false)
  assert.equal(bob.receive('bob/x'), true)
  const anon = acl.forClient(undefined, 'cn')
  assert.equal(anon.receive('public/a'), true)
  assert.equal(anon.publish('public/a'), false)
  assert.throws(() => parseMosquittoAcl('topic read a/#/b'), /line 1/)
  assert.throws(() => parseMosquittoAcl('\nauth_plugin x'), /line 2.*unknown keyword/)
})
