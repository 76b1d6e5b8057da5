// Loop detection between agents (beacon.ts) and the 3.1.1 echo guard.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { composeBeacon, decodeBeacon, encodeBeacon, formsLoop } from '../../../src/bridge/beacon.js'
import { EchoGuard } from '../../../src/bridge/echo-guard.js'

test('an agent above us that lists us among its own upstreams forms a loop', () => {
  // A → B and B → A: A learns B's beacon, which (once B learned A's) lists A above B.
  const a0 = composeBeacon({ id: 'A', site: 'a', level: 2 }, [])
  const b1 = composeBeacon({ id: 'B', site: 'b', level: 3 }, [a0])
  assert.deepEqual(b1.above, ['A'])
  assert.ok(formsLoop('A', b1))
  const a1 = composeBeacon({ id: 'A', site: 'a', level: 2 }, [b1])
  assert.ok(formsLoop('B', a1), 'and B sees it too')
})

test('a longer cycle A → B → C → A is found by every member', () => {
  const c0 = composeBeacon({ id: 'C', site: 'c', level: 4 }, [])
  const b1 = composeBeacon({ id: 'B', site: 'b', level: 3 }, [c0])
  const a1 = composeBeacon({ id: 'A', site: 'a', level: 2 }, [b1])
  const c1 = composeBeacon({ id: 'C', site: 'c', level: 4 }, [a1])
  assert.ok(formsLoop('C', a1))
  const b2 = composeBeacon({ id: 'B', site: 'b', level: 3 }, [c1])
  assert.ok(formsLoop('B', c1))
  assert.ok(formsLoop('A', b2))
})

test('a plain chain and a diamond are not loops', () => {
  const top = composeBeacon({ id: 'T', site: 't', level: 4 }, [])
  const l3a = composeBeacon({ id: 'B1', site: 'b1', level: 3 }, [top])
  const l3b = composeBeacon({ id: 'B2', site: 'b2', level: 3 }, [top])
  const l2 = composeBeacon({ id: 'A', site: 'a', level: 2 }, [l3a, l3b])
  assert.deepEqual(l2.above, ['B1', 'T', 'B2'])
  assert.ok(!formsLoop('A', l3a))
  assert.ok(!formsLoop('A', l3b))
})

test('identities round-trip, and garbage decodes to nothing', () => {
  const id = composeBeacon({ id: 'x', site: 's', level: 2 }, [{ id: 'y', site: 't', level: 3, above: ['z'] }])
  assert.deepEqual(decodeBeacon(encodeBeacon(id)), id)
  assert.equal(decodeBeacon(Buffer.from('not json')), undefined)
  assert.equal(decodeBeacon(Buffer.from('{"above":[]}')), undefined)
  assert.equal(decodeBeacon(Buffer.alloc(0)), undefined)
})

test('the echo guard drops one returning copy per message sent, and forgets after its window', () => {
  let now = 0
  const g = new EchoGuard({ windowMs: 1_000, maxEntries: 100, now: () => now })
  g.sent('t', Buffer.from('1'))
  g.sent('t', Buffer.from('1'))
  assert.ok(g.isEcho('t', Buffer.from('1')))
  assert.ok(g.isEcho('t', Buffer.from('1')))
  assert.ok(!g.isEcho('t', Buffer.from('1')), 'a third copy is not ours')
  assert.ok(!g.isEcho('u', Buffer.from('1')), 'another topic is not an echo')
  g.sent('t', Buffer.from('2'))
  now = 2_000
  assert.ok(!g.isEcho('t', Buffer.from('2')), 'expired')
  assert.equal(g.size, 0)
})

test('the echo guard is bounded', () => {
  const g = new EchoGuard({ windowMs: 60_000, maxEntries: 10, now: () => 0 })
  for (let i = 0; i < 100; i++) g.sent(`t/${i}`, Buffer.from('x'))
  assert.equal(g.size, 10)
})
