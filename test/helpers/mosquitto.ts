// Debian's mosquitto as a real upstream broker for bridge tests: a generated
// config in a temp dir, a free 127.0.0.1 port (or an address inside a test
// network namespace), restartable on the same port, and killed by PID when
// the test ends. Ready = its own "running" log line, not a sleep.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { Scope } from './scope.js'
import { tmpDir } from './tmp-dir.js'
import { withTimeout } from './wait.js'

export const MOSQUITTO = process.env['EDGE_TEST_MOSQUITTO'] ?? '/usr/sbin/mosquitto'

/** Why the mosquitto tests cannot run here, or undefined. */
export function mosquittoMissing(): string | undefined {
  return existsSync(MOSQUITTO) ? undefined : `mosquitto not installed at ${MOSQUITTO} (apt-get install mosquitto)`
}

export interface MosquittoOptions {
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Default: a free port on host. */
  readonly port?: number
  /** Extra mosquitto.conf lines (e.g. a bridge section). */
  readonly extra?: readonly string[]
  /** Run inside this network namespace (`ip netns exec`). */
  readonly netns?: string
  /** Persist sessions and retained messages across restarts (default true, in the temp dir). */
  readonly persistence?: boolean
  /** max_inflight / max_queued tuning. Default: mosquitto's own defaults. */
  readonly tuning?: readonly string[]
}

export interface RunningMosquitto {
  readonly host: string
  readonly port: number
  readonly url: string
  readonly dir: string
  pid(): number
  /** Everything it logged so far. */
  log(): string
  /** SIGKILL (if `hard`) or SIGTERM, and wait for the exit. */
  stop(hard?: boolean): Promise<void>
  /** Start again on the same port with the same config (and persistence file). */
  start(): Promise<void>
  restart(hard?: boolean): Promise<void>
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const a = srv.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}

export async function startMosquitto(t: Scope, opts: MosquittoOptions = {}): Promise<RunningMosquitto> {
  const missing = mosquittoMissing()
  if (missing !== undefined) throw new Error(missing)
  const host = opts.host ?? '127.0.0.1'
  const port = opts.port ?? (await freePort(host))
  const dir = tmpDir(t, 'edge-agent-mosquitto-')
  const conf = join(dir, 'mosquitto.conf')
  const persist = opts.persistence ?? true
  writeFileSync(
    conf,
    [
      `listener ${port} ${host}`,
      'allow_anonymous true',
      `persistence ${persist}`,
      ...(persist ? [`persistence_location ${dir}/`, 'autosave_interval 1'] : []),
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      'log_type information',
      'connection_messages true',
      // As root mosquitto would switch to user 'mosquitto', who cannot read the temp dir.
      `user ${process.getuid?.() === 0 ? 'root' : (process.env['USER'] ?? 'nobody')}`,
      ...(opts.tuning ?? []),
      ...(opts.extra ?? []),
      '',
    ].join('\n'),
  )
  let proc: ChildProcess | undefined
  let output = ''
  let exited: Promise<unknown> = Promise.resolve()

  const start = async (): Promise<void> => {
    const argv =
      opts.netns === undefined ? [MOSQUITTO, '-c', conf] : ['ip', 'netns', 'exec', opts.netns, MOSQUITTO, '-c', conf]
    const p = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    proc = p
    exited = once(p, 'exit')
    // Only this run's "running" line counts, not one left from an earlier run.
    let thisRun = ''
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        const text = chunk.toString('utf8')
        output += text
        thisRun += text
        if (/mosquitto version \S+ running/.test(thisRun)) resolve()
      }
      p.stdout?.on('data', onData)
      p.stderr?.on('data', onData)
      p.once('exit', (code, signal) =>
        reject(new Error(`mosquitto exited (${code ?? signal}) before it was ready:\n${output.slice(-2000)}`)),
      )
    })
    output += `\n--- start ${new Date().toISOString()} ---\n`
    await withTimeout(ready, 15_000, `mosquitto to run on ${host}:${port}`)
  }

  const stop = async (hard = false): Promise<void> => {
    const p = proc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return
    p.kill(hard ? 'SIGKILL' : 'SIGTERM')
    try {
      await withTimeout(exited, 10_000, 'mosquitto to exit')
    } catch (err) {
      // A graceful stop that hangs (seen once on a loaded machine) must not
      // fail the test that asked for it: finish the job.
      if (hard) throw err
      p.kill('SIGKILL')
      await withTimeout(exited, 5_000, 'mosquitto to exit after SIGKILL')
    }
  }

  t.after(() => stop(true))
  await start()
  return {
    host,
    port,
    url: `mqtt://${host}:${port}`,
    dir,
    pid: () => proc?.pid ?? 0,
    log: () => output,
    stop,
    start,
    async restart(hard = false) {
      await stop(hard)
      await start()
    },
  }
}
