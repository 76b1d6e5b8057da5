// Shared by every command that reads the site config: --config/--set options
// and the file lookup order, and printing config errors the same way.
import { resolve } from 'node:path'
import { Option, type Command } from 'commander'
import { loadConfig, ENV_CONFIG_FILE, type LoadedConfig } from '../config/load.js'
import { ConfigError } from '../config/errors.js'
import { ExitCode } from '../exit-codes.js'
import type { CommandContext } from './context.js'

export interface ConfigFlags {
  config?: string
  set: string[]
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

export function withConfigOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', 'site config file (YAML)'))
    .addOption(new Option('-s, --set <key=value>', 'override one config key (repeatable)').argParser(collect).default([]))
}

export const CONFIG_HELP = `
Config: YAML file given by --config or $EDGE_AGENT_CONFIG (else
$CONFIGURATION_DIRECTORY/config.yaml under systemd, else built-in defaults).
Any key can be overridden, in this order of precedence (last wins):
  defaults < file < environment < --set
  env:   EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS=500   (levels split by __)
  flag:  --set broker.limits.maxConnections=500 --set 'broker.listeners[0].port=1884'`

/** The config file: --config, else $EDGE_AGENT_CONFIG, else systemd's ConfigurationDirectory, else none. */
export function configFile(ctx: CommandContext, flag: string | undefined): string | undefined {
  if (flag !== undefined) return flag
  const fromEnv = ctx.env[ENV_CONFIG_FILE]
  if (fromEnv) return fromEnv
  const dir = ctx.env['CONFIGURATION_DIRECTORY']?.split(':')[0]
  if (dir) return resolve(dir, 'config.yaml')
  return undefined
}

/** Loads the config, or prints why not and returns the exit code (78). */
export function loadOrReport(ctx: CommandContext, flags: ConfigFlags, json = false): LoadedConfig | number {
  try {
    return loadConfig({ file: configFile(ctx, flags.config), env: ctx.env, sets: flags.set, cwd: ctx.cwd })
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    if (json) ctx.out(JSON.stringify({ valid: false, code: e.code, file: e.file ?? null, issues: e.issues }, null, 2) + '\n')
    else ctx.err(`edge-agent: ${e.message}\n`)
    return ExitCode.CONFIG
  }
}
