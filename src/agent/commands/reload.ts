// `edge-agent reload`: makes the running agent read its config again and
// apply what can change live (same as SIGHUP / systemctl reload), and prints
// what was applied, what needs a restart, or why the new config was refused.
import { Command } from 'commander'
import { ExitCode, EXIT_CODES_HELP } from '../exit-codes.js'
import { DataDirLock } from '../data-lock.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

interface Flags extends ConfigFlags {
  url?: string
  json: boolean
}

interface ReloadAnswer {
  ok: boolean
  applied?: string[]
  needsRestart?: string[]
  issues?: { source: string; path: string; message: string }[]
  error?: string
}

export function reloadCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  return withConfigOptions(
    new Command('reload')
      .description(
        'apply the edited config to the running agent without a restart (bridge rules, upstreams, limits, device grants, log level)',
      )
      .option('--url <url>', 'admin endpoint of the running agent (default: from the config)')
      .option('--json', 'print the outcome as JSON', false)
      .addHelpText(
        'after',
        `\nWhat cannot change live (listener ports, dataDir, buffer, certs) is listed as "needs restart".
An invalid config is refused and the running one stays (exit 78).

Examples:
  $ edge-agent bridge add --upstream up --topic 'devices/+/telemetry' --direction out && edge-agent reload
  $ sudo systemctl reload edge-agent     # same, through systemd (SIGHUP)
${EXIT_CODES_HELP}`,
      ),
  ).action((o: Flags) => done(reload(ctx, o)))
}

async function reload(ctx: CommandContext, o: Flags): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: true })
  if (typeof loaded === 'number') {
    if (!o.json) ctx.err('reload not sent: the running agent keeps its config\n')
    return loaded
  }
  const { admin, dataDir } = loaded.config
  if (o.url === undefined && !admin.enabled) return signalAgent(ctx, dataDir, o.json)
  const host = admin.host.includes(':') ? `[${admin.host}]` : admin.host
  const base = o.url ?? `http://${host}:${admin.port}`
  let answer: ReloadAnswer
  try {
    const res = await fetch(new URL('/reload', base), { method: 'POST', signal: AbortSignal.timeout(60_000) })
    answer = (await res.json()) as ReloadAnswer
  } catch (e) {
    const why = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)
    if (o.json) ctx.out(JSON.stringify({ ok: false, reachable: false, url: base, error: why }) + '\n')
    else ctx.err(`edge-agent: no agent answering at ${base} (${why})\nIs it running? systemctl status edge-agent\n`)
    return ExitCode.UNAVAILABLE
  }
  if (o.json) ctx.out(JSON.stringify(answer, null, 2) + '\n')
  else if (!answer.ok && answer.issues !== undefined) {
    ctx.err('edge-agent: reload refused, the running config stays:\n')
    for (const i of answer.issues) ctx.err(`  ${i.source}: ${i.path ? `${i.path}: ` : ''}${i.message}\n`)
  } else if (!answer.ok) ctx.err(`edge-agent: reload failed: ${answer.error ?? 'unknown error'}\n`)
  else {
    const applied = answer.applied ?? []
    const restart = answer.needsRestart ?? []
    if (applied.length + restart.length === 0) ctx.out('config reloaded: nothing changed\n')
    for (const a of applied) ctx.out(`applied: ${a}\n`)
    for (const r of restart) ctx.out(`needs restart: ${r}  (systemctl restart edge-agent)\n`)
  }
  if (answer.ok) return ExitCode.OK
  return answer.issues !== undefined ? ExitCode.CONFIG : ExitCode.FAILURE
}

/** Without an admin endpoint: SIGHUP to the PID holding the data-dir lock. */
function signalAgent(ctx: CommandContext, dataDir: string, json: boolean): number {
  const held = DataDirLock.isHeld(dataDir)
  if (!held.held || held.pid === undefined || !ctx.kill(held.pid, 'SIGHUP')) {
    const why = held.held ? 'its PID is unknown' : `no agent holds ${dataDir}`
    if (json) ctx.out(JSON.stringify({ ok: false, reachable: false, error: why }) + '\n')
    else ctx.err(`edge-agent: cannot reach the agent (admin endpoint disabled, ${why})\n`)
    return ExitCode.UNAVAILABLE
  }
  if (json) ctx.out(JSON.stringify({ ok: true, signalled: held.pid }) + '\n')
  else ctx.out(`sent SIGHUP to PID ${held.pid}; the outcome is in its log (journalctl -u edge-agent)\n`)
  return ExitCode.OK
}
