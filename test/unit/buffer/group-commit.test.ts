// GroupCommit with injected timers: no real time passes in these tests.
//
// Glossary
//   FakeTimers | records scheduled callbacks; run() fires them, pending counts them
//   op(n)      | an operation that records whether it was executed or failed
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GroupCommit, type GroupCommitTimers } from '../../../src/buffer/group-commit.js'

class FakeTimers implements GroupCommitTimers {
  readonly scheduled = new Map<number, { fn: () => void; ms: number }>()
  #next = 1
  setTimeout(fn: () => void, ms: number): unknown {
    const h = this.#next++
    this.scheduled.set(h, { fn, ms })
    return h
  }
  clearTimeout(handle: unknown): void {
    this.scheduled.delete(handle as number)
  }
  get pending(): number {
    return this.scheduled.size
  }
  run(): void {
    const all = [...this.scheduled]
    this.scheduled.clear()
    for (const [, t] of all) t.fn()
  }
}

interface Op {
  n: number
  failed?: Error
  fail(err: Error): void
}
const op = (n: number): Op => ({
  n,
  fail(err) {
    this.failed = err
  },
})

test('executes a full batch at once, inside the enqueue that filled it', () => {
  const timers = new FakeTimers()
  const batches: number[][] = []
  const gc = new GroupCommit<Op>({ maxBatch: 3, windowMs: 2, timers, execute: (b) => batches.push(b.map((o) => o.n)) })
  gc.enqueue(op(1))
  gc.enqueue(op(2))
  assert.deepEqual(batches, [])
  assert.equal(timers.pending, 1)
  gc.enqueue(op(3))
  assert.deepEqual(batches, [[1, 2, 3]])
  assert.equal(timers.pending, 0, 'the window timer is cleared by the full batch')
})

test('executes a partial batch when its window ends, with the configured window', () => {
  const timers = new FakeTimers()
  const batches: number[][] = []
  const gc = new GroupCommit<Op>({ maxBatch: 10, windowMs: 7, timers, execute: (b) => batches.push(b.map((o) => o.n)) })
  gc.enqueue(op(1))
  gc.enqueue(op(2))
  assert.deepEqual(
    [...timers.scheduled.values()].map((t) => t.ms),
    [7],
    'one timer per batch, not per operation',
  )
  timers.run()
  assert.deepEqual(batches, [[1, 2]])
  assert.equal(gc.pending, 0)
})

test('an idle group commit has no timer', () => {
  const timers = new FakeTimers()
  const gc = new GroupCommit<Op>({ maxBatch: 4, windowMs: 2, timers, execute: () => {} })
  assert.equal(timers.pending, 0)
  gc.enqueue(op(1))
  timers.run()
  assert.equal(timers.pending, 0)
  gc.flush()
  assert.equal(timers.pending, 0)
})

test('never executes more than maxBatch operations at once', () => {
  const timers = new FakeTimers()
  const sizes: number[] = []
  const gc = new GroupCommit<Op>({ maxBatch: 7, windowMs: 2, timers, execute: (b) => sizes.push(b.length) })
  for (let i = 0; i < 100; i++) gc.enqueue(op(i))
  gc.flush()
  assert.ok(
    sizes.every((s) => s <= 7),
    `batch sizes ${sizes.join(',')}`,
  )
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    100,
  )
  assert.equal(sizes.filter((s) => s === 7).length, 14)
})

test('fails every operation of a batch whose execute throws', () => {
  const timers = new FakeTimers()
  const gc = new GroupCommit<Op>({
    maxBatch: 2,
    windowMs: 2,
    timers,
    execute: () => {
      throw new Error('boom')
    },
  })
  const a = op(1)
  const b = op(2)
  gc.enqueue(a)
  gc.enqueue(b)
  assert.equal(a.failed?.message, 'boom')
  assert.equal(b.failed?.message, 'boom')
})

test('operations enqueued while a batch executes go into the next batch, not a nested one', () => {
  const timers = new FakeTimers()
  const batches: number[][] = []
  let depth = 0
  let maxDepth = 0
  const gc: GroupCommit<Op> = new GroupCommit<Op>({
    maxBatch: 2,
    windowMs: 2,
    timers,
    execute: (b) => {
      depth++
      maxDepth = Math.max(maxDepth, depth)
      batches.push(b.map((o) => o.n))
      // A listener appending from inside a commit, enough to fill a batch.
      if (b[0]?.n === 1) {
        gc.enqueue(op(10))
        gc.enqueue(op(11))
      }
      depth--
    },
  })
  gc.enqueue(op(1))
  gc.enqueue(op(2))
  assert.equal(maxDepth, 1)
  assert.deepEqual(batches, [
    [1, 2],
    [10, 11],
  ])
})

test('abort fails what is pending and leaves no timer', () => {
  const timers = new FakeTimers()
  let executed = 0
  const gc = new GroupCommit<Op>({ maxBatch: 5, windowMs: 2, timers, execute: () => void executed++ })
  const a = op(1)
  gc.enqueue(a)
  gc.abort(new Error('stopped'))
  assert.equal(a.failed?.message, 'stopped')
  assert.equal(timers.pending, 0)
  assert.equal(executed, 0)
})

test('rejects nonsense options', () => {
  assert.throws(() => new GroupCommit<Op>({ maxBatch: 0, windowMs: 1, execute: () => {} }), RangeError)
  assert.throws(() => new GroupCommit<Op>({ maxBatch: 1, windowMs: -1, execute: () => {} }), RangeError)
})

test('holdMs stretches the window of a batch while the next fsync may not start, never shortens it', () => {
  const timers = new FakeTimers()
  const batches: number[][] = []
  let hold = 7
  const gc = new GroupCommit<Op>({
    maxBatch: 3,
    windowMs: 2,
    timers,
    holdMs: () => hold,
    execute: (b) => void batches.push(b.map((o) => o.n)),
  })
  gc.enqueue(op(1))
  gc.enqueue(op(2))
  assert.deepEqual(
    [...timers.scheduled.values()].map((t) => t.ms),
    [7],
    'one timer, for the hold',
  )
  timers.run()
  assert.deepEqual(batches, [[1, 2]])
  hold = 0
  gc.enqueue(op(3))
  assert.deepEqual(
    [...timers.scheduled.values()].map((t) => t.ms),
    [2],
    'no hold: the window',
  )
  timers.run()
  hold = 50
  // A full batch still commits at once, hold or not.
  gc.enqueue(op(4))
  gc.enqueue(op(5))
  gc.enqueue(op(6))
  assert.deepEqual(batches, [[1, 2], [3], [4, 5, 6]])
  assert.equal(timers.pending, 0)
})
