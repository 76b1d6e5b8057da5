// Launcher for the client driver (client-driver-main.ts): N idle MQTT connections in a separate process.
//
// `openClients()` resolves once every connection has its CONNACK (or the driver reports
// failures, which reject), so callers synchronise on the broker's answers, not on sleeps.
import { spawnNodeProgram, type Started } from './proc.js'

export type DriverToParent =
  | { type: 'connected'; connected: number; failed: number; connectMs: number; firstError?: string }
  | { type: 'status'; open: number; lost: number }
  | { type: 'closed'; lost: number }
  | { type: 'fatal'; error: string }

export type ParentToDriver = { type: 'close' } | { type: 'status' }

export interface ClientsOptions {
  port: number
  host?: string
  /** Number of connections. */
  count: number
  /** Connections being set up at once. Default 100. */
  concurrency?: number
  /** MQTT keepalive, seconds. Default 60. */
  keepaliveSec?: number
  /** Deadline for all CONNACKs, ms. Default 120 000. */
  timeoutMs?: number
  /** MQTT version of the connections: 4 (3.1.1, default) or 5. */
  protocolVersion?: 4 | 5
}

export interface OpenClients {
  readonly connected: number
  /** First CONNECT to last CONNACK, ms, as measured by the driver. */
  readonly connectMs: number
  readonly pid: number
  /** Connections currently open and connections the broker dropped since CONNACK. */
  status(): Promise<{ open: number; lost: number }>
  /** DISCONNECT every connection and wait for the driver to exit. Returns connections lost before close. */
  close(): Promise<number>
}

export async function openClients(opts: ClientsOptions): Promise<OpenClients> {
  const driver: Started = await spawnNodeProgram(new URL('./client-driver-main.ts', import.meta.url), [], {
    name: 'client-driver',
    ipc: true,
    fdLimit: opts.count + 256,
    env: {
      ...process.env,
      EDGE_BENCH_TARGET_PORT: String(opts.port),
      EDGE_BENCH_TARGET_HOST: opts.host ?? '127.0.0.1',
      EDGE_BENCH_CLIENTS: String(opts.count),
      EDGE_BENCH_CONCURRENCY: String(opts.concurrency ?? 100),
      EDGE_BENCH_KEEPALIVE_SEC: String(opts.keepaliveSec ?? 60),
      EDGE_BENCH_PROTOCOL: String(opts.protocolVersion ?? 4),
    },
  })
  const timeoutMs = opts.timeoutMs ?? 120_000
  const child = driver.child
  const next = <T extends DriverToParent['type']>(type: T, ms: number): Promise<Extract<DriverToParent, { type: T }>> =>
    new Promise((resolve, reject) => {
      const onMsg = (m: DriverToParent): void => {
        if (m.type === type) {
          cleanup()
          resolve(m as Extract<DriverToParent, { type: T }>)
        } else if (m.type === 'fatal') {
          cleanup()
          reject(new Error(`client driver: ${m.error}`))
        }
      }
      const onExit = (): void => {
        cleanup()
        reject(new Error(`client driver exited while waiting for '${type}': ${driver.output()}`))
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out after ${ms} ms waiting for the client driver's '${type}'`))
      }, ms)
      const cleanup = (): void => {
        clearTimeout(timer)
        child.off('message', onMsg)
        child.off('exit', onExit)
      }
      child.on('message', onMsg)
      child.once('exit', onExit)
    })
  let result: Extract<DriverToParent, { type: 'connected' }>
  try {
    result = await next('connected', timeoutMs)
  } catch (err) {
    await driver.stop('SIGKILL')
    throw err
  }
  if (result.failed > 0) {
    await driver.stop('SIGKILL')
    throw new Error(`${result.failed} of ${opts.count} connections failed (first: ${result.firstError ?? '?'})`)
  }
  return {
    connected: result.connected,
    connectMs: result.connectMs,
    pid: driver.pid,
    async status() {
      const reply = next('status', 10_000)
      child.send({ type: 'status' } satisfies ParentToDriver)
      const s = await reply
      return { open: s.open, lost: s.lost }
    },
    async close() {
      let lost = -1
      try {
        const closed = next('closed', 15_000)
        child.send({ type: 'close' } satisfies ParentToDriver)
        lost = (await closed).lost
      } finally {
        await driver.stop('SIGTERM', 5_000)
      }
      return lost
    },
  }
}
