#!/usr/bin/env node
// The process boundary: the only file that reads argv and the environment,
// handles signals and decides the exit code (see exit-codes.ts).
import './quiet-debug.js'
import { createRequire } from 'node:module'
import { createInterface, type Interface } from 'node:readline/promises'
import { runCli } from './cli.js'
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
}

runCli(process.argv, ctx).then(
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
