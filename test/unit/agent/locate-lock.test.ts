// The config lookup order and the data-dir lock, on their own.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { locateConfig, describeLocation } from '../../../src/agent/config/locate.js'
import { DataDirLock, DataDirLockedError } from '../../../src/agent/data-lock.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

test('config lookup: --config, then $EDGE_AGENT_CONFIG, then systemd, then the default path, then defaults', (t) => {
  const root = tmpDir(t)
  const env = { EDGE_AGENT_SYSCONFDIR: join(root, 'etc') }
  assert.deepEqual(locateConfig(env, root, undefined), { file: undefined, source: 'defaults' })
  mkdirSync(join(root, 'etc', 'edge-agent'), { recursive: true })
  writeFileSync(join(root, 'etc', 'edge-agent', 'config.yaml'), '')
  assert.deepEqual(locateConfig(env, root, undefined), {
    file: join(root, 'etc', 'edge-agent', 'config.yaml'),
    source: 'default-path',
  })
  assert.deepEqual(locateConfig({ ...env, CONFIGURATION_DIRECTORY: '/run/cfg:/other' }, root, undefined), {
    file: '/run/cfg/config.yaml',
    source: 'systemd',
  })
  assert.deepEqual(
    locateConfig({ ...env, CONFIGURATION_DIRECTORY: '/run/cfg', EDGE_AGENT_CONFIG: 'rel.yaml' }, root, undefined),
    { file: join(root, 'rel.yaml'), source: 'env' },
  )
  assert.deepEqual(locateConfig({ ...env, EDGE_AGENT_CONFIG: '/e.yaml' }, root, 'f.yaml'), {
    file: join(root, 'f.yaml'),
    source: 'flag',
  })
  assert.equal(
    describeLocation({ file: undefined, source: 'defaults' }),
    'config: built-in defaults (no config file found)',
  )
})

test('the data-dir lock admits one holder, names it, and frees on release', (t) => {
  const dir = tmpDir(t)
  mkdirSync(dir, { recursive: true })
  assert.deepEqual(DataDirLock.isHeld(dir), { held: false })
  const lock = DataDirLock.acquire(dir, 4242)
  t.after(() => lock.release())
  assert.deepEqual(DataDirLock.isHeld(dir), { held: true, pid: 4242 })
  assert.throws(
    () => DataDirLock.acquire(dir, 4343),
    (e: unknown) =>
      e instanceof DataDirLockedError &&
      e.pid === 4242 &&
      e.code === 'EDGE_ERR_DATA_DIR_LOCKED' &&
      /PID 4242/.test(e.message),
  )
  lock.release()
  lock.release()
  assert.deepEqual(DataDirLock.isHeld(dir), { held: false })
  const next = DataDirLock.acquire(dir, 4343)
  next.release()
})
