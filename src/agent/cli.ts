// The command line: one commander program whose commands live in
// src/agent/commands/, each a module that registers itself and returns its
// exit code. Nothing here touches the process; main.ts does.
import { Command, CommanderError } from 'commander'
import type { CommandContext } from './commands/context.js'
import type { ConfigFlags } from './commands/config-source.js'
import { ExitCode, EXIT_CODES_HELP } from './exit-codes.js'

type CommandFactory = (ctx: CommandContext, done: (code: Promise<number>) => void) => Command

/**
 * Every top-level command, in help order: one line per command. Modules load
 * only when their command runs (or for the full --help): the certs, MQTT and
 * SQLite code stays out of `status` and `--version`.
 */
const COMMANDS: readonly { readonly name: string; readonly load: () => Promise<CommandFactory> }[] = [
  { name: 'site', load: async () => (await import('./commands/site.js')).siteCommand },
  { name: 'run', load: async () => (await import('./commands/run.js')).runCommand },
  { name: 'reload', load: async () => (await import('./commands/reload.js')).reloadCommand },
  { name: 'status', load: async () => (await import('./commands/status.js')).statusCommand },
  { name: 'doctor', load: async () => (await import('./commands/doctor.js')).doctorCommand },
  { name: 'config', load: async () => (await import('./commands/config.js')).configCommand },
  { name: 'bridge', load: async () => (await import('./commands/bridge.js')).bridgeCommand },
  { name: 'device', load: async () => (await import('./commands/device.js')).deviceCommand },
  { name: 'buffer', load: async () => (await import('./commands/buffer.js')).bufferCommand },
  { name: 'certs', load: async () => (await import('./commands/certs.js')).certsCommand },
  { name: 'users', load: async () => (await import('./commands/users.js')).usersCommand },
  { name: 'nodered', load: async () => (await import('./commands/node-red.js')).nodeRedCommand },
  { name: 'completion', load: async () => (await import('./commands/completion.js')).completionCommand },
]

/** Names of every top-level command (shell completion). */
export const COMMAND_NAMES: readonly string[] = COMMANDS.map((c) => c.name)

/**
 * Commands that read or write the data directory: with no config found they
 * refuse instead of creating ./data (config-source.ts implicitStateProblem).
 * 'group' covers all its subcommands; 'group sub' one of them.
 */
export const STATE_COMMANDS: Set<string> = new Set(['certs', 'buffer', 'device add', 'device list', 'device remove'])

/**
 * Offline commands that must not run beside a running agent on the same data
 * dir (they replace the CA it holds in memory). Issuing and revoking
 * certificates coordinate through the CA's own lock, and `buffer purge`
 * through SQLite (the running agent sees the purge): not listed.
 */
export const EXCLUSIVE_COMMANDS: Set<string> = new Set(['certs init', 'certs import-ca'])

/** A command refused before its action ran; runCli prints it and exits with code. */
class Refused extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message)
  }
}

function commandPath(cmd: Command): string {
  const names: string[] = []
  for (let c: Command | null = cmd; c !== null && c.parent !== null; c = c.parent) names.unshift(c.name())
  return names.join(' ')
}

async function guardState(ctx: CommandContext, action: Command): Promise<void> {
  const path = commandPath(action)
  const group = path.split(' ')[0] ?? ''
  const flags = action.opts<Partial<ConfigFlags>>()
  if (!STATE_COMMANDS.has(path) && !STATE_COMMANDS.has(group) && !EXCLUSIVE_COMMANDS.has(path)) return
  const { implicitStateProblem, loadOrReport } = await import('./commands/config-source.js')
  if (STATE_COMMANDS.has(path) || STATE_COMMANDS.has(group)) {
    const problem = implicitStateProblem(ctx, flags)
    if (problem !== undefined) throw new Refused(`edge-agent ${path}: ${problem}`, ExitCode.CONFIG)
  }
  if (EXCLUSIVE_COMMANDS.has(path)) {
    const loaded = loadOrReport(ctx, { set: [], ...flags }, { announce: false })
    if (typeof loaded === 'number') throw new Refused('', loaded)
    const { DataDirLock } = await import('./data-lock.js')
    const held = DataDirLock.isHeld(loaded.config.dataDir)
    if (held.held) {
      throw new Refused(
        `edge-agent ${path}: EDGE_ERR_DATA_DIR_LOCKED: the agent${held.pid === undefined ? '' : ` (PID ${held.pid})`} is running on ` +
          `${loaded.config.dataDir}; stop it first (systemctl stop edge-agent), then run this again`,
        ExitCode.TEMPFAIL,
      )
    }
  }
}

/**
 * The program with the commands argv needs: the one named (its module alone
 * is imported), or all of them for top-level help and unknown commands.
 */
export async function buildProgram(
  ctx: CommandContext,
  done: (code: Promise<number>) => void,
  argv: readonly string[] = [],
): Promise<Command> {
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
  const first = argv[2]
  if (first !== '-V' && first !== '--version') {
    const named = COMMANDS.filter((c) => c.name === first)
    for (const c of named.length > 0 ? named : COMMANDS) program.addCommand((await c.load())(ctx, done))
  }
  program.hook('preAction', (_program, action) => guardState(ctx, action))
  return program
}

/**
 * Runs the command in argv (process.argv shape) and resolves with the exit
 * code: 0 for --help/--version, 64 for usage errors, else the command's own.
 */
export async function runCli(argv: readonly string[], ctx: CommandContext): Promise<number> {
  let result: Promise<number> | undefined
  const program = await buildProgram(
    ctx,
    (code) => {
      result = code
    },
    argv,
  )
  const configure = (cmd: Command): void => {
    cmd.exitOverride().configureOutput({ writeOut: (s) => ctx.out(s), writeErr: (s) => ctx.err(s) })
    for (const sub of cmd.commands) configure(sub)
  }
  configure(program)
  try {
    await program.parseAsync([...argv])
  } catch (err) {
    if (err instanceof Refused) {
      if (err.message !== '') ctx.err(`${err.message}\n`)
      return err.exitCode
    }
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
