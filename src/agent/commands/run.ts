// `edge-agent run`: the long-running agent. Stops gracefully on SIGTERM or
// SIGINT (a second signal exits at once), within a bounded time.
import { Command } from 'commander'
import { mkdirDurable } from '../../storage/index.js'
import { createRootLogger, setLogLevel } from '../logger.js'
import { buildAgent, type Agent } from '../app.js'
import { preflight } from '../config/preflight.js'
import { ConfigError } from '../config/errors.js'
import { DataDirLock, DataDirLockedError } from '../data-lock.js'
import { createNotifier } from '../sd-notify.js'
import { ExitCode, EXIT_CODES_HELP } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import { loadConfig } from '../config/load.js'
import { locateConfig } from '../config/locate.js'
import type { CommandContext } from './context.js'

/** Past this, a stop that hangs is cut short; below systemd's TimeoutStopSec. */
const SHUTDOWN_DEADLINE_MS = 20_000

export function runCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  return withConfigOptions(
    new Command('run')
      .description(
        'run the agent in the foreground (as systemd does); stops cleanly on SIGTERM/SIGINT, reloads the config on SIGHUP',
      )
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent run\n  $ edge-agent run --config /etc/edge-agent/config.yaml\n  $ edge-agent run --set log.level=debug --set 'broker.listeners[0].port=1884'\n${CONFIG_HELP}\n${EXIT_CODES_HELP}`,
      ),
  ).action((o: ConfigFlags) => done(run(ctx, o)))
}

async function run(ctx: CommandContext, flags: ConfigFlags): Promise<number> {
  const loaded = loadChecked(ctx, flags)
  if (typeof loaded === 'number') return loaded
  const { config } = loaded
  // One agent per data dir, decided before anything in it is opened.
  let lock: DataDirLock
  try {
    // Durable: a power cut right after the first start must not take the data dir away.
    mkdirDurable(config.dataDir, 0o700)
    lock = DataDirLock.acquire(config.dataDir, ctx.pid)
  } catch (e) {
    if (!(e instanceof DataDirLockedError)) throw e
    ctx.err(`edge-agent: ${e.code}: ${e.message}\n`)
    return ExitCode.TEMPFAIL
  }
  try {
    return await runLocked(ctx, flags, loaded)
  } finally {
    lock.release()
  }
}

/** Loads the config and refuses what start would refuse (preflight.ts): exit 78 either way. */
function loadChecked(ctx: CommandContext, flags: ConfigFlags): ReturnType<typeof loadOrReport> {
  const loaded = loadOrReport(ctx, flags, { announce: false })
  if (typeof loaded === 'number') return loaded
  try {
    preflight(loaded.config, loaded.file)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    ctx.err(`edge-agent: ${e.message}\n`)
    return ExitCode.CONFIG
  }
  return loaded
}

async function runLocked(
  ctx: CommandContext,
  flags: ConfigFlags,
  loaded: Exclude<ReturnType<typeof loadOrReport>, number>,
): Promise<number> {
  const { config } = loaded
  const logger = await createRootLogger({ ...config.log, isTty: ctx.stdoutIsTty })
  logger.info(
    { version: ctx.version, config: loaded.file ?? 'built-in defaults', dataDir: config.dataDir },
    'agent starting',
  )
  let agentRef: Agent | undefined
  const reload = (): Promise<{ ok: boolean } & Record<string, unknown>> =>
    reloadConfig(ctx, flags, agentRef, logger, startAbort.signal)
  const agent = await buildAgent(config, { logger, version: ctx.version, reload })
  agentRef = agent
  // systemd Type=notify: READY once listening with the store open; WATCHDOG
  // from an event-loop timer, so a wedged loop gets the service restarted.
  const notify = createNotifier({ env: ctx.env, logger: logger.child({ component: 'sd-notify' }) })
  const startAbort = new AbortController()
  let exiting: Promise<number> | undefined

  const shutdown = (reason: string, code: number): Promise<number> => {
    exiting ??= (async () => {
      logger.info({ reason }, 'agent stopping')
      notify.stopping(`stopping (${reason})`)
      startAbort.abort(new Error(reason))
      const deadline = setTimeout(() => {
        logger.error({ reason, deadlineMs: SHUTDOWN_DEADLINE_MS }, 'stop deadline passed, exiting')
        ctx.exitNow(ExitCode.FAILURE)
      }, SHUTDOWN_DEADLINE_MS)
      deadline.unref()
      const failures = await agent.stop()
      await notify.stop()
      clearTimeout(deadline)
      logger.info({ reason, failures: failures.length }, 'agent stopped')
      return failures.length > 0 && code === 0 ? ExitCode.FAILURE : code
    })()
    return exiting
  }

  let resolveStopped: (code: number) => void = () => undefined
  const stopped = new Promise<number>((r) => (resolveStopped = r))
  const onSignal = (signal: NodeJS.Signals) => (): void => {
    if (exiting) {
      // A second signal means "now": do not wait for the graceful stop.
      logger.warn({ signal }, 'second stop request, exiting at once')
      ctx.exitNow(ExitCode.FAILURE)
    }
    void shutdown(signal, ExitCode.OK).then(resolveStopped)
  }
  ctx.onSignal('SIGTERM', onSignal('SIGTERM'))
  ctx.onSignal('SIGINT', onSignal('SIGINT'))
  // SIGHUP (systemctl reload, `edge-agent reload` without an admin endpoint):
  // read the config again and apply what can change live.
  ctx.onSignal('SIGHUP', () => {
    if (exiting || agent.state !== 'running') {
      logger.warn({ state: agent.state }, 'reload ignored: agent not running')
      return
    }
    notify.status('reloading the config')
    void reload()
      .then((r) =>
        notify.status(
          r.ok
            ? `running: ${agent.config.site.name} (config reloaded)`
            : 'running: reload refused (invalid config), see the log',
        ),
      )
      .catch((err: unknown) => logger.error({ err }, 'reload failed'))
  })
  ctx.onFatal((kind, err) => {
    logger.fatal({ err }, kind === 'uncaughtException' ? 'uncaught exception' : 'unhandled rejection')
    void shutdown(kind, ExitCode.FAILURE).then(resolveStopped)
  })

  try {
    await agent.start(startAbort.signal)
  } catch (e) {
    if (startAbort.signal.aborted) return stopped
    logger.fatal({ err: e }, 'agent failed to start')
    if ((e as { code?: string }).code === 'EDGE_ERR_CERT_CA_MISSING') {
      // preflight checks this; a CA removed in between is still the config's business (78: no restart loop).
      await agent.stop()
      await notify.stop()
      return ExitCode.CONFIG
    }
    await agent.stop()
    await notify.stop()
    return ExitCode.FAILURE
  }
  const listening = agent.broker
    .listeners()
    .map((l) => `${l.protocol}:${l.port}`)
    .join(' ')
  notify.ready(`running: ${config.site.name}, listening ${listening}`)
  notify.startWatchdog(() => agent.health().ok)
  return stopped
}

/**
 * Re-reads the config from where it was found at start (same flags, same
 * environment), refuses an invalid one (the running config stays), applies
 * the rest; logs and returns the outcome (POST /reload answers with it).
 */
async function reloadConfig(
  ctx: CommandContext,
  flags: ConfigFlags,
  agent: Agent | undefined,
  logger: import('pino').Logger,
  signal: AbortSignal,
): Promise<{ ok: boolean } & Record<string, unknown>> {
  if (agent === undefined || agent.state !== 'running') return { ok: false, error: 'agent not running' }
  const location = locateConfig(ctx.env, ctx.cwd, flags.config)
  let next
  try {
    next = loadConfig({ file: location.file, env: ctx.env, sets: flags.set, cwd: ctx.cwd }).config
    preflight(next, location.file)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    logger.error(
      { code: e.code, file: e.file, issues: e.issues },
      'reload refused: invalid config, the running config stays',
    )
    return { ok: false, code: e.code, file: e.file ?? null, issues: e.issues }
  }
  const result = await agent.reload(next, signal)
  if (result.applied.includes('log.level')) setLogLevel(logger, next.log.level)
  if (result.needsRestart.length > 0)
    logger.warn({ needsRestart: result.needsRestart }, 'config changes that need a restart')
  return { ok: true, file: location.file ?? null, ...result }
}
