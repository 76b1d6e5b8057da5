// openDatabase(): pragmas on every open, migrations from several owners,
// quarantine of corrupt files, shared connections, file modes.
//
// Glossary
//   raw      | a plain better-sqlite3 connection opened by the test, as a second process would
//   garbage  | bytes that are not an SQLite file
import assert from 'node:assert/strict'
import {
  existsSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
  chmodSync,
  openSync,
  writeSync,
  closeSync,
  truncateSync,
} from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { applyDurability, type Migration, openDatabase, readQuarantineLog } from '../../../src/storage/database.js'
import { BufferError, SqliteStore } from '../../../src/buffer/index.js'
import { captureLogger, silentLogger } from '../../helpers/buffer-support.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

const log = silentLogger()

function expectCode(fn: () => unknown, code: string): BufferError {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof BufferError, `expected BufferError, got ${String(err)}`)
    assert.equal(err.code, code)
    return err
  }
  assert.fail(`expected ${code}`)
}

test("durability 'full' on a reopen of a WAL database: NORMAL on the connection, the WAL synced by the lease", async (t) => {
  const path = join(tmpDir(t), 'a.db')
  const first = openDatabase(path, { logger: log })
  first.db.exec('CREATE TABLE x (v INTEGER)')
  first.close()
  // The trap this guards against: a plain reopen runs at NORMAL (1).
  const raw = new Database(path)
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal')
  assert.equal(raw.pragma('synchronous', { simple: true }), 1, 'better-sqlite3 default on an existing WAL file')
  raw.close()
  const again = openDatabase(path, { logger: log })
  t.after(() => again.close())
  // COMMIT writes the frames; syncWal() fsyncs them off the event loop (wal-sync.ts).
  assert.equal(again.db.pragma('synchronous', { simple: true }), 1)
  assert.equal(again.db.pragma('journal_mode', { simple: true }), 'wal')
  assert.equal(again.durability, 'full')
  again.db.exec('INSERT INTO x VALUES (1)')
  await again.syncWal()
})

test("durability 'normal' and 'off' resolve syncWal at once (they promise nothing more)", async (t) => {
  for (const mode of ['normal', 'off'] as const) {
    const lease = openDatabase(join(tmpDir(t), `${mode}.db`), { logger: log, durability: mode })
    await lease.syncWal()
    lease.close()
  }
})

test('sets and reads back every durability mode', (t) => {
  const dir = tmpDir(t)
  for (const [mode, want] of [
    ['normal', 1],
    ['off', 0],
    ['full', 1],
  ] as const) {
    const lease = openDatabase(join(dir, `${mode}.db`), { logger: log, durability: mode })
    assert.equal(lease.db.pragma('synchronous', { simple: true }), want)
    lease.close()
  }
})

test('refuses to start when synchronous does not read back as requested', () => {
  let set = ''
  const stub = {
    pragma(source: string): unknown {
      if (source.startsWith('synchronous =')) {
        set = source
        return []
      }
      return 1 // what a connection silently left at NORMAL reports
    },
  }
  const err = expectCode(() => applyDurability(stub, 'off'), 'EDGE_ERR_BUFFER_DURABILITY')
  assert.match(err.message, /reads back 1, expected 0/)
  assert.equal(set, 'synchronous = 0')
})

