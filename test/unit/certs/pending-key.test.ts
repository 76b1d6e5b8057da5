// PendingKey: the key of an unanswered renewal request, kept on disk so that a
// retry after a restart asks for the same key.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PendingKey, generateKeyPair, importPrivateKey } from '../../../src/certs/index.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

test('a new key is saved (0600) before it is used, and a second instance on the same file resumes it', async (t) => {
  const path = join(tmpDir(t), 'upstream.key.pending')
  const first = await new PendingKey(path).take()
  assert.equal(first.source, 'new')
  assert.equal(first.replaced, undefined)
  assert.equal(readFileSync(path, 'utf8'), first.keyPem)
  assert.equal(statSync(path).mode & 0o777, 0o600)
  await importPrivateKey(first.keyPem)
  // What a restarted process sees.
  const again = await new PendingKey(path).take()
  assert.deepEqual(again, { keyPem: first.keyPem, source: 'resumed' })
})

test('clear() removes the file, and is quiet when there is none', async (t) => {
  const path = join(tmpDir(t), 'k.pending')
  const pending = new PendingKey(path)
  const a = await pending.take()
  await pending.clear()
  assert.equal(existsSync(path), false)
  await pending.clear()
  const b = await pending.take()
  assert.equal(b.source, 'new')
  assert.notEqual(b.keyPem, a.keyPem)
})

test('a file that is not a private key is replaced by a new key, and the caller is told why', async (t) => {
  const path = join(tmpDir(t), 'k.pending')
  writeFileSync(path, '-----BEGIN PRIVATE KEY-----\ntruncated', { mode: 0o600 })
  const taken = await new PendingKey(path).take()
  assert.equal(taken.source, 'new')
  assert.equal(taken.replaced, 'not a usable private key')
  assert.equal(readFileSync(path, 'utf8'), taken.keyPem)
})

test('a saved key that is already the installed key (crash between install and clear) is not pending any more', async (t) => {
  const path = join(tmpDir(t), 'k.pending')
  const installed = (await generateKeyPair()).privateKeyPem
  writeFileSync(path, installed, { mode: 0o600 })
  const taken = await new PendingKey(path).take(installed)
  assert.equal(taken.source, 'new')
  assert.equal(taken.replaced, 'already the installed key')
  assert.notEqual(taken.keyPem, installed)
  // Another installed key leaves a valid pending key alone.
  const other = (await generateKeyPair()).privateKeyPem
  assert.deepEqual(await new PendingKey(path).take(other), { keyPem: taken.keyPem, source: 'resumed' })
})
