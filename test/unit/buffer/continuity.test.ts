// Run continuity (src/buffer/continuity.ts): what the next start concludes
// from the run record and the store as found. The power-cut tests check the
// same on a disk that really lost its unsynced writes.
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { assess, RUN_FILE_NAME, RunContinuity } from '../../../src/buffer/continuity.js'
import { SqliteStore } from '../../../src/buffer/index.js'
import { captureLogger, silentLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const record = (
  o: Partial<{ state: 'running' | 'clean'; ackedHighId: number; rows: number; durability: 'full' | 'normal' | 'off' }>,
) => ({
  v: 1 as const,
  state: o.state ?? 'running',
  durability: o.durability ?? 'normal',
  startedAt: 1_000,
  savedAt: 2_000,
  ackedHighId: o.ackedHighId ?? 0,
  rows: o.rows ?? 0,
})

test('assess: acknowledged ids the store does not reach were lost; ids it reaches were not', () => {
  assert.deepEqual(assess(record({ ackedHighId: 120 }), { nextId: 101, quarantined: false }), {
    durability: 'normal',
    count: 20,
    ids: { from: 101, to: 120 },
    after: 2_000,
    cause: 'rolled-back',
  })
  assert.equal(assess(record({ ackedHighId: 100 }), { nextId: 101, quarantined: false }), null)
  assert.equal(assess(record({ ackedHighId: 100, durability: 'full' }), { nextId: 4197, quarantined: false }), null)
})

test('assess: a store file lost or quarantined reports the rows it held at the last save', () => {
  assert.deepEqual(assess(record({ ackedHighId: 500, rows: 300 }), { nextId: 1, quarantined: false }), {
    durability: 'normal',
    count: 300,
    ids: null,
    after: 2_000,
    cause: 'store-lost',
  })
  assert.equal(assess(record({ ackedHighId: 500, rows: 0 }), { nextId: 1, quarantined: true }), null, 'it held nothing')
})

test('a run record: unclean end and loss logged at start, clean after end()', (t) => {
  const dir = tmpDir(t)
  const { logger, lines } = captureLogger()
  const first = new RunContinuity({ dataDir: dir, durability: 'normal', logger, now: () => 5_000 })
  assert.equal(first.storeExisted, false)
  assert.deepEqual(first.begin({ nextId: 1, quarantined: false }, 0), {
    ended: 'first',
    durability: null,
    startedAt: null,
    loss: null,
  })
  first.noteAcked(10)
  first.noteAcked(7)
  first.end(10)
  assert.equal(JSON.parse(readFileSync(join(dir, RUN_FILE_NAME), 'utf8')).state, 'clean')

  const second = new RunContinuity({ dataDir: dir, durability: 'normal', logger, now: () => 6_000 })
  assert.equal(second.storeExisted, true)
  assert.equal(second.begin({ nextId: 11, quarantined: false }, 10).ended, 'clean')
  second.noteAcked(40) // then the power goes: no end(); simulate the last periodic save
  writeFileSync(
    join(dir, RUN_FILE_NAME),
    JSON.stringify({ ...record({ ackedHighId: 40, rows: 40 }), startedAt: 6_000 }),
  )

  const third = new RunContinuity({ dataDir: dir, durability: 'normal', logger, now: () => 7_000 })
  const last = third.begin({ nextId: 31, quarantined: false }, 30)
  assert.equal(last.ended, 'unclean')
  assert.deepEqual(last.loss?.ids, { from: 31, to: 40 })
  const line = lines.find((l) => l['reason'] === 'power-loss')
  assert.ok(line !== undefined && line.level === 50, 'an error line with reason power-loss')
  assert.equal(line['count'], 10)
})

test('SqliteStore counts a detected loss as a power-loss drop and reports lastRun', async (t) => {
  const dataDir = tmpDir(t)
  const a = new SqliteStore({
    dataDir,
    logger: silentLogger(),
    durability: 'normal',
    minFreeBytes: 0,
    maxBytes: 1 << 20,
  })
  await a.start(AbortSignal.timeout(5_000))
  await a.append({ queue: 'up', topic: 't', payload: Buffer.from('x'), qos: 1 })
  await a.stop()
  // A previous run that acknowledged ids this file never got (as a cut in 'normal' leaves it).
  const file = join(dataDir, RUN_FILE_NAME)
  assert.ok(existsSync(file))
  writeFileSync(file, JSON.stringify(record({ ackedHighId: 25, rows: 25 })))
  const b = new SqliteStore({
    dataDir,
    logger: silentLogger(),
    durability: 'normal',
    minFreeBytes: 0,
    maxBytes: 1 << 20,
  })
  await b.start(AbortSignal.timeout(5_000))
  t.after(() => b.stop())
  const s = b.stats()
  assert.equal(s.lastRun?.ended, 'unclean')
  assert.deepEqual(s.lastRun?.loss?.ids, { from: 2, to: 25 })
  assert.equal(s.drops.byReason['power-loss'], 24)
})
