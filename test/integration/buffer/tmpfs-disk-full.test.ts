// Real ENOSPC on a 2 MiB tmpfs. Needs root (or
// CAP_SYS_ADMIN) to mount; skipped with the reason otherwise.
//
// Glossary
//   mountTmpfs | mounts a size-capped tmpfs on a fresh dir, unmounted and removed after the test
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import { BufferError, type BufferHealth, SqliteStore } from '../../../src/buffer/index.js'
import { captureLogger, eventMatching } from '../../helpers/buffer-support.js'

function mountTmpfs(t: TestContext, size: string): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'edge-buffer-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err) {
    rmdirSync(dir)
    t.skip(`cannot mount tmpfs: ${(err as Error).message.split('\n')[0] ?? ''}`)
    return null
  }
  t.after(() => {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' })
    } catch {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' })
    }
    rmdirSync(dir)
  })
  return dir
}

const payload = Buffer.alloc(4096, 0x65)

test('real ENOSPC: typed retryable rejections, nothing acknowledged lost, recovery when space returns', async (t) => {
  const dir = mountTmpfs(t, '2m')
  if (dir === null) return
  const { logger, lines } = captureLogger('info')
  const store = new SqliteStore({
    dataDir: dir,
    logger,
    maxBytes: 100 << 20,
    minFreeBytes: 0,
    diskFullRetryMs: 50,
    maintenanceIntervalMs: 20,
  })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  const degraded = eventMatching<[BufferHealth]>(
    store,
    'health',
    (h) => h.reasons.includes('disk-full'),
    10_000,
    'disk-full',
  )
  let resolved = 0
  let failure: unknown
  for (let i = 0; i < 2000 && failure === undefined; i++) {
    try {
      await store.append({ queue: 'up', topic: `t/${i}`, payload, qos: 1, whenFull: 'refuse' })
      resolved++
    } catch (err) {
      failure = err
    }
  }
  assert.ok(failure instanceof BufferError, `typed error, got ${String(failure)}`)
  assert.equal(failure.code, 'EDGE_ERR_BUFFER_FULL')
  assert.equal(failure.retryable, true)
  await degraded
  t.diagnostic(`ENOSPC after ${resolved} messages of 4 KiB; sqlite code ${failure.sqliteCode ?? '-'}`)
  assert.ok(resolved > 50)
  assert.equal(store.stats().totals.messages, resolved)
  assert.ok(lines.some((l) => l.msg === 'buffer commit failed'))

  // With the WAL unable to grow, even an ack (a DELETE) may fail now: it
  // must fail typed and keep the rows, never crash.
  const batch = await store.takeBatch('up', Math.ceil(resolved / 2))
  const ackFailure = await store.ack(batch.map((m) => m.id)).then(
    () => null,
    (e: unknown) => e,
  )
  if (ackFailure !== null) {
    assert.ok(ackFailure instanceof BufferError && ackFailure.code === 'EDGE_ERR_BUFFER_FULL', String(ackFailure))
    assert.equal(store.stats().totals.messages, resolved)
  }
  t.diagnostic(`ack while full: ${ackFailure === null ? 'succeeded' : 'rejected EDGE_ERR_BUFFER_FULL'}`)

  // Space returns (an operator cleans up): the probe notices without any traffic.
  const healthy = eventMatching<[BufferHealth]>(store, 'health', (h) => h.state === 'ok', 10_000, 'health back to ok')
  execFileSync('mount', ['-o', 'remount,size=8m', dir], { stdio: 'pipe' })
  await healthy
  if (ackFailure !== null) await store.ack(batch.map((m) => m.id))
  const r = await store.append({ queue: 'up', topic: 't/after', payload, qos: 1, whenFull: 'refuse' })
  assert.equal(typeof r.id, 'number')
  await store.stop()
  const raw = new Database(join(dir, 'edge-agent.db'), { readonly: true })
  try {
    assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok')
    assert.equal(raw.prepare('SELECT count(*) FROM buffer_messages').pluck().get(), resolved - batch.length + 1)
  } finally {
    raw.close() // before the unmount
  }
})

test('the free-space floor stops growth before the file system is full', async (t) => {
  const dir = mountTmpfs(t, '2m')
  if (dir === null) return
  const store = new SqliteStore({
    dataDir: dir,
    logger: captureLogger('warn').logger,
    maxBytes: 100 << 20,
    minFreeBytes: 600 << 10,
    // Resume above what a 2 MiB file system can offer: stays below the floor once tripped.
    resumeFreeBytes: 1900 << 10,
    diskCheckIntervalMs: 0,
  })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  // Telemetry (drop-oldest) until the floor trips: from then on each new
  // message replaces an old one, and the file system never fills.
  for (let i = 0; i < 2000 && store.health().state === 'ok'; i++) {
    await store.append({ queue: 'up', topic: `t/${i}`, payload, qos: 1 })
  }
  assert.deepEqual(store.health().reasons, ['disk-low'])
  const depth = store.stats().totals.messages
  // Far more than the ~55 messages that fill this file system without a floor.
  for (let i = 0; i < 300; i++) await store.append({ queue: 'up', topic: `t/more/${i}`, payload, qos: 1 })
  assert.ok(store.stats().totals.messages <= depth, 'no net growth below the floor')
  assert.ok(store.stats().drops.byReason['disk-full'] >= 300)
  assert.equal(store.stats().totals.failedCommits, 0, 'SQLite never saw ENOSPC: the WAL is checkpointed while low')
  // A must-deliver message is refused with the floor as the reason, not SQLITE_FULL.
  const failure = await store
    .append({ queue: 'up', topic: 't/must', payload, qos: 1, whenFull: 'refuse' })
    .catch((e: unknown) => e)
  assert.ok(failure instanceof BufferError)
  assert.equal(failure.code, 'EDGE_ERR_BUFFER_FULL')
  assert.equal(failure.fullReason, 'disk-full')
  assert.equal(failure.sqliteCode, undefined)
  await store.stop() // before the unmount
})
