// The gateway's own ACME certificate in `certs list` and `certs renew-gateway`.
// The certificate is read from the state directory (no running agent
// needed); its next renewal and a forced renewal come from the running
// agent's admin endpoint.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { splitPem, summarize, type GatewayCertificateStatus } from '../../certs/index.js'
import type { AgentConfig } from '../config/schema.js'
import { ExitCode } from '../exit-codes.js'
import { adminUrl } from './status.js'
import { loadOrReport, type ConfigFlags } from './config-source.js'
import type { CommandContext } from './context.js'

export interface GatewayRow {
  readonly id: string
  readonly profile: 'gateway'
  readonly subject: string
  readonly issuer: string
  readonly serial: string
  readonly notBefore: string
  readonly notAfter: string
  readonly status: 'valid' | 'expired'
  readonly expiresInSec: number
  /** From the running agent; null when it cannot be asked. */
  readonly nextRenewalAt: string | null
  readonly lastError: { readonly code: string; readonly message: string } | null
}

/** The gateway certificate row, or undefined without certs.acme or before the first issuance. */
export async function gatewayRow(config: Readonly<AgentConfig>, now: number): Promise<GatewayRow | undefined> {
  const acme = config.certs.acme
  if (acme === undefined) return undefined
  let text: string
  try {
    text = await readFile(join(config.dataDir, 'acme', 'gateway.pem'), 'utf8')
  } catch {
    return undefined
  }
  const first = splitPem(text)[0]
  if (first === undefined) return undefined
  const c = summarize(first)
  const live = await liveStatus(config)
  return {
    id: acme.identifiers[0] ?? c.cn,
    profile: 'gateway',
    subject: c.subject,
    issuer: c.issuer,
    serial: c.serial,
    notBefore: new Date(c.notBefore).toISOString(),
    notAfter: new Date(c.notAfter).toISOString(),
    status: c.notAfter <= now ? 'expired' : 'valid',
    expiresInSec: Math.round((c.notAfter - now) / 1000),
    nextRenewalAt: live?.serial === c.serial ? live.nextRenewalAt : null,
    lastError: live?.lastError ?? null,
  }
}

async function liveStatus(config: Readonly<AgentConfig>): Promise<GatewayCertificateStatus | undefined> {
  if (!config.admin.enabled) return undefined
  const host = config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host
  try {
    const r = await fetch(`http://${host}:${config.admin.port}/status`, { signal: AbortSignal.timeout(2_000) })
    if (!r.ok) return undefined
    const body = (await r.json()) as { gatewayCertificate?: GatewayCertificateStatus | null }
    return body.gatewayCertificate ?? undefined
  } catch {
    return undefined
  }
}

export function renderGateway(g: GatewayRow, human: (sec: number) => string): string {
  return [
    '',
    'gateway certificate (certs.acme):',
    `  subject       ${g.subject}`,
    `  issuer        ${g.issuer}`,
    `  serial        ${g.serial}`,
    `  not after     ${g.notAfter} (${g.status === 'valid' ? `in ${human(g.expiresInSec)}` : 'EXPIRED'})`,
    `  next renewal  ${g.nextRenewalAt ?? '- (agent not running)'}`,
    ...(g.lastError === null ? [] : [`  last error    ${g.lastError.message} (${g.lastError.code})`]),
    '',
  ].join('\n')
}

/** `certs renew-gateway`: asks the running agent to renew now and waits for the outcome. */
export async function renewGateway(
  ctx: CommandContext,
  o: ConfigFlags & { url?: string; json: boolean },
): Promise<number> {
  const loaded = loadOrReport(ctx, o)
  if (typeof loaded === 'number') return loaded
  if (loaded.config.certs.acme === undefined) {
    ctx.err('edge-agent: no gateway certificate to renew: certs.acme is not configured (see docs/certificates.md)\n')
    return ExitCode.CONFIG
  }
  const base = adminUrl(ctx, o)
  if (typeof base === 'number') return base
  let res: Response
  try {
    // An order may take a while (challenges, a slow CA, a DNS hook): wait long enough for its own timeouts.
    res = await fetch(new URL('/certs/renew-gateway', base), { method: 'POST', signal: AbortSignal.timeout(600_000) })
  } catch (e) {
    const why = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)
    ctx.err(
      `edge-agent: no agent answering at ${base} (${why})\n` +
        'renew-gateway asks the running agent; a starting agent without a certificate orders one at once.\n',
    )
    return ExitCode.UNAVAILABLE
  }
  const body = (await res.json().catch(() => ({}))) as Partial<GatewayCertificateStatus> & {
    promoted?: boolean
    error?: string
  }
  if (o.json) ctx.out(JSON.stringify(body, null, 2) + '\n')
  if (!res.ok) {
    if (!o.json) ctx.err(`edge-agent: ${body.error ?? `HTTP ${res.status}`}\n`)
    return ExitCode.FAILURE
  }
  if (body.promoted === true) {
    if (!o.json)
      ctx.out(`renewed: serial ${body.serial ?? '?'}, not after ${body.notAfter ?? '?'}; upstreams reconnect with it\n`)
    return ExitCode.OK
  }
  if (!o.json) {
    const e = body.lastError
    const why = e === null || e === undefined ? 'unknown error' : `${e.message} (${e.code})`
    ctx.err(
      `edge-agent: renewal failed, the current certificate stays: ${why}\nNext attempt: ${body.nextRenewalAt ?? '?'}\n`,
    )
  }
  return ExitCode.FAILURE
}
