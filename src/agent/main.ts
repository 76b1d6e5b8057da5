#!/usr/bin/env node
// The process boundary: the only file that reads argv and the environment,
// handles signals and decides the exit code (see exit-codes.ts).
import './quiet-debug.js'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import { createInterface, type Interface } from 'node:readline/promises'
import { ExitCode } from './exit-codes.js'
import type { CommandContext } from './commands/context.js'

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version

// One readline for every question of a command: a second one would lose
// what the first had already read ahead from a pipe or pseudo-terminal.
let prompt: Interface | undefined
const rl = (): Interface => (prompt ??= createInterface({ input: process.stdin, output: process.stderr }))

const ctx: CommandContext = {
  version,
  pid: process.pid,
  env: process.env,
  cwd: process.cwd(),
  stdoutIsTty: process.stdout.isTTY,
  stderrIsTty: process.stderr.isTTY,
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
  onSignal: (signal, handler) => void process.on(signal, handler),
  onFatal: (handler) => {
    process.on('uncaughtException', (e) => handler('uncaughtException', e))
    process.on('unhandledRejection', (e) => handler('unhandledRejection', e))
  },
  exitNow: (code) => process.exit(code),
  kill: (pid, signal) => {
    try {
      process.kill(pid, signal)
      return true
    } catch {
      return false
    }
  },
  stdinIsTty: process.stdin.isTTY,
  ask: async (question, fallback) => {
    const answer = (await rl().question(fallback === '' ? `${question}: ` : `${question} [${fallback}]: `)).trim()
    return answer === '' ? fallback : answer
  },
  confirm: async (question) => {
    if (!process.stdin.isTTY) return false
    return /^y(es)?$/i.test((await rl().question(`${question} [y/N] `)).trim())
  },
  readSecret: async (prompt, twice) => {
    if (!process.stdin.isTTY) return firstLine(process.stdin)
    const first = await promptHidden(prompt)
    if (!twice || first === undefined) return first
    const again = await promptHidden('again: ')
    return again === first ? first : undefined
  },
}

/** Reads a line from the terminal without echoing it; undefined on Ctrl-C or Ctrl-D. */
function promptHidden(prompt: string): Promise<string | undefined> {
  process.stderr.write(prompt)
  const stdin = process.stdin
  stdin.setRawMode(true)
  stdin.resume()
  return new Promise((resolve) => {
    let text = ''
    const finish = (value: string | undefined): void => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      resolve(value)
    }
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(text)
        if (ch === '\u0003' || ch === '\u0004') return finish(undefined)
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1)
        else text += ch
      }
    }
    stdin.on('data', onData)
  })
}

/** The first line of a stream (without its newline), or undefined if it is empty. */
async function firstLine(stream: NodeJS.ReadableStream): Promise<string | undefined> {
  const rl = createInterface({ input: stream, crlfDelay: Infinity, terminal: false })
  try {
    for await (const line of rl) return line
    return undefined
  } finally {
    rl.close()
  }
}

/**
 * The heap flags of systemd/edge-agent.service. Without a heap cap V8 sizes
 * the heap from the machine's memory and lets garbage pile up to gigabytes
 * under connection churn before collecting it; the unit sets these through
 * NODE_OPTIONS, and `run` started any other way gets them too.
 */
const HEAP_FLAGS = '--max-old-space-size=256 --max-semi-space-size=2'

/**
 * V8 fixes the heap limits when the process starts (v8.setFlagsFromString
 * afterwards changes nothing), so `run` without a heap cap in NODE_OPTIONS or
 * the node flags re-executes itself once with HEAP_FLAGS. The parent only
 * relays signals and the exit code; the child dies with the parent (an IPC
 * channel closes when the parent does, even on SIGKILL), so killing the PID a
 * supervisor knows still ends the agent.
 */
function reexecWithHeapCap(): Promise<number> | undefined {
  if (process.argv[2] !== 'run') return undefined
  // Under systemd the unit sets the flags; a relay parent would also make the
  // PID that sends READY=1 differ from the main PID systemd watches.
  if (process.env['NOTIFY_SOCKET'] !== undefined) return undefined
  const options = `${process.env['NODE_OPTIONS'] ?? ''} ${process.execArgv.join(' ')}`
  if (options.includes('--max-old-space-size')) {
    if (process.send !== undefined) {
      // the re-executed child: go down hard with the parent, as it did
      process.on('disconnect', () => process.kill(process.pid, 'SIGKILL'))
    }
    return undefined
  }
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} ${HEAP_FLAGS}`.trim() },
  })
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(signal, () => child.kill(signal))
  }
  return new Promise((resolve) => {
    child.once('exit', (code, signal) =>
      resolve(code ?? (signal === null ? ExitCode.FAILURE : 128 + (signalNumber(signal) ?? 1))),
    )
    child.once('error', (err) => {
      process.stderr.write(`edge-agent: cannot start with a heap cap (${err.message}); running without\n`)
      resolve(-1)
    })
  })
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal]
}

// The CLI (and with it the whole agent) loads only where it runs: a parent
// that re-executes stays a small process.
const runCli = async (): Promise<number> => (await import('./cli.js')).runCli(process.argv, ctx)
const relayed = reexecWithHeapCap()
const exitCode = relayed === undefined ? runCli() : relayed.then((code) => (code === -1 ? runCli() : code))

exitCode.then(
  (code) => {
    prompt?.close()
    process.exitCode = code
    // `run` may leave handles (timers of libraries) behind after a clean stop.
    if (process.argv[2] === 'run') setImmediate(() => process.exit(code))
  },
  (e: unknown) => {
    process.stderr.write(`edge-agent: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exit(ExitCode.FAILURE)
  },
)
