// Power cuts under load with durability 'full': every message a device got a
// PUBACK for is on the disk after the cut, in per-device order, and the file
// opens clean. The disk is test/helpers/powercut_fs.py: what was not fsync'd
// is gone, as on an SD card when the power goes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { PowerCutDisk, powerCutUnsupported } from '../../helpers/powercut.js'
import { waitFor } from '../../helpers/wait.js'
import {
  agentOnDisk,
  compare,
  readStore,
  runSeed,
  seeded,
  startLoad,
  unreachableUpstreams,
  type Acked,
} from './support.js'

const CUTS = 20
const PUBLISHERS = 10

test(`${CUTS} power cuts at random moments under load (${PUBLISHERS} publishers, QoS 1), durability full`, async (t) => {
  const unsupported = await powerCutUnsupported()
  if (unsupported !== null) return t.skip(unsupported)
  const rnd = seeded(runSeed())
  t.diagnostic(`seed ${rnd.seed} (replay with POWERCUT_SEED=${rnd.seed})`)
  const disk = await PowerCutDisk.create(t)
  const upstreams = await unreachableUpstreams()
  const acked: Acked[] = []
  let lastRows = 0
  for (let round = 0; round < CUTS; round++) {
    const where = `seed ${rnd.seed}, cut ${round + 1}`
    const agent = await agentOnDisk(t, disk, { buffer: { durability: 'full' }, upstreams })
    const load = await startLoad(t, agent.mqttUrl, round, PUBLISHERS)
    // A random moment: after a random number of acknowledgements (some load is on).
    const cutAfter = rnd.int(1, 400)
    await waitFor(() => load.acked.length >= cutAfter, 60_000, `${cutAfter} acknowledgements (${where})`)
    process.kill(agent.pid, 'SIGKILL')
    await agent.exited
    await disk.cut()
    await load.stop()
    acked.push(...load.acked)
    await disk.mount()

    const view = readStore(`${disk.path}/data`)
    assert.equal(view.integrity, 'ok', `integrity_check after ${where}`)
    const { missing, disorder } = compare(acked, view)
    assert.deepEqual(missing.slice(0, 10), [], `${where}: ${missing.length} acknowledged messages missing`)
    assert.deepEqual(disorder.slice(0, 10), [], `${where}: per-publisher order broken`)
    lastRows = view.rows
  }
  assert.ok(acked.length >= CUTS, 'load was on at every cut')
  t.diagnostic(`${CUTS} cuts, ${acked.length} acknowledged messages all present (${lastRows} rows stored)`)
})
