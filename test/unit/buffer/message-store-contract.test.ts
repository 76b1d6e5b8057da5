// Runs the one MessageStore contract (test/helpers/message-store-contract.ts)
// against both implementations, so MemoryStore-based bridge tests test what
// SqliteStore does in production.
import { MemoryStore, SqliteStore } from '../../../src/buffer/index.js'
import { silentLogger } from '../../helpers/buffer-support.js'
import { messageStoreContract } from '../../helpers/message-store-contract.js'
import { tmpDir } from '../../helpers/tmp-dir.js'

messageStoreContract('MemoryStore', async (t, o) => {
  const store = new MemoryStore({ now: o.now, ...(o.maxBytes === undefined ? {} : { maxBytes: o.maxBytes }) })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  return store
})

messageStoreContract('SqliteStore', async (t, o) => {
  const store = new SqliteStore({
    dataDir: tmpDir(t, 'edge-buffer-contract-'),
    logger: silentLogger(),
    now: o.now,
    maxBytes: o.maxBytes ?? 64 * 1024 * 1024,
    minFreeBytes: 0,
    batchWindowMs: 1,
  })
  await store.start(AbortSignal.timeout(5000))
  t.after(() => store.stop())
  return store
})
