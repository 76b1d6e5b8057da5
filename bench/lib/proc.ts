// Child processes for the benchmarks: spawn, track, stop.
//
// Invariants:
// - every process the harness starts is registered here, and `killAllStarted()`
//   (called on normal exit, on failure and on SIGINT/SIGTERM of the harness)
//   sends SIGKILL to exactly those PIDs, never to anything found by name;
// - a measured process is exec'd directly (no wrapper left in between), so the
//   PID we read /proc from is the broker itself, not a shell;
// - child programs that we measure run without a loader (no tsx): the TypeScript
//   source is transpiled here and handed to `node --eval`, because `--import tsx`
//   adds a loader thread (its own V8 isolate) to the process we are measuring.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface Started {
  readonly name: string
  readonly pid: number
  readonly child: ChildProcess
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>
  /** Last ~8 KB of stdout+stderr, for error messages. */
  output(): string
  /** SIGTERM (or `signal`), then SIGKILL after `timeoutMs` (default 10 000 ms). Idempotent. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo>
}

export interface SpawnOptions {
  name: string
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Raise the soft RLIMIT_NOFILE to this (capped at the hard limit) before exec. */
  fdLimit?: number
  /** Open an IPC channel (fd 3) to the child. */
  ipc?: boolean
  /** Called with each chunk of stdout. */
  onStdout?: (chunk: string) => void
}

const running = new Map<number, Started>()

/** The repository root (bench/lib/ → ../..). Child node programs run from here so bare imports resolve. */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

const OUTPUT_TAIL = 8192

/** Spawn `command args…`, registered for cleanup. Throws if the spawn itself fails. */
export async function spawnTracked(command: string, args: readonly string[], opts: SpawnOptions): Promise<Started> {
  let file = command
  let argv = [...args]
  if (opts.fdLimit !== undefined) {
    // `exec` keeps the PID: the measured process is the one we spawned.
    // ulimit -n above the hard limit fails, so fall back to the hard limit.
    const script = `ulimit -n ${opts.fdLimit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`
    file = '/bin/sh'
    argv = ['-c', script, 'sh', command, ...args]
  }
  const stdio: StdioOptions = opts.ipc === true ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe']
  const child = spawn(file, argv, { cwd: opts.cwd ?? repoRoot, env: opts.env ?? process.env, stdio })
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', reject)
  })
  const pid = child.pid
  if (pid === undefined) throw new Error(`${opts.name}: spawned without a pid`)
  let tail = ''
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL)
  }
  child.stdout?.on('data', (chunk: Buffer) => {
    keep(chunk)
    opts.onStdout?.(chunk.toString('utf8'))
  })
  child.stderr?.on('data', keep)
  child.on('error', () => undefined) // e.g. IPC write after exit; the exit promise reports the outcome
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(pid)
      resolve({ code, signal })
    })
  })
  let stopping: Promise<ExitInfo> | undefined
  const started: Started = {
    name: opts.name,
    pid,
    child,
    exited,
    output: () => tail,
    stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<ExitInfo> {
      if (stopping !== undefined) return stopping
      stopping = (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return exited
        sendSignal(pid, signal)
        const timer = setTimeout(() => sendSignal(pid, 'SIGKILL'), timeoutMs)
        try {
          return await exited
        } finally {
          clearTimeout(timer)
        }
      })()
      return stopping
    },
  }
  running.set(pid, started)
  return started
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

/** SIGKILL every process this harness started and that is still running. Synchronous, so it works in 'exit'. */
export function killAllStarted(): void {
  for (const [pid] of running) sendSignal(pid, 'SIGKILL')
  running.clear()
}

let hooksInstalled = false
/** Kill started children when the harness exits, fails or is interrupted. */
export function installCleanupHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.once('exit', killAllStarted)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAllStarted()
      process.exit(130)
    })
  }
}

const transpiled = new Map<string, string>()

/**
 * Source text of a self-contained TypeScript program (type imports only), transpiled to plain
 * ESM JavaScript. Bare imports resolve from `repoRoot` when run with `node --eval` there.
 */
export function plainProgram(file: URL): string {
  const path = fileURLToPath(file)
  let js = transpiled.get(path)
  if (js === undefined) {
    const out = ts.transpileModule(readFileSync(path, 'utf8'), {
      fileName: path,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
      },
    })
    js = out.outputText
    transpiled.set(path, js)
  }
  return js
}

/** Spawn `node [nodeFlags] --input-type=module --eval <program>` from the repository root. */
export function spawnNodeProgram(program: URL, nodeFlags: readonly string[], opts: SpawnOptions): Promise<Started> {
  return spawnTracked(process.execPath, [...nodeFlags, '--input-type=module', '--eval', plainProgram(program)], opts)
}

/** Split a flags string such as `--max-semi-space-size=1 --optimize-for-size` (no quoting needed for node flags). */
export function splitFlags(flags: string | undefined): string[] {
  return (flags ?? '').split(/\s+/).filter((f) => f.length > 0)
}
