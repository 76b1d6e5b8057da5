// In-process memory probe, preloaded with `--import data:…` into a broker process under study
// (investigation runs only, never in the headline figures: it opens an IPC channel).
//
// Answers requests from the parent over IPC; the channel is unref'd so the probe never keeps
// the process alive, and it touches no process-wide state other than the 'message' listener.
import { createRequire } from 'node:module'
import v8 from 'node:v8'
import type { ProbeReply, ProbeRequest } from './probe.js'

const cjsCache = createRequire(`${process.cwd()}/`).cache

function snapshot(): Extract<ProbeReply, { type: 'stats' }> {
  const resources: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1
  return {
    type: 'stats',
    memoryUsage: process.memoryUsage(),
    heap: v8.getHeapStatistics() as unknown as Record<string, number>,
    spaces: v8.getHeapSpaceStatistics().map((s) => ({
      name: s.space_name,
      size: s.space_size,
      used: s.space_used_size,
      physical: s.physical_space_size,
    })),
    code: v8.getHeapCodeStatistics() as unknown as Record<string, number>,
    cjsModules: Object.keys(cjsCache),
    resources,
  }
}

if (process.channel !== undefined && process.channel !== null) {
  process.channel.unref()
  process.on('message', (req: ProbeRequest) => {
    try {
      if (req.type === 'stats') process.send?.(snapshot())
      else if (req.type === 'gc') {
        const gc = (globalThis as { gc?: () => void }).gc
        if (gc === undefined) throw new Error('run with --expose-gc')
        gc()
        process.send?.({ type: 'done' } satisfies ProbeReply)
      } else if (req.type === 'heapsnapshot') {
        process.send?.({ type: 'done', path: v8.writeHeapSnapshot(req.path) } satisfies ProbeReply)
      }
    } catch (err) {
      process.send?.({ type: 'error', error: (err as Error).message } satisfies ProbeReply)
    }
  })
}
