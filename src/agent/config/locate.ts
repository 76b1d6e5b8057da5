// Where the site config comes from, in one place for every command:
//   --config > $EDGE_AGENT_CONFIG > $CONFIGURATION_DIRECTORY/config.yaml (systemd)
//   > <sysconfdir>/edge-agent/config.yaml when it exists > built-in defaults.
// <sysconfdir> is /etc unless $EDGE_AGENT_SYSCONFDIR says otherwise (for tests
// and packagers, not for operators).
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { ENV_CONFIG_FILE } from './load.js'

/** Environment variable moving the /etc root (tests, packagers). */
export const ENV_SYSCONFDIR = 'EDGE_AGENT_SYSCONFDIR'

export type ConfigSourceKind = 'flag' | 'env' | 'systemd' | 'default-path' | 'defaults'

export interface ConfigLocation {
  /** Absolute path of the file to read, or undefined for built-in defaults. */
  readonly file: string | undefined
  readonly source: ConfigSourceKind
}

type Env = Readonly<Record<string, string | undefined>>

/** The default config path: <sysconfdir>/edge-agent/config.yaml. */
export function defaultConfigPath(env: Env): string {
  return join(env[ENV_SYSCONFDIR] || '/etc', 'edge-agent', 'config.yaml')
}

export function locateConfig(env: Env, cwd: string, flag: string | undefined): ConfigLocation {
  if (flag !== undefined) return { file: resolve(cwd, flag), source: 'flag' }
  const fromEnv = env[ENV_CONFIG_FILE]
  if (fromEnv) return { file: resolve(cwd, fromEnv), source: 'env' }
  const dir = env['CONFIGURATION_DIRECTORY']?.split(':')[0]
  if (dir) return { file: resolve(cwd, dir, 'config.yaml'), source: 'systemd' }
  const path = defaultConfigPath(env)
  if (existsSync(path)) return { file: path, source: 'default-path' }
  return { file: undefined, source: 'defaults' }
}

const WHY: Record<ConfigSourceKind, string> = {
  flag: '--config',
  env: `$${ENV_CONFIG_FILE}`,
  systemd: '$CONFIGURATION_DIRECTORY',
  'default-path': 'default path',
  defaults: 'no config file found',
}

/** 'config: /etc/edge-agent/config.yaml (default path)' */
export function describeLocation(loc: ConfigLocation): string {
  return loc.file === undefined
    ? `config: built-in defaults (${WHY.defaults})`
    : `config: ${loc.file} (${WHY[loc.source]})`
}
