// Power cuts under load with durability 'normal' and 'off': they lose what the
// README says they may (the newest commits; in 'off' possibly the whole file)
// and no more, and the next start says so: an error line, the drop count with
// reason 'power-loss' in status and metrics, and how the last run ended.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { RUN_FILE_NAME } from '../../../src/buffer/index.js'
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

const CUTS = 3
const PUBLISHERS = 10

/** The agent's run record on the disk (src/buffer/continuity.ts), or null. */
function runRecord(dataDir: string): { savedAt: number; ackedHighId: number } | null {
  try {
    return JSON.parse(readFileSync(join(dataDir, RUN_FILE_NAME), 'utf8')) as { savedAt: number; ackedHighId: number }
  } catch {
    return null
  }
}

for (const durability of ['normal', 'off'] as const) {
  test(`durability ${durability}: a power cut loses only the newest commits, and the next start reports it`, async (t) => {
    const unsupported = await powerCutUnsupported()
    if (unsupported !== null) return t.skip(unsupported)
    const rnd = seeded(runSeed())
    t.diagnostic(`seed ${rnd.seed} (replay with POWERCUT_SEED=${rnd.seed})`)
    const disk = await PowerCutDisk.create(t)
    const upstreams = await unreachableUpstreams()
    const config = { buffer: { durability }, upstreams }
    const acked: Acked[] = []
    const measured: string[] = []
    // A store that already holds messages and was stopped cleanly (checkpointed): what a cut can roll back to.
    const base = await agentOnDisk(t, disk, config)
    const baseLoad = await startLoad(t, base.mqttUrl, 0, PUBLISHERS)
    await waitFor(() => baseLoad.acked.length >= 200, 60_000, 'the first messages')
    await baseLoad.stop()
    assert.equal((await base.stop()).code, 0)
    acked.push(...baseLoad.acked)
    for (let round = 1; round <= CUTS; round++) {
      const where = `seed ${rnd.seed}, ${durability}, cut ${round}`
      const agent = await agentOnDisk(t, disk, config)
      const load = await startLoad(t, agent.mqttUrl, round, PUBLISHERS)
      const dataDir = join(disk.path, 'data')
      const cutAfter = rnd.int(50, 400)
      // Cut once the run record has seen some of this load (it is saved once a second).
      const seenBefore = runRecord(dataDir)?.ackedHighId ?? 0
      await waitFor(
        () => load.acked.length >= cutAfter && (runRecord(dataDir)?.ackedHighId ?? 0) > seenBefore,
        60_000,
        `load and a run record save (${where})`,
      )
      // Not the instant of the rename (its directory fsync follows): some more load first. Only makes a
      // reported loss likely; what is asserted below is computed from the record as the cut left it.
      const more = load.acked.length + 20
      await waitFor(() => load.acked.length >= more, 60_000, `more load (${where})`)
      process.kill(agent.pid, 'SIGKILL')
      await agent.exited
      await disk.cut()
      await load.stop()
      acked.push(...load.acked)
      await disk.mount()
      // What survived of the record: everything acknowledged before it was saved is in it.
      const savedAt = runRecord(dataDir)?.savedAt ?? 0

      // The next start: what does it say?
      const after = await agentOnDisk(t, disk, config)
      const status = await after.status()
      const lastRun = status['buffer']['lastRun'] as { ended: string; loss: { count: number; cause: string } | null }
      const reported = lastRun.loss?.count ?? 0
      const errorLine = after.logs.find((l) => l.level >= 50 && l['reason'] === 'power-loss')
      const metrics = await (await fetch(`${after.adminUrl}/metrics`)).text()
      const quarantined = status['buffer']['quarantine']['count'] as number
      assert.equal(lastRun.ended, 'unclean', `${where}: the start knows the last run did not stop cleanly`)
      assert.equal((await after.stop()).code, 0)

      const view = readStore(`${disk.path}/data`)
      assert.equal(view.integrity, 'ok', `${where}: the file the agent kept is sound`)
      const { missing, disorder } = compare(acked, view)
      assert.deepEqual(disorder.slice(0, 5), [], `${where}: order`)
      const missingNow = missing.filter((m) => m.round === round)
      const tracked = missing.filter((m) => m.at < savedAt).length
      if (quarantined === 0) {
        // Only the newest commits: nothing of an earlier round, and per publisher a tail, never a hole.
        assert.deepEqual(
          missing.filter((m) => m.round !== round).slice(0, 5),
          [],
          `${where}: an earlier round lost messages`,
        )
        for (let p = 0; p < PUBLISHERS; p++) {
          const kept = (view.byPublisher.get(p) ?? []).filter(([r]) => r === round).map(([, s]) => s)
          kept.forEach((s, i) => assert.equal(s, i, `${where}: publisher ${p} has a hole before seq ${s}`))
        }
        assert.ok(
          reported <= missingNow.length + PUBLISHERS,
          `${where}: reported ${reported}, lost ${missingNow.length}`,
        )
      }
      assert.ok(
        reported >= tracked,
        `${where}: lost ${missing.length} (${tracked} acknowledged before the last record save), reported ${reported}`,
      )
      if (reported > 0) {
        assert.ok(errorLine !== undefined, `${where}: an error line with reason power-loss`)
        assert.equal(status['buffer']['drops']['byReason']['power-loss'], reported, `${where}: drop count`)
        assert.match(metrics, new RegExp(`^edge_agent_buffer_dropped_total\\{reason="power-loss"\\} ${reported}$`, 'm'))
      }
      measured.push(
        `cut ${round}: acknowledged ${load.acked.length}, lost ${missingNow.length}, reported ${reported}` +
          (quarantined > 0 ? ', file quarantined' : ''),
      )
      // The next round starts from what is on the disk now: forget what it no longer holds.
      for (const m of missing) acked.splice(acked.indexOf(m), 1)
    }
    for (const m of measured) t.diagnostic(m)
  })
}
