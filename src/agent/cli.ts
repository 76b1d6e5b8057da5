// The command line: commander program → a plain command object. No side
// effects here; src/agent/main.ts carries the command out.
import { Command, CommanderError, Option } from 'commander'

export type CliCommand =
  | { kind: 'run'; config?: string; sets: string[] }
  | { kind: 'config-init'; out?: string; force: boolean }
  | { kind: 'config-validate'; config?: string; sets: string[]; json: boolean }
  | { kind: 'config-show'; config?: string; sets: string[]; json: boolean }
  | { kind: 'config-schema' }
  | { kind: 'status'; config?: string; sets: string[]; url?: string; json: boolean }

/** Thrown for --help/--version (exitCode 0) and usage errors (exitCode 64). */
export class CliExit extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message)
  }
}

const EXIT_CODES_HELP = `
Exit codes:
  0   success (for run: stopped cleanly)
  1   runtime failure; for status: the agent reports a problem
  64  bad command line
  69  agent not reachable (status)
  78  invalid config (systemd does not restart on this code)`

const CONFIG_HELP = `
Config: YAML file given by --config or $EDGE_AGENT_CONFIG (else
$CONFIGURATION_DIRECTORY/config.yaml under systemd, else built-in defaults).
Any key can be overridden, in this order of precedence (last wins):
  defaults < file < environment < --set
  env:   EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS=500   (levels split by __)
  flag:  --set broker.limits.maxConnections=500 --set 'broker.listeners[0].port=1884'`

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

function configOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', 'site config file (YAML)'))
    .addOption(new Option('-s, --set <key=value>', 'override one config key (repeatable)').argParser(collect).default([]))
}

export function buildProgram(version: string, onCommand: (c: CliCommand) => void): Command {
  const program = new Command('edge-agent')
    .description(
      'Edge gateway agent: a local MQTT broker for the devices of one network segment,\n' +
        'a durable store-and-forward buffer and a bridge to the next Purdue level up.',
    )
    .version(version, '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', `\nExamples:\n  $ edge-agent run                       # defaults: MQTT on :1883, state in ./data\n  $ edge-agent config init > site.yaml   # commented example config\n  $ edge-agent run --config site.yaml\n  $ edge-agent status\n${EXIT_CODES_HELP}`)

  configOptions(
    program
      .command('run')
      .description('run the agent in the foreground (as systemd does); stops cleanly on SIGTERM/SIGINT')
      .addHelpText('after', `\nExamples:\n  $ edge-agent run\n  $ edge-agent run --config /etc/edge-agent/config.yaml\n  $ edge-agent run --set log.level=debug --set 'broker.listeners[0].port=1884'\n${CONFIG_HELP}\n${EXIT_CODES_HELP}`),
  ).action((o: { config?: string; set: string[] }) => {
    onCommand({ kind: 'run', ...(o.config === undefined ? {} : { config: o.config }), sets: o.set })
  })

  const config = program.command('config').description('write, check and inspect the site config')
  config
    .command('init')
    .description('write a fully commented example config (to stdout, or --out FILE)')
    .option('-o, --out <file>', 'write to this file instead of stdout')
    .option('-f, --force', 'overwrite an existing file', false)
    .addHelpText('after', '\nExamples:\n  $ edge-agent config init > site.yaml\n  $ sudo edge-agent config init --out /etc/edge-agent/config.yaml')
    .action((o: { out?: string; force: boolean }) => {
      onCommand({ kind: 'config-init', ...(o.out === undefined ? {} : { out: o.out }), force: o.force })
    })
  configOptions(
    config
      .command('validate')
      .description('check a config without starting anything; exit 0 if valid, 78 if not')
      .option('--json', 'print the result as JSON', false)
      .addHelpText('after', `\nExamples:\n  $ edge-agent config validate --config site.yaml && echo ok\n${CONFIG_HELP}`),
  ).action((o: { config?: string; set: string[]; json: boolean }) => {
    onCommand({ kind: 'config-validate', ...(o.config === undefined ? {} : { config: o.config }), sets: o.set, json: o.json })
  })
  configOptions(
    config
      .command('show')
      .description('print the effective config (defaults filled in, secrets redacted)')
      .option('--json', 'print JSON instead of YAML', false)
      .addHelpText('after', `\nExamples:\n  $ edge-agent config show --config site.yaml\n  $ EDGE_AGENT_LOG__LEVEL=debug edge-agent config show --json`),
  ).action((o: { config?: string; set: string[]; json: boolean }) => {
    onCommand({ kind: 'config-show', ...(o.config === undefined ? {} : { config: o.config }), sets: o.set, json: o.json })
  })
  config
    .command('schema')
    .description('print the JSON Schema of the config (for editors: yaml-language-server)')
    .action(() => onCommand({ kind: 'config-schema' }))

  configOptions(
    program
      .command('status')
      .description("show a running agent's state: clients, message rates, components")
      .option('--url <url>', 'admin endpoint (default: from the config, http://127.0.0.1:9180)')
      .option('--json', 'print the raw /status JSON', false)
      .addHelpText('after', `\nExamples:\n  $ edge-agent status\n  $ edge-agent status --json | jq .broker.clients\n  $ edge-agent status --url http://127.0.0.1:9181\n${EXIT_CODES_HELP}`),
  ).action((o: { config?: string; set: string[]; url?: string; json: boolean }) => {
    onCommand({
      kind: 'status',
      ...(o.config === undefined ? {} : { config: o.config }),
      ...(o.url === undefined ? {} : { url: o.url }),
      sets: o.set,
      json: o.json,
    })
  })
  return program
}

/** Parses argv (process.argv shape) into a command; throws CliExit for help, version and usage errors. */
export async function parseCli(argv: readonly string[], version: string, write: { out: (s: string) => void; err: (s: string) => void }): Promise<CliCommand> {
  let parsed: CliCommand | undefined
  const program = buildProgram(version, (c) => {
    parsed = c
  })
  const configure = (cmd: Command): void => {
    cmd.exitOverride().configureOutput({ writeOut: write.out, writeErr: write.err })
    for (const sub of cmd.commands) configure(sub)
  }
  configure(program)
  try {
    await program.parseAsync([...argv])
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help asked for, or --version: 0. Help shown because a command was
      // missing, or any parse error: a usage error.
      throw new CliExit(err.exitCode === 0 ? 0 : 64, err.message)
    }
    throw err
  }
  if (parsed === undefined) {
    // `edge-agent` or `edge-agent config` alone: show help, as git does.
    const target = argv[2] === 'config' ? program.commands.find((c) => c.name() === 'config') : program
    write.err((target ?? program).helpInformation())
    throw new CliExit(64, 'no command given')
  }
  return parsed
}
