// Parent side of the in-process memory probe (probe-main.ts): node flags to preload it, and requests.
import type { ChildProcess } from 'node:child_process'
import { plainProgram } from './proc.js'

export type ProbeRequest = { type: 'stats' } | { type: 'gc' } | { type: 'heapsnapshot'; path: string }

export type ProbeReply =
  | {
      type: 'stats'
      memoryUsage: NodeJS.MemoryUsage
      heap: Record<string, number>
      spaces: Array<{ name: string; size: number; used: number; physical: number }>
      code: Record<string, number>
      cjsModules: string[]
      resources: Record<string, number>
    }
  | { type: 'done'; path?: string }
  | { type: 'error'; error: string }

/** `--import data:…` flag that preloads the probe. The process must be spawned with an IPC channel. */
export function probeFlags(): string[] {
  const js = plainProgram(new URL('./probe-main.ts', import.meta.url))
  return [`--import=data:text/javascript;base64,${Buffer.from(js).toString('base64')}`]
}

/** Send one request to a probed child and await its reply (bounded). */
export function ask<T extends ProbeRequest>(child: ChildProcess, req: T, timeoutMs = 60_000): Promise<ProbeReply> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', onMsg)
      reject(new Error(`probe: no reply to '${req.type}' within ${timeoutMs} ms`))
    }, timeoutMs)
    const onMsg = (m: ProbeReply): void => {
      clearTimeout(timer)
      child.off('message', onMsg)
      if (m.type === 'error') reject(new Error(`probe: ${m.error}`))
      else resolve(m)
    }
    child.on('message', onMsg)
    child.send(req)
  })
}
