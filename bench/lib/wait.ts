// Bounded waiting: poll a condition until it holds or a deadline passes.
//
// The error names what was awaited, so a failed run says which step hung.
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface WaitOptions {
  /** What we are waiting for, used in the timeout error. */
  what: string
  /** Default 30 000 ms. */
  timeoutMs?: number
  /** Default 100 ms. */
  intervalMs?: number
  /** Rejects early when this settles first (e.g. the process under test exited). */
  abort?: Promise<unknown>
}

/** Resolve with the first truthy result of `probe()`; reject after `timeoutMs`. Probe errors count as "not yet". */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitOptions,
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  const intervalMs = opts.intervalMs ?? 100
  const t0 = performance.now()
  let aborted: unknown = undefined
  let isAborted = false
  opts.abort?.then(
    (v) => {
      isAborted = true
      aborted = v
    },
    (e: unknown) => {
      isAborted = true
      aborted = e
    },
  )
  let lastErr: unknown
  const maxTries = Math.ceil(timeoutMs / intervalMs) + 1
  for (let i = 0; i < maxTries; i++) {
    if (isAborted) throw new Error(`gave up waiting for ${opts.what}: ${describe(aborted)}`)
    try {
      const v = await probe()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      lastErr = err
    }
    if (performance.now() - t0 >= timeoutMs) break
    await sleep(intervalMs)
  }
  const why = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : ''
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}${why}`)
}

function describe(v: unknown): string {
  if (v instanceof Error) return v.message
  return JSON.stringify(v)
}

/** True once a TCP connection to host:port succeeds (the connection is closed again at once). */
export function tcpAccepts(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host })
    const done = (ok: boolean): void => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(1000, () => done(false))
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
}
