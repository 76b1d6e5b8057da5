// WalSync against a scripted fs: when fsync runs, who shares it, what a
// failure does, and that a replaced -wal file is reopened. The real-fs path
// is covered by database.test.ts and every durability test of the store.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type FsOps, WalSync } from '../../../src/storage/wal-sync.js'
import { FSYNC_BUCKETS_SEC, FsyncTimings } from '../../../src/storage/fsync-timings.js'
import { silentLogger } from '../../helpers/buffer-support.js'

type Cb = (err: NodeJS.ErrnoException | null) => void

function scriptedFs() {
  const fsyncs: Array<{ fd: number; done: Cb }> = []
  const opened: number[] = []
  const closed: number[] = []
  let nextFd = 10
  let inodeAtPath = 1
  const inodeOfFd = new Map<number, number>()
  let size = 0
  const fs: FsOps = {
    open: (_path, cb) => {
      const fd = nextFd++
      opened.push(fd)
      inodeOfFd.set(fd, inodeAtPath)
      queueMicrotask(() => cb(null, fd))
    },
    fsync: (fd, cb) => {
      fsyncs.push({ fd, done: cb })
    },
    fstat: (fd, cb) => queueMicrotask(() => cb(null, { ino: inodeOfFd.get(fd) ?? 0, size, mtimeMs: size })),
    stat: (_path, cb) => queueMicrotask(() => cb(null, { ino: inodeAtPath, size, mtimeMs: size })),
    close: (fd, cb) => {
      closed.push(fd)
      cb(null)
    },
  }
  return {
    fs,
    fsyncs,
    opened,
    closed,
    write: () => void size++,
    replaceFile: () => void inodeAtPath++,
  }
}

const turns = async (n = 5): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r))
}

test('a sync resolves only when its fsync completes; callers during it share the next one', async (t) => {
  const f = scriptedFs()
  const wal = new WalSync({ walPath: '/x-wal', logger: silentLogger(), idleSyncMs: 0, fs: f.fs })
  t.after(() => wal.close())
  const settled: string[] = []
  const a = wal.sync().then(() => settled.push('a'))
  await turns()
  assert.equal(f.fsyncs.length, 1)
  const b = wal.sync().then(() => settled.push('b'))
  const c = wal.sync().then(() => settled.push('c'))
  await turns()
  assert.equal(f.fsyncs.length, 1, 'b and c wait: the running fsync may predate their commits')
  assert.deepEqual(settled, [])
  f.fsyncs[0]?.done(null)
  await a
  await turns()
  assert.equal(f.fsyncs.length, 2, 'one more fsync for b and c together')
  assert.deepEqual(settled, ['a'])
  f.fsyncs[1]?.done(null)
  await Promise.all([b, c])
  assert.deepEqual(settled, ['a', 'b', 'c'])
  assert.equal(wal.syncs, 2)
  assert.deepEqual(f.opened, [10], 'one descriptor for all of it')
})

test('a failed fsync rejects its callers and the descriptor is never trusted again', async (t) => {
  const f = scriptedFs()
  const wal = new WalSync({ walPath: '/x-wal', logger: silentLogger(), idleSyncMs: 0, fs: f.fs })
  t.after(() => wal.close())
  const a = wal.sync()
  await turns()
  f.fsyncs[0]?.done(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }))
  await assert.rejects(a, /fsync of \/x-wal failed: EIO/)
  assert.deepEqual(f.closed, [10])
  const b = wal.sync()
  await turns()
  assert.equal(f.fsyncs[1]?.fd, 11, 'reopened')
  f.fsyncs[1]?.done(null)
  await b
})

test('a -wal file replaced at its path is reopened before the next fsync', async (t) => {
  const f = scriptedFs()
  const wal = new WalSync({ walPath: '/x-wal', logger: silentLogger(), idleSyncMs: 0, fs: f.fs })
  t.after(() => wal.close())
  const a = wal.sync()
  await turns()
  f.fsyncs[0]?.done(null)
  await a
  f.replaceFile()
  const b = wal.sync()
  await turns()
  assert.equal(f.fsyncs[1]?.fd, 11)
  assert.deepEqual(f.closed, [10])
  f.fsyncs[1]?.done(null)
  await b
})

