// Live reload: applies a new, already validated config to the running
// agent's parts, and says which changes wait for a restart (Agent.reload).
import type { Logger } from 'pino'
import { RESTART_LIMITS, type ClientAcl, type LocalBroker } from '../local-broker/index.js'
import type { Bridge, BridgeGroup } from '../bridge/index.js'
import type { LossReportTarget } from '../buffer/index.js'
import { passwordFilePath } from './config/paths.js'
import type { AgentConfig } from './config/schema.js'
import { compileDeviceAcl, lossReportTargets } from './builders.js'

/** What a reload did: applied live, or waiting for a restart (never silently ignored). */
export interface ReloadResult {
  /** Config paths whose new value is in effect. */
  readonly applied: readonly string[]
  /** Config paths that changed but take effect only after a restart. */
  readonly needsRestart: readonly string[]
}

/** The running agent's parts a reload touches. */
export interface ReloadParts {
  readonly broker: LocalBroker
  readonly bridges: BridgeGroup
  /** Where each upstream's loss reports go now (the store's, when it keeps them). */
  readonly setLossReports: (targets: Map<string, LossReportTarget>) => void
  /** A local CA runs (device grants apply live only then). */
  readonly hasCerts: boolean
  /** A bridge for a new or changed upstream, wired like the started ones. */
  readonly newBridge: (upstream: AgentConfig['upstreams'][number]) => Bridge
  /** broker.acl compiled, its acl_file re-read. */
  readonly clientAcl: (config: Readonly<AgentConfig>) => Promise<ClientAcl>
  readonly logger: Logger
}

export interface Reloaded extends ReloadResult {
  /** The config now in effect: the running one with what was applied. */
  readonly config: Readonly<AgentConfig>
  /** The bridge list changed (the agent's component list follows). */
  readonly bridgesChanged: boolean
}

