// The command line: one commander program whose commands live in
// src/agent/commands/, each a module that registers itself and returns its
// exit code. Nothing here touches the process; main.ts does.
import { Command, CommanderError } from 'commander'
import { EXIT_CODES_HELP } from './exit-codes.js'
import type { CommandContext } from './commands/context.js'
import { runCommand } from './commands/run.js'
import { configCommand } from './commands/config.js'
import { statusCommand } from './commands/status.js'
import { bufferCommand } from './commands/buffer.js'
import { certsCommand } from './commands/certs.js'
import { deviceCommand } from './commands/device.js'
import { usersCommand } from './commands/users.js'
import { nodeRedCommand } from './commands/node-red.js'

export function buildProgram(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const program = new Command('edge-agent')
    .description(
      'Edge gateway agent: a local MQTT broker for the devices of one network segment,\n' +
        'a durable store-and-forward buffer and a bridge to the next Purdue level up.',
    )
    .version(ctx.version, '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `\nExamples:\n  $ edge-agent run                       # defaults: MQTT on :1883, state in ./data\n  $ edge-agent config init > site.yaml   # commented example config\n  $ edge-agent run --config site.yaml\n  $ edge-agent status\n${EXIT_CODES_HELP}`,
    )
  for (const make of [runCommand, configCommand, statusCommand, bufferCommand, certsCommand, deviceCommand, usersCommand, nodeRedCommand]) program.addCommand(make(ctx, done))
  return program
}

/**
 * Runs the command in argv (process.argv shape) and resolves with the exit
 * code: 0 for --help/--version, 64 for usage errors, else the command's own.
 */
export async function runCli(argv: readonly string[], ctx: CommandContext): Promise<number> {
  let result: Promise<number> | undefined
  const program = buildProgram(ctx, (code) => {
    result = code
  })
  const configure = (cmd: Command): void => {
    cmd.exitOverride().configureOutput({ writeOut: (s) => ctx.out(s), writeErr: (s) => ctx.err(s) })
    for (const sub of cmd.commands) configure(sub)
  }
  configure(program)
  try {
    await program.parseAsync([...argv])
  } catch (err) {
    // Help asked for, or --version: 0. Help shown because a command was
    // missing, or any parse error: a usage error (64).
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 64
    throw err
  }
  if (result === undefined) {
    // `edge-agent` or `edge-agent config` alone: show help, as git does.
    const group = program.commands.find((c) => c.name() === argv[2])
    ctx.err((group ?? program).helpInformation())
    return 64
  }
  return result
}
