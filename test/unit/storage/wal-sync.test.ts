// WalSync against a scripted fs: when fsync runs, who shares it, what a
// failure does, and that a replaced -wal file is reopened. The real-fs path
// is covered by database.test.ts and every durability test of the store.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type FsOps, WalSync } from '../../../src/storage/wal-sync.js'
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
