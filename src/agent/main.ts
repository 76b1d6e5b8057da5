#!/usr/bin/env node
// The process boundary: the only file that reads argv and the environment,
// handles signals and decides the exit code (see exit-codes.ts).
import { createRequire } from 'node:module'
import { existsSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { stringify as toYaml } from 'yaml'
import { parseCli, CliExit, type CliCommand } from './cli.js'
import { loadConfig, ENV_CONFIG_FILE, type LoadedConfig } from './config/load.js'
import { ConfigError } from './config/errors.js'
import { AgentConfigSchema } from './config/schema.js'
import { EXAMPLE_CONFIG } from './config/example.js'
import { redactConfig } from './config/redact.js'
import { createRootLogger } from './logger.js'
import { buildAgent } from './app.js'
import { renderStatus } from './status-view.js'
import { ExitCode } from './exit-codes.js'
import type { AgentStatus } from './app.js'

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version
/** Past this, a stop that hangs is cut short; below systemd's TimeoutStopSec. */
const SHUTDOWN_DEADLINE_MS = 20_000

const out = (s: string): void => void process.stdout.write(s)
const err = (s: string): void => void process.stderr.write(s)

async function main(): Promise<number> {
  let command: CliCommand
  try {
    command = await parseCli(process.argv, version, { out, err })
  } catch (e) {
    if (e instanceof CliExit) return e.exitCode
    throw e
  }
  switch (command.kind) {
    case 'run':
      return run(command)
    case 'config-init':
      return configInit(command.out, command.force)
    case 'config-validate': {
      const loaded = load(command, command.json)
      if (typeof loaded === 'number') return loaded
      if (command.json) out(JSON.stringify({ valid: true, file: loaded.file ?? null }) + '\n')
      else out(`config ok${loaded.file ? `: ${loaded.file}` : ' (built-in defaults)'}\n`)
      return ExitCode.OK
    }
    case 'config-show': {
      const loaded = load(command, command.json)
      if (typeof loaded === 'number') return loaded
      const shown = redactConfig(loaded.config)
      out(command.json ? JSON.stringify(shown, null, 2) + '\n' : toYaml(shown))
      return ExitCode.OK
    }
    case 'config-schema':
      out(JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', title: 'edge-agent site config', ...AgentConfigSchema }, null, 2) + '\n')
      return ExitCode.OK
    case 'status':
      return status(command)
  }
}

/** The config file: --config, else $EDGE_AGENT_CONFIG, else systemd's ConfigurationDirectory, else none. */
function configFile(flag: string | undefined): string | undefined {
  if (flag !== undefined) return flag
  const fromEnv = process.env[ENV_CONFIG_FILE]
  if (fromEnv) return fromEnv
  const dir = process.env['CONFIGURATION_DIRECTORY']?.split(':')[0]
  if (dir) return resolve(dir, 'config.yaml')
  return undefined
}

/** Loads the config or prints why not; returns the exit code on failure. */
function load(c: { config?: string; sets: string[] }, json = false): LoadedConfig | number {
  try {
    return loadConfig({ file: configFile(c.config), env: process.env, sets: c.sets, cwd: process.cwd() })
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    if (json) out(JSON.stringify({ valid: false, code: e.code, file: e.file ?? null, issues: e.issues }, null, 2) + '\n')
    else err(`edge-agent: ${e.message}\n`)
    return ExitCode.CONFIG
  }
}

function configInit(file: string | undefined, force: boolean): number {
  if (file === undefined) {
    out(EXAMPLE_CONFIG)
    return ExitCode.OK
  }
  if (existsSync(file) && !force) {
    err(`edge-agent: ${file} exists; use --force to overwrite it\n`)
    return ExitCode.FAILURE
  }
  writeFileSync(file, EXAMPLE_CONFIG, { mode: 0o640 })
  err(`wrote ${file}\n`)
  return ExitCode.OK
}

async function status(c: { config?: string; sets: string[]; url?: string; json: boolean }): Promise<number> {
  let base = c.url
  if (base === undefined) {
    const loaded = load(c)
    if (typeof loaded === 'number') return loaded
    const admin = loaded.config.admin
    const host = admin.host.includes(':') ? `[${admin.host}]` : admin.host
    base = `http://${host}:${admin.port}`
  }
  let body: AgentStatus
  let healthy: boolean
  try {
    const [s, h] = await Promise.all([
      fetch(new URL('/status', base), { signal: AbortSignal.timeout(5_000) }),
      fetch(new URL('/healthz', base), { signal: AbortSignal.timeout(5_000) }),
    ])
    if (!s.ok) throw new Error(`HTTP ${s.status}`)
    body = (await s.json()) as AgentStatus
    healthy = h.ok
  } catch (e) {
    const why = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)
    if (c.json) out(JSON.stringify({ reachable: false, url: base, error: why }) + '\n')
    else err(`edge-agent: no agent answering at ${base} (${why})\nIs it running? systemctl status edge-agent\n`)
    return ExitCode.UNAVAILABLE
  }
  out(c.json ? JSON.stringify(body, null, 2) + '\n' : renderStatus(body))
  return healthy ? ExitCode.OK : ExitCode.FAILURE
}

async function run(c: { config?: string; sets: string[] }): Promise<number> {
  const loaded = load(c)
  if (typeof loaded === 'number') return loaded
  const { config } = loaded
  const logger = await createRootLogger(config.log)
  logger.info({ version, config: loaded.file ?? 'built-in defaults', dataDir: config.dataDir }, 'agent starting')
  const agent = buildAgent(config, { logger, version })
  const startAbort = new AbortController()
  let exiting: Promise<number> | undefined

  const shutdown = (reason: string, code: number): Promise<number> => {
    exiting ??= (async () => {
      logger.info({ reason }, 'agent stopping')
      startAbort.abort(new Error(reason))
      const deadline = setTimeout(() => {
        logger.error({ reason, deadlineMs: SHUTDOWN_DEADLINE_MS }, 'stop deadline passed, exiting')
        process.exit(ExitCode.FAILURE)
      }, SHUTDOWN_DEADLINE_MS)
      deadline.unref()
      const failures = await agent.stop()
      clearTimeout(deadline)
      logger.info({ reason, failures: failures.length }, 'agent stopped')
      return failures.length > 0 && code === 0 ? ExitCode.FAILURE : code
    })()
    return exiting
  }

  let resolveStopped: (code: number) => void = () => undefined
  const stopped = new Promise<number>((r) => (resolveStopped = r))
  const onSignal = (signal: NodeJS.Signals): void => {
    if (exiting) {
      // A second signal means "now": do not wait for the graceful stop.
      logger.warn({ signal }, 'second stop request, exiting at once')
      process.exit(ExitCode.FAILURE)
    }
    void shutdown(signal, ExitCode.OK).then(resolveStopped)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  process.on('uncaughtException', (e) => {
    logger.fatal({ err: e }, 'uncaught exception')
    void shutdown('uncaughtException', ExitCode.FAILURE).then(resolveStopped)
  })
  process.on('unhandledRejection', (e) => {
    logger.fatal({ err: e }, 'unhandled rejection')
    void shutdown('unhandledRejection', ExitCode.FAILURE).then(resolveStopped)
  })

  try {
    await agent.start(startAbort.signal)
  } catch (e) {
    if (startAbort.signal.aborted) return stopped
    logger.fatal({ err: e }, 'agent failed to start')
    await agent.stop()
    return ExitCode.FAILURE
  }
  return stopped
}

main().then(
  (code) => {
    process.exitCode = code
    // Let stdout drain; only force the exit for a long-running command.
    if (process.argv[2] === 'run') setImmediate(() => process.exit(code))
  },
  (e: unknown) => {
    err(`edge-agent: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exit(ExitCode.FAILURE)
  },
)
