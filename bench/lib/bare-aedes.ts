// Launcher for the bare-aedes baseline broker (bare-aedes-main.ts).
import { spawnNodeProgram, type Started } from './proc.js'
import { waitFor } from './wait.js'

export interface BrokerProcess {
  readonly name: string
  readonly pid: number
  readonly port: number
  /** Connected clients as the broker itself counts them, when it can tell (the agent can). */
  clients?(): Promise<number>
  stop(): Promise<void>
  readonly proc: Started
}

export interface BareAedesOptions {
  port: number
  /** Extra node flags, e.g. ['--max-semi-space-size=1']. */
  nodeFlags?: readonly string[]
  /** Aedes options for lever experiments. */
  aedesOpts?: Record<string, unknown>
  noDelay?: boolean
  fdLimit?: number
  /** Extra environment (e.g. the probe's). */
  env?: NodeJS.ProcessEnv
  ipc?: boolean
}

export async function startBareAedes(opts: BareAedesOptions): Promise<BrokerProcess> {
  let listening = false
  const proc = await spawnNodeProgram(new URL('./bare-aedes-main.ts', import.meta.url), opts.nodeFlags ?? [], {
    name: 'bare-aedes',
    fdLimit: opts.fdLimit ?? 65_536,
    ipc: opts.ipc ?? false,
    env: {
      ...process.env,
      ...opts.env,
      EDGE_BENCH_PORT: String(opts.port),
      EDGE_BENCH_AEDES_OPTS: JSON.stringify(opts.aedesOpts ?? {}),
      EDGE_BENCH_NODELAY: opts.noDelay === true ? '1' : '0',
    },
    onStdout: (s) => {
      if (s.includes('listening')) listening = true
    },
  })
  try {
    await waitFor(() => listening, {
      what: 'bare aedes to listen',
      timeoutMs: 20_000,
      intervalMs: 50,
      abort: proc.exited,
    })
  } catch (err) {
    await proc.stop('SIGKILL')
    throw new Error(`${(err as Error).message}\n${proc.output()}`)
  }
  return {
    name: 'bare aedes',
    pid: proc.pid,
    port: opts.port,
    proc,
    async stop() {
      await proc.stop('SIGTERM', 10_000)
    },
  }
}
