#!/usr/bin/env node
// The process boundary: the only file that reads argv and the environment,
// handles signals and decides the exit code (see exit-codes.ts).
import './quiet-debug.js'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline/promises'
import { runCli } from './cli.js'
import { ExitCode } from './exit-codes.js'
import type { CommandContext } from './commands/context.js'

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version

const ctx: CommandContext = {
  version,
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
  confirm: async (question) => {
    if (!process.stdin.isTTY) return false
    const rl = createInterface({ input: process.stdin, output: process.stderr })
    try {
      return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim())
    } finally {
      rl.close()
    }
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

runCli(process.argv, ctx).then(
  (code) => {
    process.exitCode = code
    // `run` may leave handles (timers of libraries) behind after a clean stop.
    if (process.argv[2] === 'run') setImmediate(() => process.exit(code))
  },
  (e: unknown) => {
    process.stderr.write(`edge-agent: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exit(ExitCode.FAILURE)
  },
)
