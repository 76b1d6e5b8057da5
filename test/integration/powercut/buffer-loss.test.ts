// Power cuts under load with durability 'normal' and 'off': they lose what the
// README says they may (the newest commits; in 'off' possibly the whole file)
// and no more, and the next start says so: an error line, the drop count with
// reason 'power-loss' in status and metrics, and how the last run ended.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { PowerCutDisk, powerCutUnsupported } from '../../helpers/powercut.js'
import { waitFor } from '../../helpers/wait.js'
import { agentOnDisk, compare, readStore, runSeed, seeded, startLoad, unreachableUpstreams, type Acked } from './support.js'

const CUTS = 3
const PUBLISHERS = 10
/** The run record is saved once a second: what was acknowledged in the last second before a cut may go uncounted. */
const UNTRACKED_MS = 1_500

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
    for (let round = 0; round < CUTS; round++) {
      const where = `seed ${rnd.seed}, ${durability}, cut ${round + 1}`
      const agent = await agentOnDisk(t, disk, config)
      const load = await startLoad(t, agent.mqttUrl, round, PUBLISHERS)
      const startedAt = Date.now()
      const cutAfter = rnd.int(50, 400)
      // Long enough for the run record to have seen some of the load.
      await waitFor(() => load.acked.length >= cutAfter && Date.now() - startedAt > 2 * UNTRACKED_MS, 60_000, `load (${where})`)
      process.kill(agent.pid, 'SIGKILL')
      await agent.exited
      const cutAt = Date.now()
      await disk.cut()
      await load.stop()
      acked.push(...load.acked)
      await disk.mount()

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
      const tracked = missingNow.filter((m) => m.at <= cutAt - UNTRACKED_MS).length
      if (quarantined === 0) {
        // Only the newest commits: nothing of an earlier round, and per publisher a tail, never a hole.
        assert.deepEqual(missing.filter((m) => m.round !== round).slice(0, 5), [], `${where}: an earlier round lost messages`)
        for (let p = 0; p < PUBLISHERS; p++) {
          const kept = (view.byPublisher.get(p) ?? []).filter(([r]) => r === round).map(([, s]) => s)
          kept.forEach((s, i) => assert.equal(s, i, `${where}: publisher ${p} has a hole before seq ${s}`))
        }
        assert.ok(reported <= missingNow.length + PUBLISHERS, `${where}: reported ${reported}, lost ${missingNow.length}`)
      }
      assert.ok(reported >= tracked, `${where}: lost ${missingNow.length} (${tracked} older than ${UNTRACKED_MS} ms), reported ${reported}`)
      if (reported > 0) {
        assert.ok(errorLine !== undefined, `${where}: an error line with reason power-loss`)
        assert.equal(status['buffer']['drops']['byReason']['power-loss'], reported, `${where}: drop count`)
        assert.match(metrics, new RegExp(`^edge_agent_buffer_dropped_total\\{reason="power-loss"\\} ${reported}$`, 'm'))
      }
      measured.push(
        `cut ${round + 1}: acknowledged ${load.acked.length}, lost ${missingNow.length}, reported ${reported}` +
          (quarantined > 0 ? ', file quarantined' : ''),
      )
      // The next round starts from what is on the disk now: forget what it no longer holds.
      for (const m of missing) acked.splice(acked.indexOf(m), 1)
    }
    for (const m of measured) t.diagnostic(m)
  })
}
