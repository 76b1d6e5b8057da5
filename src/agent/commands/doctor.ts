// `edge-agent doctor`: what is wrong with this gateway and how to fix it.
// pass/warn/fail per check with the fix; --json; exit 0 when all pass, 2 when
// the worst is a warning, 1 when something fails, 78 when the config itself is
// invalid (its problems are listed like `config validate`).
import { statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { ExitCode } from '../exit-codes.js'
import { DataDirLock } from '../data-lock.js'
import { preflightIssues } from '../config/preflight.js'
import { describeLocation } from '../config/locate.js'
import {
  certificateCheck,
  clockCheck,
  diskCheck,
  localCertificateChecks,
  modeChecks,
  portChecks,
  upstreamChecks,
  worst,
  type CheckResult,
} from '../doctor.js'
import { withConfigOptions, loadOrReport, CONFIG_HELP, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

/** Exit code when the worst result is a warning. */
export const DOCTOR_WARN_EXIT = 2

export function doctorCommand(ctx: CommandContext, done: (code: Promise<number>) => void): Command {
  return withConfigOptions(
    new Command('doctor')
      .description(
        'check this gateway: config, data dir and lock, clock, disk, certificates, upstreams step by step, ports, file modes',
      )
      .option('--json', 'print the results as JSON', false)
      .option('--offline', 'skip the upstream network checks', false)
      .addHelpText(
        'after',
        `\nExit: 0 all pass, 2 warnings, 1 a check failed, 78 the config is invalid.\n\nExamples:\n  $ sudo -u edge-agent edge-agent doctor\n  $ edge-agent doctor --json | jq '.checks[] | select(.status != "pass")'\n${CONFIG_HELP}`,
      ),
  ).action((o: ConfigFlags & { json: boolean; offline: boolean }) => done(doctor(ctx, o)))
}

async function doctor(ctx: CommandContext, o: ConfigFlags & { json: boolean; offline: boolean }): Promise<number> {
  const loaded = loadOrReport(ctx, o, { json: o.json, announce: false })
  if (typeof loaded === 'number') return loaded
  const { config } = loaded
  const checks: CheckResult[] = []
  checks.push({ check: 'config', status: 'pass', detail: describeLocation(loaded.location).replace(/^config: /, '') })
  const pre = preflightIssues(config, loaded.file ?? 'defaults')
  for (const i of pre)
    checks.push({
      check: `config: ${i.path}`,
      status: 'fail',
      detail: i.message,
      fix: 'edit the config (edge-agent config validate shows the same)',
    })
  if (pre.length === 0)
    checks.push({
      check: 'config: run would start',
      status: 'pass',
      detail: 'schema, semantic and machine checks pass',
    })

  const lock = DataDirLock.isHeld(config.dataDir)
  checks.push({ check: 'data dir', status: 'pass', detail: config.dataDir })
  checks.push({
    check: 'data dir lock',
    status: 'pass',
    detail: lock.held
      ? `held by the running agent (PID ${lock.pid ?? 'unknown'})`
      : 'free: no agent runs on this data dir',
  })
  checks.push(clockCheck(Date.now(), builtAt()))
  checks.push(diskCheck(config))
  checks.push(...localCertificateChecks(config, Date.now()))
  for (const u of config.upstreams)
    if (u.certFile !== '')
      checks.push(certificateCheck(`certificate: upstream ${u.name} client`, u.certFile, Date.now(), 14))
  config.broker.listeners.forEach((l) => {
    if (l.certFile !== undefined)
      checks.push(certificateCheck(`certificate: listener ${l.host}:${l.port}`, l.certFile, Date.now(), 14))
  })
  checks.push(...(await portChecks(config, lock.held)))
  checks.push(...modeChecks(config, loaded.file))
  if (!o.offline) {
    const results = await Promise.all(config.upstreams.map((u) => upstreamChecks(u, config.site.name)))
    checks.push(...results.flat())
  }

  const w = worst(checks)
  if (o.json)
    ctx.out(JSON.stringify({ config: loaded.location, dataDir: config.dataDir, worst: w, checks }, null, 2) + '\n')
  else {
    for (const c of checks) {
      ctx.out(`${c.status.toUpperCase().padEnd(4)}  ${c.check}: ${c.detail}\n`)
      if (c.fix !== undefined && c.status !== 'pass') ctx.out(`      fix: ${c.fix}\n`)
    }
    const counts = (s: string) => checks.filter((c) => c.status === s).length
    ctx.out(`\n${counts('pass')} passed, ${counts('warn')} warnings, ${counts('fail')} failed\n`)
  }
  return w === 'fail' ? ExitCode.FAILURE : w === 'warn' ? DOCTOR_WARN_EXIT : ExitCode.OK
}

/** When this build was made: the mtime of this file, as installed. */
function builtAt(): number | undefined {
  try {
    return statSync(fileURLToPath(import.meta.url)).mtimeMs
  } catch {
    return undefined
  }
}