test('creates the directory 0700 and the database files 0600', async (t) => {
  const dataDir = join(tmpDir(t), 'state', 'nested')
  const store = new SqliteStore({ dataDir, logger: log, maxBytes: 1 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  await store.append({ queue: 'q', topic: 't', payload: Buffer.from('x'), qos: 1 })
  assert.equal(statSync(dataDir).mode & 0o777, 0o700)
  for (const f of ['edge-agent.db', 'edge-agent.db-wal', 'edge-agent.db-shm']) {
    assert.equal(statSync(join(dataDir, f)).mode & 0o777, 0o600, f)
  }
})

test('tightens an existing world-readable database file to 0600', (t) => {
  const path = join(tmpDir(t), 'loose.db')
  openDatabase(path, { logger: log }).close()
  chmodSync(path, 0o644)
  const lease = openDatabase(path, { logger: log })
  t.after(() => lease.close())
  assert.equal(statSync(path).mode & 0o777, 0o600)
})

test('moves a garbage file and its -wal/-shm aside, starts fresh, and records it', async (t) => {
  const dataDir = tmpDir(t)
  const path = join(dataDir, 'edge-agent.db')
  const garbage = Buffer.from('this is not an sqlite database\n'.repeat(200))
  writeFileSync(path, garbage)
  writeFileSync(`${path}-wal`, 'wal garbage')
  writeFileSync(`${path}-shm`, 'shm garbage')
  const { logger, lines } = captureLogger()
  const store = new SqliteStore({ dataDir, logger, maxBytes: 1 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())

  const moved = readdirSync(dataDir)
    .filter((f) => f.includes('.corrupt-'))
    .sort()
  assert.equal(moved.length, 3, moved.join(','))
  const main = moved.find((f) => !f.endsWith('-wal') && !f.endsWith('-shm')) ?? ''
  assert.deepEqual(readFileSync(join(dataDir, main)), garbage, 'the corrupt file is kept byte for byte')
  assert.ok(
    moved.includes(`${main}-wal`) && moved.includes(`${main}-shm`),
    'the -wal/-shm keep the quarantined base name',
  )
  assert.equal(readFileSync(join(dataDir, `${main}-wal`), 'utf8'), 'wal garbage')
  const line = lines.find((l) => l.msg === 'corrupt database quarantined, starting with a fresh file')
  assert.ok(line !== undefined, 'a clear log line')
  assert.equal(line['movedTo'], join(dataDir, main))
  assert.equal(line['path'], path)

  const r = await store.append({ queue: 'q', topic: 't', payload: Buffer.from('fresh'), qos: 1 })
  assert.equal(r.id, 1)
  assert.equal(store.stats().quarantine.count, 1)
  assert.equal(store.stats().quarantine.last?.movedTo, join(dataDir, main))
  await store.stop()

  // The count survives a restart: it is recorded in the fresh file.
  const again = new SqliteStore({ dataDir, logger: log, maxBytes: 1 << 20, minFreeBytes: 0 })
  await again.start(AbortSignal.timeout(5000))
  t.after(() => again.stop())
  assert.equal(again.stats().quarantine.count, 1)
  assert.equal(again.stats().totals.messages, 1)
})

/** A store file with `rows` messages, closed cleanly. */
async function populated(dataDir: string, rows: number): Promise<string> {
  const store = new SqliteStore({ dataDir, logger: log, maxBytes: 64 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  await Promise.all(
    Array.from({ length: rows }, (_, i) =>
      store.append({ queue: 'q', topic: `t/${i % 37}`, payload: Buffer.alloc(200, i % 251), qos: 1 }),
    ),
  )
  await store.stop()
  return store.path
}

test('quarantines a file whose pages were overwritten (quick_check fails)', async (t) => {
  const dataDir = tmpDir(t)
  const path = await populated(dataDir, 3000)
  const size = statSync(path).size
  assert.ok(size > 40 * 4096, `file of ${size} bytes`)
  // Scribble over a run of pages in the middle (index and table b-tree pages).
  const fd = openSync(path, 'r+')
  const junk = Buffer.alloc(8 * 4096, 0xa5)
  writeSync(fd, junk, 0, junk.length, 16 * 4096)
  closeSync(fd)
  const before = readFileSync(path)

  const store = new SqliteStore({ dataDir, logger: log, maxBytes: 1 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  const moved = readdirSync(dataDir).filter(
    (f) => f.includes('.corrupt-') && !f.endsWith('-wal') && !f.endsWith('-shm'),
  )
  assert.equal(moved.length, 1)
  assert.deepEqual(readFileSync(join(dataDir, moved[0] ?? '')), before)
  assert.equal(store.stats().quarantine.count, 1)
  assert.match(store.stats().quarantine.last?.reason ?? '', /quick_check|malformed|corrupt/i)
  assert.equal(store.stats().totals.messages, 0)
})

test('quarantines a truncated file', async (t) => {
  const dataDir = tmpDir(t)
  const path = await populated(dataDir, 3000)
  truncateSync(path, Math.floor(statSync(path).size / 2))
  const store = new SqliteStore({ dataDir, logger: log, maxBytes: 1 << 20, minFreeBytes: 0 })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  assert.equal(store.stats().quarantine.count, 1)
  await store.append({ queue: 'q', topic: 't', payload: Buffer.from('x'), qos: 1 })
})

test('keeps the -wal of a corrupt file intact, committed frames included, for salvage', (t) => {
  const src = tmpDir(t)
  const dir = tmpDir(t)
  // A writer that "crashed": the older rows are checkpointed into the main
  // file, the newest committed ones live only in the WAL.
  const w = new Database(join(src, 'w.db'))
  w.pragma('journal_mode = WAL')
  w.pragma('wal_autocheckpoint = 0')
  w.exec('CREATE TABLE t (x BLOB)')
  const ins = w.prepare('INSERT INTO t VALUES (?)')
  w.transaction(() => {
    for (let i = 0; i < 2000; i++) ins.run(Buffer.alloc(300, i % 251))
  })()
  w.pragma('wal_checkpoint(TRUNCATE)')
  for (let i = 0; i < 50; i++) ins.run(Buffer.alloc(500, i))
  const path = join(dir, 'edge-agent.db')
  for (const suffix of ['', '-wal']) writeFileSync(path + suffix, readFileSync(join(src, 'w.db') + suffix))
  w.close()
  const wal = readFileSync(`${path}-wal`)
  assert.ok(wal.length > 50 * 500)
  // Damage old table pages that the WAL does not cover: quick_check fails.
  const fd = openSync(path, 'r+')
  writeSync(fd, Buffer.alloc(6 * 4096, 0xa5), 0, 6 * 4096, 20 * 4096)
  closeSync(fd)

  const lease = openDatabase(path, { logger: log })
  t.after(() => lease.close())
  assert.ok(lease.quarantined !== null)
  assert.deepEqual(readFileSync(`${lease.quarantined.movedTo}-wal`), wal, 'WAL not checkpointed, truncated or deleted')
})

test('fails with EDGE_ERR_BUFFER_CORRUPT and moves nothing when quarantine is disabled', (t) => {
  const dir = tmpDir(t)
  const path = join(dir, 'cli.db')
  writeFileSync(path, 'garbage'.repeat(1000))
  expectCode(() => openDatabase(path, { logger: log, quarantineCorrupt: false }), 'EDGE_ERR_BUFFER_CORRUPT')
  assert.deepEqual(readdirSync(dir), ['cli.db'])
})

test('applies each migration once, in order, including to a file at version N-1', (t) => {
  const path = join(tmpDir(t), 'm.db')
  const order: string[] = []
  const mk = (id: string, sql: string): Migration => ({
    id,
    up: (db) => {
      order.push(id)
      db.exec(sql)
    },
  })
  const v1 = [mk('owner/001-a', 'CREATE TABLE a (x INTEGER)'), mk('owner/002-b', 'CREATE TABLE b (x INTEGER)')]
  openDatabase(path, { logger: log, migrations: v1 }).close()
  assert.deepEqual(order, ['owner/001-a', 'owner/002-b'])
  // The next release adds a migration: only that one runs.
  const v2 = [...v1, mk('owner/003-c', 'ALTER TABLE a ADD COLUMN y TEXT')]
  const lease = openDatabase(path, { logger: log, migrations: v2 })
  t.after(() => lease.close())
  assert.deepEqual(order, ['owner/001-a', 'owner/002-b', 'owner/003-c'])
  const ids = lease.db.prepare('SELECT id FROM schema_migrations ORDER BY id').pluck().all()
  assert.deepEqual(ids, ['core/001-quarantine-log', 'owner/001-a', 'owner/002-b', 'owner/003-c'])
  assert.deepEqual(lease.applyMigrations(v2), [])
  // Another owner registers its tables on the same connection later.
  assert.deepEqual(lease.applyMigrations([mk('other/001-z', 'CREATE TABLE z (x INTEGER)')]), ['other/001-z'])
})

test('rolls back a failing migration and fails the open', (t) => {
  const path = join(tmpDir(t), 'bad.db')
  const bad: Migration = {
    id: 'owner/001-bad',
    up: (db) => {
      db.exec('CREATE TABLE half (x INTEGER)')
      throw new Error('migration bug')
    },
  }
  assert.throws(() => openDatabase(path, { logger: log, migrations: [bad] }), /migration bug/)
  const raw = new Database(path)
  t.after(() => raw.close())
  assert.equal(raw.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'half'").pluck().get(), 0)
  expectCode(
    () =>
      openDatabase(path, {
        logger: log,
        migrations: [
          { id: 'x', up: () => {} },
          { id: 'x', up: () => {} },
        ],
      }),
    'EDGE_ERR_BUFFER_INVALID',
  )
})

test('shares one connection per file and checkpoints and closes it with the last lease', (t) => {
  const path = join(tmpDir(t), 'shared.db')
  const a = openDatabase(path, { logger: log })
  const b = openDatabase(path, {
    logger: log,
    migrations: [{ id: 'b/001', up: (db) => db.exec('CREATE TABLE b (x)') }],
  })
  assert.equal(a.db, b.db)
  a.db.exec('INSERT INTO b VALUES (1)')
  a.close()
  a.close()
  assert.equal(b.db.open, true, 'the other lease still works')
  b.db.exec('INSERT INTO b VALUES (2)')
  expectCode(() => openDatabase(path, { logger: log, durability: 'normal' }), 'EDGE_ERR_BUFFER_DURABILITY')
  b.close()
  assert.equal(b.db.open, false)
  assert.equal(statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0, 0, 'WAL truncated at close')
  const raw = new Database(path)
  t.after(() => raw.close())
  assert.equal(raw.prepare('SELECT count(*) FROM b').pluck().get(), 2)
  assert.deepEqual(readQuarantineLog(raw), { count: 0, last: null })
})

test('creates the file with auto_vacuum=INCREMENTAL so it can shrink', (t) => {
  const path = join(tmpDir(t), 'v.db')
  const lease = openDatabase(path, { logger: log })
  t.after(() => lease.close())
  assert.equal(lease.db.pragma('auto_vacuum', { simple: true }), 2)
  assert.ok(existsSync(path))
})
