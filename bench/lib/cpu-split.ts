// Where the agent's CPU goes, from a V8 CPU profile (`node --cpu-prof`): each
// sample is charged to the first frame, from the leaf up, that belongs to one
// of the stages of a bridged message; GC and idle are V8's own nodes. Native
// SQLite and socket calls have no URL and so take the stage of their caller.
import { readFileSync } from 'node:fs'

export const STAGES = ['receive', 'commit', 'read-back', 'send', 'GC', 'other'] as const
export type Stage = (typeof STAGES)[number]

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string }
  children?: number[]
}

/** The stage a frame belongs to, or undefined to look at its caller. */
function stageOf(f: ProfileNode['callFrame']): Stage | undefined {
  const u = f.url
  if (u === '') {
    if (f.functionName === '(garbage collector)') return 'GC'
    return undefined
  }
  // device → broker → capture: the packet guard, aedes and its parser, the capture hook
  if (/\/dist\/local-broker\/|\/dist\/bridge\/capture\.js|node_modules\/(aedes|mqtt-packet|mqemitter|bl)\//.test(u)) {
    return 'receive'
  }
  if (/\/dist\/(buffer\/(commit-batch|group-commit|sqlite-store|topic-ledger|drop-ledger)|storage\/)/.test(u)) {
    return 'commit'
  }
  if (/\/dist\/buffer\/(drain|live-tail)\.js/.test(u)) return 'read-back'
  if (/\/dist\/bridge\//.test(u)) return 'send'
  return undefined
}

/** CPU ms per stage (idle excluded) of one profile file. */
export function cpuSplit(file: string): Record<Stage, number> {
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const stageOfNode = new Map<number, Stage | 'idle'>()
  const resolve = (id: number): Stage | 'idle' => {
    const known = stageOfNode.get(id)
    if (known !== undefined) return known
    const n = byId.get(id)
    let s: Stage | 'idle'
    if (n === undefined) s = 'other'
    else if (n.callFrame.functionName === '(idle)') s = 'idle'
    else {
      const own = stageOf(n.callFrame)
      const up = parent.get(id)
      s = own ?? (up === undefined ? 'other' : resolve(up))
    }
    stageOfNode.set(id, s)
    return s
  }
  const out = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>
  for (let i = 0; i < p.samples.length; i++) {
    const s = resolve(p.samples[i] as number)
    if (s !== 'idle') out[s] += (p.timeDeltas[i] ?? 0) / 1000
  }
  return out
}
