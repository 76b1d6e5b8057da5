// `edge-agent run`: the long-running agent. Stops gracefully on SIGTERM or
// SIGINT (a second signal exits at once), within a bounded time.
import { Command } from 'commander'
import { createRootLogger } from '../logger.js'
import { buildAgent } from '../app.js'
import { createNotifier } from '../sd-notify.js'
import { ExitCode, EXIT_CODES_HELP } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

/** Past this, a stop that hangs is cut short; below systemd's TimeoutStopSec. */
const SHUTDOWN_DEADLINE_MS = 20_000

export function runCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  return withConfigOptions(
    new Command('run')
      .description('run the agent in the foreground (as systemd does); stops cleanly on SIGTERM/SIGINT')
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent run\n  $ edge-agent run --config /etc/edge-agent/config.yaml\n  $ edge-agent run --set log.level=debug --set 'broker.listeners[0].port=1884'\n${CONFIG_HELP}\n${EXIT_CODES_HELP}`,
      ),
  ).action((o: ConfigFlags) => done(run(ctx, o)))
}

async function run(ctx: CommandContext, flags: ConfigFlags): Promise<number> {
  const loaded = loadOrReport(ctx, flags)
  if (typeof loaded === 'number') return loaded
  const { config } = loaded
  const logger = await createRootLogger({ ...config.log, isTty: ctx.stdoutIsTty })
  logger.info({ version: ctx.version, config: loaded.file ?? 'built-in defaults', dataDir: config.dataDir }, 'agent starting')
  const agent = buildAgent(config, { logger, version: ctx.version })
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
  ctx.onFatal((kind, err) => {
    logger.fatal({ err }, kind === 'uncaughtException' ? 'uncaught exception' : 'unhandled rejection')
    void shutdown(kind, ExitCode.FAILURE).then(resolveStopped)
  })

  try {
    await agent.start(startAbort.signal)
  } catch (e) {
    if (startAbort.signal.aborted) return stopped
    logger.fatal({ err: e }, 'agent failed to start')
    await agent.stop()
    await notify.stop()
    return ExitCode.FAILURE
  }
  const listening = agent.broker.listeners().map((l) => `${l.protocol}:${l.port}`).join(' ')
  notify.ready(`running: ${config.site.name}, listening ${listening}`)
  notify.startWatchdog(() => agent.health().ok)
  return stopped
}