test('writes nobody awaits are synced by the idle timer, and only when the WAL changed', async (t) => {
  const f = scriptedFs()
  const wal = new WalSync({ walPath: '/x-wal', logger: silentLogger(), idleSyncMs: 5, fs: f.fs })
  t.after(() => wal.close())
  f.write()
  const deadline = Date.now() + 5_000
  while (f.fsyncs.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  assert.equal(f.fsyncs.length, 1, 'the change was synced')
  f.fsyncs[0]?.done(null)
  // Many more timer periods with no change: no more fsyncs.
  const until = Date.now() + 100
  while (Date.now() < until) await new Promise((r) => setTimeout(r, 5))
  assert.equal(f.fsyncs.length, 1)
})

test('close() refuses new syncs and closes the descriptor after the running fsync', async () => {
  const f = scriptedFs()
  const wal = new WalSync({ walPath: '/x-wal', logger: silentLogger(), idleSyncMs: 0, fs: f.fs })
  const a = wal.sync()
  await turns()
  wal.close()
  await assert.rejects(wal.sync(), /closed/)
  assert.deepEqual(f.closed, [])
  f.fsyncs[0]?.done(null)
  await a
  assert.deepEqual(f.closed, [10])
})

/** A clock and timers that move only when the test says so. */
function scriptedClock() {
  let now = 0
  let nextId = 1
  const due = new Map<number, { at: number; fn: () => void }>()
  return {
    now: () => now,
    timers: {
      setTimeout: (fn: () => void, ms: number): unknown => {
        const id = nextId++
        due.set(id, { at: now + ms, fn })
        return id
      },
      clearTimeout: (h: unknown) => void due.delete(h as number),
    },
    /** Moves to `t` and fires the timers due by then. */
    moveTo(t: number): void {
      now = t
      for (const [id, d] of [...due]) {
        if (d.at > now) continue
        due.delete(id)
        d.fn()
      }
    },
  }
}

/**
 * A steady caller: one sync every `everyMs` for `seconds`, each fsync taking `fsyncMs`, all on the scripted clock.
 * Returns when every fsync started, and for every call when it was made and resolved, and which fsyncs had completed
 * by then.
 */
async function steadyLoad(minIntervalMs: number, everyMs: number, fsyncMs: number, seconds: number) {
  const f = scriptedFs()
  const clock = scriptedClock()
  const wal = new WalSync({
    walPath: '/x-wal',
    logger: silentLogger(),
    idleSyncMs: 0,
    fs: f.fs,
    minIntervalMs,
    now: clock.now,
    timers: clock.timers,
  })
  const starts: number[] = []
  const ends: number[] = []
  const calls: Array<{ at: number; resolvedAt: number | null; coveredBy: number | null }> = []
  for (let t = 0; t <= seconds * 1000 + 50; t++) {
    clock.moveTo(t)
    // fsyncs complete after fsyncMs of scripted time.
    for (let i = ends.length; i < f.fsyncs.length; i++) {
      if (starts[i] === undefined) starts[i] = t
      if (t - (starts[i] as number) < fsyncMs) break
      ends[i] = t
      f.fsyncs[i]?.done(null)
    }
    await turns(3)
    if (t < seconds * 1000 && t % everyMs === 0) {
      const call: (typeof calls)[number] = { at: t, resolvedAt: null, coveredBy: null }
      calls.push(call)
      void wal.sync().then(() => {
        call.resolvedAt = clock.now()
        // The fsync that covers the call: the first to start at or after the call and complete before it resolved.
        const i = starts.findIndex((s, j) => s >= call.at && ends[j] !== undefined)
        call.coveredBy = i < 0 ? null : i
      })
    }
    await turns(3)
    for (let i = starts.length; i < f.fsyncs.length; i++) starts[i] = t
  }
  wal.close()
  return { starts, calls }
}

for (const [rate, everyMs] of [
  [200, 5],
  [2000, 1],
] as const) {
  test(`at a steady ${rate} syncs/s the fsync rate stays within the bound and no caller resolves before its fsync`, async () => {
    const seconds = 3
    const { starts, calls } = await steadyLoad(10, everyMs, 2, seconds)
    for (let s = 0; s < seconds; s++) {
      const n = starts.filter((at) => at >= s * 1000 && at < (s + 1) * 1000).length
      assert.ok(n <= 100, `second ${s}: ${n} fsyncs, more than 100`)
      assert.ok(n >= 50, `second ${s}: ${n} fsyncs: the callers were not served`)
    }
    for (let i = 1; i < starts.length; i++) {
      assert.ok(
        (starts[i] as number) - (starts[i - 1] as number) >= 10,
        `fsync ${i} began too soon after the one before`,
      )
    }
    assert.equal(calls.length, seconds * (1000 / everyMs))
    for (const c of calls) {
      assert.notEqual(c.resolvedAt, null, `the call at ${c.at} ms never resolved`)
      assert.notEqual(c.coveredBy, null, `the call at ${c.at} ms resolved before an fsync that began after it`)
      // Wait for the running fsync, the rest of the interval, then its own fsync: bounded, whatever the rate.
      assert.ok((c.resolvedAt as number) - c.at <= 10 + 2 * 2, `the call at ${c.at} ms waited ${c.resolvedAt} ms`)
    }
  })
}

test('an idle WAL syncs at once: the bound delays only callers that follow an fsync closely', async () => {
  const { starts, calls } = await steadyLoad(10, 50, 2, 1)
  assert.equal(starts.length, calls.length, 'one fsync per call at 20 calls/s')
  for (const [i, c] of calls.entries()) {
    assert.equal(starts[i], c.at, 'started at once')
    assert.equal(c.resolvedAt, c.at + 2)
  }
})

test('close() serves callers waiting for the interval at once', async () => {
  const f = scriptedFs()
  const clock = scriptedClock()
  const wal = new WalSync({
    walPath: '/x-wal',
    logger: silentLogger(),
    idleSyncMs: 0,
    fs: f.fs,
    minIntervalMs: 1000,
    now: clock.now,
    timers: clock.timers,
  })
  const a = wal.sync()
  await turns()
  f.fsyncs[0]?.done(null)
  await a
  const b = wal.sync()
  await turns()
  assert.equal(f.fsyncs.length, 1, 'b waits for the interval')
  wal.close()
  await turns()
  assert.equal(f.fsyncs.length, 2, 'no waiting once closing')
  f.fsyncs[1]?.done(null)
  await b
  assert.deepEqual(f.closed, [10])
})

test('fsync durations land in their buckets, bounds inclusive', () => {
  const t = new FsyncTimings()
  for (const ms of [0, 1, 1.0001, 10, 999, 2500, 60_000]) t.record(ms)
  const h = t.snapshot()
  assert.deepEqual(h.bounds, FSYNC_BUCKETS_SEC)
  const at = (le: number): number => h.counts[FSYNC_BUCKETS_SEC.indexOf(le)]!
  assert.equal(at(0.001), 2, '0 and exactly 1 ms')
  assert.equal(at(0.0025), 1, 'just above 1 ms')
  assert.equal(at(0.01), 1)
  assert.equal(at(1), 1, '999 ms')
  assert.equal(at(2.5), 1, 'exactly 2.5 s')
  assert.equal(h.counts[FSYNC_BUCKETS_SEC.length], 1, 'a minute: above every bound')
  assert.equal(h.count, 7)
  assert.equal(h.maxSec, 60)
  assert.ok(Math.abs(h.sumSec - 63.5110001) < 1e-9)
})

test('a stalling fsync is timed and warned about, at most once a minute with the count of the others', async (t) => {
  const f = scriptedFs()
  const clock = scriptedClock()
  const warnings: Array<Record<string, unknown>> = []
  const logger = silentLogger()
  logger.warn = (obj: Record<string, unknown>) => void warnings.push(obj)
  const wal = new WalSync({ walPath: '/x-wal', logger, idleSyncMs: 0, fs: f.fs, now: clock.now, timers: clock.timers })
  t.after(() => wal.close())
  /** One sync whose fsync takes `ms` of scripted time. */
  const syncTaking = async (ms: number): Promise<void> => {
    const done = wal.sync()
    await turns()
    clock.moveTo(clock.now() + ms)
    f.fsyncs.at(-1)?.done(null)
    await done
  }
  await syncTaking(3)
  await syncTaking(1_500)
  assert.equal(warnings.length, 1, 'the first stall is reported at once')
  assert.equal(warnings[0]?.['fsyncMs'], 1_500)
  assert.equal(warnings[0]?.['slowFsyncs'], 1)
  await syncTaking(2_000)
  await syncTaking(999)
  assert.equal(warnings.length, 1, 'within the minute: counted, not logged')
  clock.moveTo(clock.now() + 60_000)
  await syncTaking(4_000)
  assert.equal(warnings.length, 2)
  assert.equal(warnings[1]?.['slowFsyncs'], 2, 'the one held back and this one')
  const h = wal.durations
  assert.equal(h.count, 5)
  assert.equal(h.maxSec, 4)
  assert.equal(h.counts[FSYNC_BUCKETS_SEC.indexOf(0.005)], 1, 'the 3 ms one')
})
