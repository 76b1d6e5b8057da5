// Runs the real agent (dist/agent/main.js, built by `npm test`'s pretest) as a
// child process on free loopback ports, and tells the test where it listens by
// reading its own 'agent started' log line — an event, not a sleep.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { once } from 'node:events'
import type { Scope } from './scope.js'
import { stringify } from 'yaml'
import { withTimeout } from './wait.js'

/** NODE_OPTIONS of systemd/edge-agent.service. */
export const UNIT_NODE_OPTIONS = '--max-old-space-size=256 --max-semi-space-size=2'

export const AGENT_MAIN = resolve(import.meta.dirname, '../../dist/agent/main.js')

export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export interface RunningAgent {
  readonly proc: ChildProcess
  readonly pid: number
  readonly dir: string
  readonly configFile: string
  readonly mqttPort: number
  readonly wsPort: number | undefined
  /** Port of the mqtts listener (opts.mqtts), else undefined. */
  readonly mqttsPort: number | undefined
  /** Agent-relative certs dir: <dir>/data/certs. */
  readonly certsDir: string
  readonly adminPort: number
  readonly mqttUrl: string
  readonly adminUrl: string
  readonly logs: LogLine[]
  /** Resolves with the next log line matching `pred`, or one already seen if `past`. */
  waitForLog(pred: (l: LogLine) => boolean, ms: number, what: string, past?: boolean): Promise<LogLine>
  status(): Promise<Record<string, any>>
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals, ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export interface StartAgentOptions {
  /** Config object merged over a loopback test config (ports 0, temp dataDir, JSON logs). */
  config?: Record<string, unknown>
  /** Listen on WebSocket too. */
  ws?: boolean
  /** Listen on mqtts too (device certificates; the local CA is created at first start). */
  mqtts?: boolean | { requireClientCert?: boolean; useIdentityAsUsername?: boolean }
  env?: Record<string, string>
  args?: string[]
  /** Reuse this data dir (restart tests). */
  dir?: string
  startTimeoutMs?: number
  /** Command prefix, e.g. ['ip', 'netns', 'exec', 'ns1'] (exec keeps the PID, so cleanup still kills the agent). */
  prefix?: string[]
}

export async function startAgent(t: Scope, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  if (!existsSync(AGENT_MAIN)) throw new Error(`${AGENT_MAIN} missing: run npm run build first`)
  // Not tmpDir(t): its cleanup would run before the kill below (after-hooks
  // run in registration order) and race the agent still writing into it.
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'edge-agent-test-'))
  const listeners: unknown[] = [{ protocol: 'mqtt', host: '127.0.0.1', port: 0 }]
  if (opts.ws) listeners.push({ protocol: 'ws', host: '127.0.0.1', port: 0 })
  if (opts.mqtts) {
    listeners.push({
      protocol: 'mqtts',
      host: '127.0.0.1',
      port: 0,
      ...(typeof opts.mqtts === 'object' ? opts.mqtts : {}),
    })
  }
  const base = {
    site: { name: 'test-site', level: 2 },
    dataDir: join(dir, 'data'),
    log: { level: 'debug', format: 'json' },
    admin: { host: '127.0.0.1', port: 0 },
    broker: { listeners },
    ...(opts.mqtts ? { certs: { autoInit: true } } : {}),
  }
  const config = deepMerge(base, opts.config ?? {})
  const configFile = join(dir, 'config.yaml')
  writeFileSync(configFile, stringify(config))
  const argv = [
    ...(opts.prefix ?? []),
    process.execPath,
    AGENT_MAIN,
    'run',
    '--config',
    configFile,
    ...(opts.args ?? []),
  ]
  const proc = spawn(argv[0] as string, argv.slice(1), {
    // The unit's heap flags, as in production; without a heap cap `run`
    // re-executes itself (main.ts) and the PID here would be a relay.
    // opts.env can drop them: { NODE_OPTIONS: '' }.
    env: { NODE_OPTIONS: UNIT_NODE_OPTIONS, ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = once(proc, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }))
  // If the test process ends before its after-hooks run (a cancelled test),
  // do not leave an agent behind.
  const reap = (): void => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  }
  process.once('exit', reap)
  void exited.then(() => process.off('exit', reap))
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
    if (opts.dir === undefined) rmSync(dir, { recursive: true, force: true })
  })

  const logs: LogLine[] = []
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = []
  let buffered = ''
  proc.stdout.setEncoding('utf8')
  proc.stdout.on('data', (chunk: string) => {
    buffered += chunk
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let parsed: LogLine
      try {
        parsed = JSON.parse(line) as LogLine
      } catch {
        parsed = { level: 0, msg: line }
      }
      logs.push(parsed)
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]
        if (w && w.pred(parsed)) {
          waiters.splice(i, 1)
          w.resolve(parsed)
        }
      }
    }
  })
  let stderr = ''
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (c: string) => (stderr += c))

  const waitForLog = (pred: (l: LogLine) => boolean, ms: number, what: string, past = true): Promise<LogLine> => {
    const seen = past ? logs.find(pred) : undefined
    if (seen) return Promise.resolve(seen)
    return withTimeout(
      new Promise<LogLine>((resolveLine, reject) => {
        waiters.push({ pred, resolve: resolveLine })
        void exited.then(({ code, signal }) =>
          reject(new Error(`agent exited (${code ?? signal}) while waiting for ${what}\n${stderr}`)),
        )
      }),
      ms,
      what,
    )
  }

  const started = await waitForLog(
    (l) => l.msg === 'agent started',
    opts.startTimeoutMs ?? 20_000,
    "the agent's 'agent started' log line",
  )
  const bound = started['listeners'] as { protocol: string; port: number }[]
  const mqttPort = bound.find((l) => l.protocol === 'mqtt')?.port ?? 0
  const wsPort = bound.find((l) => l.protocol === 'ws')?.port
  const mqttsPort = bound.find((l) => l.protocol === 'mqtts')?.port
  const adminPort = started['admin'] as number
  const adminUrl = `http://127.0.0.1:${adminPort}`
  return {
    proc,
    pid: proc.pid ?? 0,
    dir,
    configFile,
    mqttPort,
    wsPort,
    mqttsPort,
    certsDir: join(dir, 'data', 'certs'),
    adminPort,
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    adminUrl,
    logs,
    waitForLog,
    exited,
    async status() {
      const res = await fetch(`${adminUrl}/status`)
      return (await res.json()) as Record<string, any>
    },
    async stop(signal = 'SIGTERM', ms = 10_000) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal)
      return withTimeout(exited, ms, `agent exit after ${signal}`)
    },
  }
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a }
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k]
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
        ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v
  }
  return out
}

/** Runs the CLI to completion: { code, stdout, stderr }. */
export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [AGENT_MAIN, ...args], {
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd ?? process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  const [code] = (await withTimeout(once(proc, 'close'), opts.timeoutMs ?? 20_000, `edge-agent ${args.join(' ')}`)) as [
    number | null,
  ]
  return { code, stdout, stderr }
}
