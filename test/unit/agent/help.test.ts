// Every command and subcommand teaches by example: its --help has "Examples:".
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Command } from 'commander'
import { buildProgram, runCli } from '../../../src/agent/cli.js'
import type { CommandContext } from '../../../src/agent/commands/context.js'

function context(out: (s: string) => void): CommandContext {
  return {
    version: '0.0.0-test',
    pid: process.pid,
    env: {},
    cwd: process.cwd(),
    stdoutIsTty: false,
    stderrIsTty: false,
    stdinIsTty: false,
    out,
    err: out,
    onSignal: () => undefined,
    onFatal: () => undefined,
    exitNow: () => {
      throw new Error('exitNow in a help test')
    },
    kill: () => false,
    ask: async (_q, fallback) => fallback,
    confirm: async () => false,
    readSecret: async () => undefined,
  }
}

function leaves(cmd: Command, path: string[] = []): string[][] {
  if (cmd.commands.length === 0) return [path]
  return cmd.commands.flatMap((c) => leaves(c, [...path, c.name()]))
}

test('every command and subcommand has --help with examples', async () => {
  const program = await buildProgram(
    context(() => undefined),
    () => undefined,
  )
  const paths = leaves(program)
  assert.ok(paths.length > 25, `${paths.length} commands`)
  const missing: string[] = []
  for (const path of paths) {
    let text = ''
    const code = await runCli(
      ['node', 'edge-agent', ...path, '--help'],
      context((s) => (text += s)),
    )
    assert.equal(code, 0, path.join(' '))
    if (!text.includes('Examples:')) missing.push(path.join(' '))
  }
  assert.deepEqual(missing, [])
})
