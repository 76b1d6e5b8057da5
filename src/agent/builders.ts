// Component builders of the composition root (app.ts): config sections into
// constructor options. No I/O here but compileClientAcl (reads broker.acl.file); components do theirs in start().
import { hostname } from 'node:os'
import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { Acl, ClientAcl, parseMosquittoAcl } from '../local-broker/index.js'
import type { CertificateRenewer, CertsModule, CertsService } from '../certs/index.js'
import type { Bridge } from '../bridge/index.js'
import { SqliteStore, type LossReportTarget } from '../buffer/index.js'
import { BROKER_STATE_MIGRATIONS } from '../broker-state/index.js'
import { clientAclOptions } from './config/semantic.js'
import type { AgentConfig } from './config/schema.js'

/** The device space without the local CA's renewal and CRL topics (external PKI only). */
export function externalPkiAcl(c: Readonly<AgentConfig>): Acl {
  return Acl.compile({ publish: c.devices.publish, subscribe: c.devices.subscribe, groups: c.devices.groups })
}

export function compileDeviceAcl(c: Readonly<AgentConfig>): Acl {
  const prefix = c.certs.renewal.topicPrefix
  return Acl.compile({
    publish: c.devices.publish,
    subscribe: c.devices.subscribe,
    groups: c.devices.groups,
    requests: [`${prefix}/csr`],
    replies: [`${prefix}/cert`],
    broadcast: [c.certs.crl.topic],
  })
}

export function newSqliteStore(config: Readonly<AgentConfig>, logger: Logger): SqliteStore {
  const b = config.buffer
  return new SqliteStore({
    dataDir: config.dataDir,
    logger,
    durability: b.durability,
    maxBatch: b.maxBatch,
    batchWindowMs: b.batchWindowMs,
    maxFsyncsPerSecond: b.maxFsyncsPerSecond,
    // 0 in the config means "size it from the disk", which the store does when unset.
    ...(b.maxBytes > 0 ? { maxBytes: b.maxBytes } : {}),
    ...(b.minFreeBytes > 0 ? { minFreeBytes: b.minFreeBytes } : {}),
    migrations: BROKER_STATE_MIGRATIONS,
  })
}

/** buffer ← bridges: per upstream (= buffer queue), where its loss reports go and its rules' topic filters. */
export function lossReportTargets(
  config: Readonly<AgentConfig>,
  bridges: readonly Bridge[],
): Map<string, LossReportTarget> {
  const out = new Map<string, LossReportTarget>()
  config.upstreams.forEach((u, i) => {
    const bridge = bridges[i]
    if (!u.lossReport.enabled || bridge === undefined) return
    const topic = u.lossReport.topic.replace(/\{site\}/g, config.site.name).replace(/\{upstream\}/g, u.name)
    const ruleFilters = Object.fromEntries(bridge.rules.map((r) => [r.id, r.localFilter]))
    out.set(u.name, { topic, site: config.site.name, ruleFilters })
  })
  return out
}

/**
 * bridge ← certs: the upstream's client certificate renewed over the bridge's
 * own session with the device-side protocol client, installed in two phases.
 * No probe connection before the rename (device renew's verify step): it
 * would have to use the bridge's client id and take over its session; the
 * new certificate was checked against caFile and our key instead.
 */
export function buildRenewer(
  lib: CertsModule,
  upstream: Readonly<AgentConfig>['upstreams'][number],
  bridge: Bridge,
  logger: Logger,
): CertificateRenewer {
  const r = upstream.renewCertificate
  // The key of a request still unanswered, on disk: a retry, even after a
  // restart, certifies the same key, so that a reply lost with the link is
  // sent again instead of refused as too early (pending-key.ts).
  const pending = r.rotateKey ? new lib.PendingKey(`${upstream.keyFile}.pending`) : undefined
  let resumedLogged = false
  return new lib.CertificateRenewer({
    upstream: upstream.name,
    files: { cert: upstream.certFile, key: upstream.keyFile, ca: upstream.caFile },
    atFraction: r.atFraction,
    retryMinMs: r.retryMinMs,
    retryMaxMs: r.retryMaxMs,
    link: bridge,
    clock: lib.systemClock,
    renew: async (current) => {
      let newKeyPem: string | undefined
      if (pending !== undefined) {
        const t = await pending.take(current.keyPem)
        if (t.replaced !== undefined)
          logger.warn(
            { upstream: upstream.name, file: pending.path, problem: t.replaced },
            'pending renewal key replaced by a new one',
          )
        if (t.source === 'resumed' && !resumedLogged) {
          resumedLogged = true
          logger.info(
            { upstream: upstream.name, file: pending.path },
            'renewing with the key of an earlier unanswered request',
          )
        }
        newKeyPem = t.keyPem
      }
      return lib.renewOverMqtt({
        client: bridge.control,
        id: current.id,
        topicPrefix: r.topicPrefix,
        caPem: current.caPem,
        currentKeyPem: current.keyPem,
        rotateKey: r.rotateKey,
        ...(newKeyPem === undefined ? {} : { newKeyPem }),
        timeoutMs: r.timeoutMs,
      })
    },
    install: async (renewed) => {
      await lib.installCertificate({ cert: upstream.certFile, key: upstream.keyFile }, renewed, {
        replaceKey: renewed.keyRotated,
      })
      resumedLogged = false
      await pending?.clear()
    },
    logger,
  })
}

export function buildCerts(lib: CertsModule, config: Readonly<AgentConfig>, logger: Logger): CertsService {
  const c = config.certs
  const names = [...new Set([hostname(), 'localhost', '127.0.0.1', '::1', ...c.server.hostnames])]
  return new lib.CertsService({
    dataDir: config.dataDir,
    logger,
    autoInit: c.autoInit,
    caName: c.caName !== '' ? c.caName : `edge-agent local CA (${config.site.name})`,
    caLifetimeMs: c.caLifetimeSec * 1000,
    backdateMs: c.backdateSec * 1000,
    maxIdBytes: config.devices.maxIdBytes,
    device: { lifetimeMs: c.device.lifetimeSec * 1000, renewAfter: c.device.renewAfter },
    server: { lifetimeMs: c.server.lifetimeSec * 1000, renewAfter: c.server.renewAfter, names },
    renewal: {
      enabled: c.renewal.enabled,
      topicPrefix: c.renewal.topicPrefix,
      minRequestIntervalMs: c.renewal.minRequestIntervalSec * 1000,
    },
    crl: { topic: c.crl.topic, validityMs: c.crl.validitySec * 1000 },
    clockGuard: { toleranceMs: c.clock.toleranceSec * 1000, maxForwardJumpMs: c.clock.maxForwardJumpSec * 1000 },
  })
}

/** broker.acl, with its Mosquitto acl_file (config load has checked that it parses). */
export async function compileClientAcl(config: Readonly<AgentConfig>): Promise<ClientAcl> {
  const acl = config.broker.acl
  const own = clientAclOptions(acl)
  if (acl.file === undefined) return ClientAcl.compile(own)
  return ClientAcl.compile(ClientAcl.merge(own, parseMosquittoAcl(await readFile(acl.file, 'utf8'), acl.file)))
}
