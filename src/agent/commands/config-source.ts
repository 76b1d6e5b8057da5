// Shared by every command that reads the site config: --config/--set options,
// where the config comes from (config/locate.ts), and printing config errors
// the same way.
import { loadConfig, type LoadedConfig } from '../config/load.js'
import { locateConfig, describeLocation, defaultConfigPath, type ConfigLocation } from '../config/locate.js'
import { ConfigError } from '../config/errors.js'
import { ExitCode } from '../exit-codes.js'
import type { CommandContext } from './context.js'
import type { ConfigFlags } from './config-options.js'

export { withConfigOptions, CONFIG_HELP, type ConfigFlags } from './config-options.js'

/** The config file: see config/locate.ts for the order. */
export function configFile(ctx: CommandContext, flag: string | undefined): string | undefined {
  return locateConfig(ctx.env, ctx.cwd, flag).file
}

export interface LocatedConfig extends LoadedConfig {
  readonly location: ConfigLocation
}

export interface LoadOptions {
  /** Print errors as JSON on stdout (commands with --json). */
  readonly json?: boolean
  /** Say which config was used as the first line on stderr, when it is a terminal (default true). */
  readonly announce?: boolean
}

/** The announcement is made once per command, however often it loads the config. */
let announced = false

/** Loads the config, or prints why not and returns the exit code (78). */
export function loadOrReport(
  ctx: CommandContext,
  flags: ConfigFlags,
  opts: boolean | LoadOptions = false,
): LocatedConfig | number {
  const o: LoadOptions = typeof opts === 'boolean' ? { json: opts } : opts
  const location = locateConfig(ctx.env, ctx.cwd, flags.config)
  if (o.announce !== false && ctx.stderrIsTty && o.json !== true && !announced) {
    announced = true
    ctx.err(`${describeLocation(location)}\n`)
  }
  try {
    return { ...loadConfig({ file: location.file, env: ctx.env, sets: flags.set, cwd: ctx.cwd }), location }
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    if (o.json === true)
      ctx.out(JSON.stringify({ valid: false, code: e.code, file: e.file ?? null, issues: e.issues }, null, 2) + '\n')
    else ctx.err(`edge-agent: ${e.message}\n`)
    return ExitCode.CONFIG
  }
}

/**
 * Commands that touch state refuse to invent a data directory: with no config
 * file found and no dataDir given, they would create ./data wherever they were
 * started, which the service never reads. Returns the message, or undefined.
 */
export function implicitStateProblem(ctx: CommandContext, flags: Partial<ConfigFlags>): string | undefined {
  const location = locateConfig(ctx.env, ctx.cwd, flags.config)
  if (location.file !== undefined) return undefined
  if (ctx.env['EDGE_AGENT_DATA_DIR'] || ctx.env['STATE_DIRECTORY']) return undefined
  if ((flags.set ?? []).some((s) => /^\s*dataDir\s*=/.test(s))) return undefined
  return (
    `no config found (no --config, no $EDGE_AGENT_CONFIG, no ${defaultConfigPath(ctx.env)}), ` +
    'so there is no data directory to use; refusing to create ./data here.\n' +
    'Choose one:\n' +
    '  edge-agent site init                      # write /etc/edge-agent/config.yaml and create the data dir\n' +
    '  --config FILE  or  EDGE_AGENT_CONFIG=FILE # use a config file\n' +
    '  --set dataDir=DIR                          # name the data directory explicitly'
  )
}
