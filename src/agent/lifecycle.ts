// Start and stop components in dependency order. A component is anything with
// a name, start(signal) and an idempotent stop(): structural, so component
// folders never import this file.
import type { Logger } from 'pino'

/** Something the agent starts and stops. Constructors do no I/O. */
export interface Component {
  readonly name: string
  /** Resolves once usable (listening, opened). Honours `signal` to abandon a slow start. */
  start(signal: AbortSignal): Promise<void>
  /** Graceful and idempotent: a second call resolves without doing anything. */
  stop(): Promise<void>
}

export class StopTimeoutError extends Error {
  override readonly name = 'StopTimeoutError'
  readonly code = 'EDGE_ERR_STOP_TIMEOUT'
  constructor(component: string, timeoutMs: number) {
    super(`${component} did not stop within ${timeoutMs} ms`)
  }
}

/**
 * Starts components in order. If one fails, those already started are stopped
 * in reverse order and the error is rethrown: no half-started agent.
 */
export async function startAll(
  components: readonly Component[],
  signal: AbortSignal,
  log: Logger,
  stopTimeoutMs: number,
): Promise<void> {
  const started: Component[] = []
  for (const c of components) {
    try {
      signal.throwIfAborted()
      await c.start(signal)
      started.push(c)
      log.debug({ component: c.name }, 'component started')
    } catch (err) {
      await stopAll(started, stopTimeoutMs, log)
      throw err
    }
  }
}

/** Stops in reverse order, each under its own deadline; never throws; returns the failures. */
export async function stopAll(components: readonly Component[], timeoutMs: number, log: Logger): Promise<Error[]> {
  const failures: Error[] = []
  for (const c of [...components].reverse()) {
    try {
      await withDeadline(c, timeoutMs)
      log.debug({ component: c.name }, 'component stopped')
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err))
      log.error({ err: e, component: c.name }, 'component stop failed')
      failures.push(e)
    }
  }
  return failures
}

async function withDeadline(c: Component, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StopTimeoutError(c.name, timeoutMs)), timeoutMs)
  })
  try {
    await Promise.race([c.stop(), deadline])
  } finally {
    clearTimeout(timer)
  }
}
