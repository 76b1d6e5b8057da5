// The --config/--set options and their help, apart from the loader so that
// commands can declare them without loading the schema and its validator.
import { Option, type Command } from 'commander'

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
    .addOption(
      new Option('-s, --set <key=value>', 'override one config key (repeatable)').argParser(collect).default([]),
    )
}

export const CONFIG_HELP = `
Config: the file given by --config, else $EDGE_AGENT_CONFIG, else
$CONFIGURATION_DIRECTORY/config.yaml under systemd, else
/etc/edge-agent/config.yaml when it exists, else built-in defaults.
Any key can be overridden, in this order of precedence (last wins):
  defaults < file < environment < --set
  env:   EDGE_AGENT_BROKER__LIMITS__MAX_CONNECTIONS=500   (levels split by __)
  flag:  --set broker.limits.maxConnections=500 --set 'broker.listeners[0].port=1884'`
