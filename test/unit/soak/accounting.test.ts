// The soak's books (soak/lib/accounting.ts) and its drop totals across agent
// processes (soak/lib/drops.ts): pure code that decides whether `npm run soak` passes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DeliveryTracker, closeAccounts } from '../../../soak/lib/accounting.js'
import { DropTotals, readDropCounts } from '../../../soak/lib/drops.js'

function delivered(entries: readonly [string, number][]): DeliveryTracker {
  const t = new DeliveryTracker()
  for (const [id, seq] of entries) t.observe(id, seq)
  return t
}

test('books close exactly: acknowledged = delivered + dropped, duplicates counted once', () => {
  const d = delivered([
    ['a/telemetry', 1],
    ['a/telemetry', 2],
    ['a/telemetry', 2],
    ['a/telemetry', 4],
  ])
  const r = closeAccounts([{ id: 'a/telemetry', sent: 4, unacked: [] }], d, 1, 0)
  assert.equal(r.acknowledged, 4)
  assert.equal(r.deliveredUnique, 3)
  assert.equal(r.duplicates, 1)
  assert.equal(r.missing, 1)
  assert.equal(r.verdict, 'exact')
})

test('an uncounted loss leaves the books open; a tolerance makes them approximate', () => {
  const d = delivered([['a/telemetry', 1]])
  const sent = [{ id: 'a/telemetry', sent: 3, unacked: [] }]
  assert.equal(closeAccounts(sent, d, 1, 0).verdict, 'open')
  assert.equal(closeAccounts(sent, d, 1, 1).difference, 1)
  assert.equal(closeAccounts(sent, d, 1, 1).verdict, 'approximate')
})

test('out of order, phantom numbers and unknown streams open the books whatever the tolerance', () => {
  const sent = [{ id: 'a/telemetry', sent: 3, unacked: [] }]
  const late = delivered([
    ['a/telemetry', 2],
    ['a/telemetry', 1],
    ['a/telemetry', 3],
  ])
  assert.equal(closeAccounts(sent, late, 0, 100).outOfOrder, 1)
  assert.equal(closeAccounts(sent, late, 0, 100).verdict, 'open')
  const phantom = delivered([
    ['a/telemetry', 1],
    ['a/telemetry', 2],
    ['a/telemetry', 3],
    ['a/telemetry', 9],
    ['b/telemetry', 1],
  ])
  assert.equal(closeAccounts(sent, phantom, 0, 100).phantom, 2)
  assert.equal(closeAccounts(sent, phantom, 0, 100).verdict, 'open')
})

test('a message never acknowledged to its device is not expected upstream, but counted when it arrives', () => {
  const d = delivered([
    ['a/events', 1],
    ['a/events', 2],
  ])
  const r = closeAccounts([{ id: 'a/events', sent: 3, unacked: [2, 3] }], d, 0, 0)
  assert.equal(r.acknowledged, 1)
  assert.equal(r.deliveredUnacked, 1)
  assert.equal(r.missing, 0)
  assert.equal(r.verdict, 'exact')
})

const status = (evicted: number, expired: number, bridge: Record<string, number> = {}) => ({
  buffer: {
    drops: {
      byReason: { 'evicted-full': evicted, expired },
      byRule: { telemetry: { 'evicted-full': evicted, expired } },
    },
  },
  upstreams: [{ drops: { ...bridge, 'evicted-full': evicted } }],
})

test('drop counts that restart with each process are summed over lifetimes, and the bridge does not count buffer drops twice', () => {
  const totals = new DropTotals()
  totals.observe(readDropCounts(status(5, 1)))
  totals.observe(readDropCounts(status(7, 2, { 'rate-limited': 1 })))
  totals.endOfLife()
  totals.observe(readDropCounts(status(3, 0)))
  const t = totals.total()
  assert.equal(t.byReason['evicted-full'], 10)
  assert.equal(t.byReason.expired, 2)
  assert.deepEqual(t.bridge, { 'rate-limited': 1 })
  assert.equal(t.byRule.telemetry?.['evicted-full'], 10)
  assert.equal(totals.durable, false)
  assert.equal(totals.unobservedEnds, 1)
})

test('durable drop totals (buffer.drops.sinceCreated) are taken as they are, across a kill', () => {
  const durable = (evicted: number, perProcess: number) => ({
    buffer: {
      drops: {
        byReason: { 'evicted-full': perProcess },
        byRule: { telemetry: { 'evicted-full': perProcess } },
        sinceCreated: { byReason: { 'evicted-full': evicted }, byRule: { telemetry: { 'evicted-full': evicted } } },
      },
    },
    upstreams: [{ drops: { 'evicted-full': perProcess } }],
  })
  const totals = new DropTotals()
  totals.observe(readDropCounts(durable(40, 40)))
  totals.endOfLife() // kill -9: the 5 drops after the last reading are in the next process's durable totals
  totals.observe(readDropCounts(durable(45, 0)))
  assert.equal(totals.durable, true)
  assert.equal(totals.unobservedEnds, 0)
  assert.equal(totals.total().byRule.telemetry?.['evicted-full'], 45)
  assert.deepEqual(totals.total().bridge, {}, 'buffer reasons the bridge echoes are not added twice')
  totals.endOfLife() // the final stop: the totals are read after it
  assert.equal(totals.total().byRule.telemetry?.['evicted-full'], 45)
  // An agent whose store has no durable totals (sinceCreated null) falls back to per-process counts.
  assert.equal(
    readDropCounts({ buffer: { drops: { byReason: {}, byRule: {}, sinceCreated: null } } }).sinceStoreCreated,
    false,
  )
})

test('with durable drop counts, dropped copies of resent messages make the books approximate, a loss never', () => {
  const d = delivered([
    ['a/telemetry', 1],
    ['a/telemetry', 3],
  ])
  // 2 was in flight at a lost connection and resent: the agent held two copies and dropped one (and 3 once).
  const resent = [{ id: 'a/telemetry', sent: 3, unacked: [], resent: [2] }]
  assert.equal(closeAccounts(resent, d, 2, 0, true).possibleCopies, 1)
  assert.equal(closeAccounts(resent, d, 2, 0, true).difference, -1)
  assert.equal(closeAccounts(resent, d, 2, 0, true).verdict, 'approximate')
  assert.equal(closeAccounts(resent, d, 3, 0, true).verdict, 'open', 'more drops than copies could explain')
  // Missing more than was dropped is a loss, whatever the tolerance, once the counts are durable.
  assert.equal(closeAccounts(resent, d, 0, 5, true).verdict, 'open')
  assert.equal(closeAccounts(resent, d, 0, 5, false).verdict, 'approximate')
})