/** Applies what can change live from `next` onto the parts running `cur`; one at a time (the caller serialises). */
export async function applyReload(
  cur: Readonly<AgentConfig>,
  next: Readonly<AgentConfig>,
  parts: ReloadParts,
  signal: AbortSignal,
): Promise<Reloaded> {
  const applied: string[] = []
  const needsRestart: string[] = []
  const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b)
  for (const key of ['dataDir', 'site', 'admin', 'buffer', 'certs', 'nodeRed'] as const) {
    if (differs(cur[key], next[key])) needsRestart.push(key)
  }
  let auth = cur.broker.auth
  if (cur.broker.auth.passwordFile !== next.broker.auth.passwordFile) {
    await parts.broker.setPasswordFile(passwordFilePath(next))
    const { passwordFile: _old, ...rest } = auth
    auth = next.broker.auth.passwordFile === undefined ? rest : { ...rest, passwordFile: next.broker.auth.passwordFile }
    applied.push('broker.auth.passwordFile')
  }
  for (const k of ['maxFailedLogins', 'failedLoginWindowSec'] as const) {
    if (cur.broker.auth[k] !== next.broker.auth[k]) needsRestart.push(`broker.auth.${k}`)
  }
  if (differs(cur.broker.listeners, next.broker.listeners)) needsRestart.push('broker.listeners')
  if (cur.log.format !== next.log.format) needsRestart.push('log.format')
  if (cur.log.level !== next.log.level) applied.push('log.level')

  // Broker limits: the live ones now, the rest at the next start.
  const limits = { ...cur.broker.limits }
  for (const k of Object.keys(next.broker.limits) as (keyof typeof limits)[]) {
    if (cur.broker.limits[k] === next.broker.limits[k]) continue
    if (RESTART_LIMITS.includes(k)) needsRestart.push(`broker.limits.${k}`)
    else {
      ;(limits as Record<string, unknown>)[k] = next.broker.limits[k]
      applied.push(`broker.limits.${k}`)
    }
  }
  if (differs(limits, cur.broker.limits)) parts.broker.reconfigure({ limits })

  // Device grants and groups: a new ACL for new and connected devices.
  let devices = cur.devices
  if (differs(cur.devices, next.devices)) {
    const live = ['publish', 'subscribe', 'groups', 'onDeniedPublish'] as const
    for (const k of Object.keys(next.devices) as (keyof typeof next.devices)[]) {
      if (!differs(cur.devices[k], next.devices[k])) continue
      if ((live as readonly string[]).includes(k) && parts.hasCerts) applied.push(`devices.${k}`)
      else needsRestart.push(`devices.${k}`)
    }
    if (parts.hasCerts) {
      // Renewal and CRL topics stay those of the running certs section.
      const acl = compileDeviceAcl({ ...next, certs: cur.certs })
      parts.broker.reconfigure({ acl, onDeniedPublish: next.devices.onDeniedPublish })
      devices = {
        ...cur.devices,
        publish: next.devices.publish,
        subscribe: next.devices.subscribe,
        groups: next.devices.groups,
        onDeniedPublish: next.devices.onDeniedPublish,
      }
    }
  }

  // The client ACL (broker.acl, its acl_file re-read): swapped for every listener.
  let brokerAcl = cur.broker.acl
  if (differs(cur.broker.acl, next.broker.acl) || next.broker.acl.file !== undefined) {
    const compiled = await parts.clientAcl(next)
    parts.broker.setAcl(compiled, next.broker.acl.onDeniedPublish)
    brokerAcl = next.broker.acl
    if (differs(cur.broker.acl, next.broker.acl)) applied.push('broker.acl')
  }

  // Upstreams: keep the bridges of unchanged upstreams, replace the rest.
  // One with certificate renewal is tied to its renewer: restart.
  const upstreams: AgentConfig['upstreams'][number][] = []
  let bridgesChanged = false
  const bridges: Bridge[] = []
  const byName = new Map(
    cur.upstreams.map((u, i) => [u.name, { u, bridge: parts.bridges.bridges[i] as Bridge }] as const),
  )
  for (const u of next.upstreams) {
    const old = byName.get(u.name)
    byName.delete(u.name)
    if (old !== undefined && !differs(old.u, u)) {
      upstreams.push(old.u)
      bridges.push(old.bridge)
    } else if (tiedToCertificate(u) || (old !== undefined && tiedToCertificate(old.u))) {
      needsRestart.push(`upstreams.${u.name}`)
      if (old !== undefined) {
        upstreams.push(old.u)
        bridges.push(old.bridge)
      }
    } else {
      upstreams.push(u)
      bridges.push(parts.newBridge(u))
      applied.push(`upstreams.${u.name}`)
    }
  }
  for (const { u, bridge } of byName.values()) {
    if (tiedToCertificate(u)) {
      needsRestart.push(`upstreams.${u.name}`)
      upstreams.push(u)
      bridges.push(bridge)
    } else applied.push(`upstreams.${u.name} (removed; its buffered messages stay in the buffer)`)
  }
  if (bridges.length !== parts.bridges.bridges.length || bridges.some((b, i) => b !== parts.bridges.bridges[i])) {
    parts.setLossReports(lossReportTargets({ ...next, upstreams }, bridges))
    await parts.bridges.reconfigure(bridges, signal)
    bridgesChanged = true
  }

  const config = frozen({
    ...cur,
    log: { ...cur.log, level: next.log.level },
    broker: { ...cur.broker, limits, auth, acl: brokerAcl },
    devices,
    upstreams,
  })
  parts.logger.info(
    { applied, needsRestart },
    applied.length + needsRestart.length === 0 ? 'config reloaded, nothing changed' : 'config reloaded',
  )
  return { applied, needsRestart, config, bridgesChanged }
}

/** An upstream whose client certificate another component keeps (renewer, ACME) is replaced only by a restart. */
function tiedToCertificate(u: AgentConfig['upstreams'][number]): boolean {
  return u.renewCertificate.enabled || u.clientCertificate === 'acme'
}

function frozen<T extends object>(value: T): Readonly<T> {
  return Object.freeze(value)
}
