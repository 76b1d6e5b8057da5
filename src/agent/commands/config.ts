// `edge-agent config init|validate|show|schema`
import { existsSync, writeFileSync } from 'node:fs'
import { Command } from 'commander'
import { stringify as toYaml } from 'yaml'
import { AgentConfigSchema } from '../config/schema.js'
import { EXAMPLE_CONFIG } from '../config/example.js'
import { redactConfig } from '../config/redact.js'
import { ExitCode } from '../exit-codes.js'
import { preflightIssues } from '../config/preflight.js'
import { ConfigError } from '../config/errors.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

export function configCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  const config = new Command('config').description('write, check and inspect the site config')
  config
    .command('init')
    .description('write a fully commented example config (to stdout, or --out FILE)')
    .option('-o, --out <file>', 'write to this file instead of stdout')
    .option('-f, --force', 'overwrite an existing file', false)
    .addHelpText(
      'after',
      '\nExamples:\n  $ edge-agent config init > site.yaml\n  $ sudo edge-agent config init --out /etc/edge-agent/config.yaml',
    )
    .action((o: { out?: string; force: boolean }) => done(init(ctx, o.out, o.force)))
  withConfigOptions(
    config
      .command('validate')
      .description('check a config without starting anything; exit 0 if valid, 78 if not')
      .option('--json', 'print the result as JSON', false)
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent config validate --config site.yaml && echo ok\n${CONFIG_HELP}`,
      ),
  ).action((o: ConfigFlags & { json: boolean }) => done(validate(ctx, o)))
  withConfigOptions(
    config
      .command('show')
      .description('print the effective config (defaults filled in, secrets redacted)')
      .option('--json', 'print JSON instead of YAML', false)
      .addHelpText(
        'after',
        '\nExamples:\n  $ edge-agent config show --config site.yaml\n  $ EDGE_AGENT_LOG__LEVEL=debug edge-agent config show --json',
      ),
  ).action((o: ConfigFlags & { json: boolean }) => done(show(ctx, o)))
  config
    .command('schema')
    .description('print the JSON Schema of the config (for editors: yaml-language-server)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ edge-agent config schema > edge-agent.schema.json\n  # then, first line of the config: # yaml-language-server: $schema=./edge-agent.schema.json',
    )
    .action(() => done(schema(ctx)))
  return config
}

async function init(ctx: CommandContext, file: string | undefined, force: boolean): Promise<number> {
  if (file === undefined) {
    ctx.out(EXAMPLE_CONFIG)
    return ExitCode.OK
  }
  if (existsSync(file) && !force) {
    ctx.err(`edge-agent: ${file} exists; use --force to overwrite it\n`)
    return ExitCode.FAILURE
  }
  writeFileSync(file, EXAMPLE_CONFIG, { mode: 0o640 })
  ctx.err(`wrote ${file}\n`)
  return ExitCode.OK
}

async function validate(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: true })
  if (typeof loaded === 'number') return loaded
  // What run would refuse on this machine (missing CA, unreadable files, data dir).
  const issues = preflightIssues(loaded.config, loaded.file ?? 'defaults')
  if (issues.length > 0) {
    const e = new ConfigError('EDGE_ERR_CONFIG_INVALID', issues, loaded.file)
    if (o.json)
      ctx.out(
        JSON.stringify({ valid: false, code: e.code, file: e.file ?? null, config: loaded.location, issues }, null, 2) +
          '\n',
      )
    else ctx.err(`edge-agent: ${e.message}\n`)
    return ExitCode.CONFIG
  }
  if (o.json) ctx.out(JSON.stringify({ valid: true, file: loaded.file ?? null, config: loaded.location }) + '\n')
  else ctx.out(`config ok${loaded.file ? `: ${loaded.file}` : ' (built-in defaults)'}\n`)
  return ExitCode.OK
}

async function show(ctx: CommandContext, o: ConfigFlags & { json: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: true })
  if (typeof loaded === 'number') return loaded
  const shown = redactConfig(loaded.config)
  ctx.out(o.json ? JSON.stringify(shown, null, 2) + '\n' : toYaml(shown))
  return ExitCode.OK
}

async function schema(ctx: CommandContext): Promise<number> {
  ctx.out(
    JSON.stringify(
      { $schema: 'http://json-schema.org/draft-07/schema#', title: 'edge-agent site config', ...AgentConfigSchema },
      null,
      2,
    ) + '\n',
  )
  return ExitCode.OK
}
