// `edge-agent status`: asks the running agent's admin endpoint.
import { Command } from 'commander'
import type { AgentStatus } from '../app.js'
import { renderStatus } from '../status-view.js'
import { ExitCode, EXIT_CODES_HELP } from '../exit-codes.js'
import { withConfigOptions, loadOrReport, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

export function statusCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  return withConfigOptions(
    new Command('status')
      .description("show a running agent's state: clients, message rates, components")
      .option('--url <url>', 'admin endpoint (default: from the config, http://127.0.0.1:9180)')
      .option('--json', 'print the raw /status JSON', false)
      .addHelpText(
        'after',
        `\nExamples:\n  $ edge-agent status\n  $ edge-agent status --json | jq .broker.clients\n  $ edge-agent status --url http://127.0.0.1:9181\n${EXIT_CODES_HELP}`,
      ),
  ).action((o: ConfigFlags & { url?: string; json: boolean }) => done(status(ctx, o)))
}

/** The admin endpoint's base URL, from --url or the config. */
export function adminUrl(ctx: CommandContext, o: ConfigFlags & { url?: string }): string | number {
  if (o.url !== undefined) return o.url
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  const admin = loaded.config.admin
  const host = admin.host.includes(':') ? `[${admin.host}]` : admin.host
  return `http://${host}:${admin.port}`
}

async function status(ctx: CommandContext, o: ConfigFlags & { url?: string; json: boolean }): Promise<number> {
  const base = adminUrl(ctx, o)
  if (typeof base === 'number') return base
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
    if (o.json) ctx.out(JSON.stringify({ reachable: false, url: base, error: why }) + '\n')
    else ctx.err(`edge-agent: no agent answering at ${base} (${why})\nIs it running? systemctl status edge-agent\n`)
    return ExitCode.UNAVAILABLE
  }
  ctx.out(o.json ? JSON.stringify(body, null, 2) + '\n' : renderStatus(body))
  return healthy ? ExitCode.OK : ExitCode.FAILURE
}
