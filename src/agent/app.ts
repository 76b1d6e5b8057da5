// Composition root: turns a validated config into components, wires the
// effects between them, and answers /status and /metrics. No I/O at build
// time; start() does it all, in dependency order, and stop() in reverse.
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import { Acl, ClientAcl, LocalBroker, RESTART_LIMITS, parseMosquittoAcl, type DeviceAcl, type DeviceOptions } from '../local-broker/index.js'
import {
  CertificateRenewer,
  CertsService,
  PendingKey,
  completeInstall,
  installCertificate,
  renewOverMqtt,
  systemClock,
  type CertificateRenewerStatus,
  type CertsStats,
} from '../certs/index.js'
import { Bridge, BridgeGroup, type BridgeStatus } from '../bridge/index.js'
import { SqliteStore, type BufferStats, type LossReportTarget, type MessageStore } from '../buffer/index.js'
import { BrokerState, BROKER_STATE_MIGRATIONS, type BrokerStateStats } from '../broker-state/index.js'
import { mkdirDurable } from '../storage/index.js'
import { clientAclOptions } from './config/semantic.js'
import { needsLocalCa, passwordFilePath } from './config/paths.js'
import { NodeRed, NodeRedError, type EdgeLink, type NodeRedStatus } from '../node-red/index.js'
import type { AgentConfig } from './config/schema.js'
import { startAll, stopAll, type Component } from './lifecycle.js'
import { AdminServer } from './admin-server.js'
import { MetricsText, byLabel } from './metrics.js'
import { RateMeter } from './rate-meter.js'
import { AcmeWiring } from './acme-wiring.js'
import type { GatewayCertificateStatus } from '../certs/index.js'

export interface AgentDeps {
  readonly logger: Logger
  readonly version: string
  /** Per-component stop deadline; the sum stays below systemd's TimeoutStopSec. */
  readonly stopTimeoutMs?: number
  readonly now?: () => number
  /**
   * The message store the bridges drain; default a SqliteStore in dataDir
   * configured from `buffer` (tests may pass a MemoryStore).
   */
  readonly store?: MessageStore & Component
  /** POST /reload on the admin endpoint: re-read the config and apply it (run.ts). */
  readonly reload?: () => Promise<{ ok: boolean } & Record<string, unknown>>
}

export type AgentState = 'built' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed'

export interface AgentStatus {
  readonly agent: {
    readonly version: string
    readonly site: { readonly name: string; readonly level: number }
    readonly state: AgentState
    readonly startedAt: string | null
    readonly uptimeSec: number
    readonly dataDir: string
  }
  readonly process: { readonly pid: number; readonly node: string; readonly rssBytes: number; readonly heapUsedBytes: number }
  readonly components: readonly { readonly name: string; readonly state: string }[]
  readonly broker: ReturnType<LocalBroker['stats']> & { readonly receivedPerSec: number; readonly deliveredPerSec: number }
  /** The store-and-forward buffer, and the broker state kept in the same file. */
  readonly buffer: BufferStats & { readonly brokerState: BrokerStateStats | null }
  /** One entry per configured upstream (bridge). */
  readonly upstreams: readonly UpstreamStatus[]
  /** Local CA, device certificates and clock; null without an mqtts listener. */
  readonly certs: CertsStatus | null
  /** Node-RED in the agent (nodeRed.enabled), else null. */
  readonly nodeRed: NodeRedStatus | null
  /** The gateway's own certificate from certs.acme; null without certs.acme. */
  readonly gatewayCertificate: GatewayCertificateStatus | null
}

/** What a reload did: applied live, or waiting for a restart (never silently ignored). */
export interface ReloadResult {
  /** Config paths whose new value is in effect. */
  readonly applied: readonly string[]
  /** Config paths that changed but take effect only after a restart. */
  readonly needsRestart: readonly string[]
}

export interface UpstreamStatus extends BridgeStatus {
  /** The upstream client certificate's renewal (renewCertificate.enabled), else null. */
  readonly certificate: CertificateRenewerStatus | null
  /** files or acme (upstreams[].clientCertificate). */
  readonly clientCertificate: 'files' | 'acme'
  /** Why the connection is held (e.g. the gateway certificate expired), else null; messages keep being buffered. */
  readonly held: string | null
}

export interface CertsStatus extends CertsStats {
  /** Certificate-identified sessions connected now. */
  readonly devicesConnected: number
  /** TLS handshakes and connections refused before MQTT, by reason. */
  readonly refusedHandshakes: Readonly<Record<string, number>>
  /** Device ACL denials and sessions closed by credential, by reason. */
  readonly denied: Readonly<Record<string, number>>
}

export class Agent {
  readonly broker: LocalBroker
  /** The local CA and its services; built when a listener speaks mqtts. */
  readonly certs: CertsService | undefined
  readonly store: MessageStore & Component
  readonly brokerState: BrokerState | undefined
  readonly bridges: BridgeGroup
  /** Upstream client certificate renewers, by upstream name. */
  readonly renewers: ReadonlyMap<string, CertificateRenewer>
  /** The gateway's own ACME certificate and its users; built with certs.acme. */
  readonly acme: AcmeWiring | undefined
  readonly admin: AdminServer | undefined
  /** Node-RED in the agent's process, when nodeRed.enabled. */
  readonly nodeRed: NodeRed | undefined
  /** The device ACL as it applies to flows (nodeRed.identity); undefined without mqtts. */
  readonly #flowAcl: DeviceAcl | undefined
  #config: Readonly<AgentConfig>
  readonly #deps: AgentDeps
  readonly #log: Logger
  #components: Component[]
  readonly #agentInfo: { id: string; site: string; level: number; version: string }
  readonly #publishLocal: (m: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }) => Promise<void>
  #reloading: Promise<unknown> = Promise.resolve()
  readonly #rates: RateMeter
  readonly #now: () => number
  #state: AgentState = 'built'
  #startedAt: number | undefined
  #stopping: Promise<Error[]> | undefined

  constructor(config: Readonly<AgentConfig>, deps: AgentDeps) {
    this.#config = config
    this.#deps = deps
    this.#log = deps.logger
    this.#now = deps.now ?? Date.now
    const sqlite = deps.store === undefined ? newSqliteStore(config, deps.logger) : undefined
    this.store = deps.store ?? (sqlite as SqliteStore)
    // Retained messages and persistent sessions share the store's file; with
    // an injected (memory) store, the broker keeps them in memory.
    this.brokerState = sqlite === undefined ? undefined : new BrokerState(sqlite, deps.logger)
    const mqtts = config.broker.listeners.filter((l) => l.protocol === 'mqtts')
    // An mqtts listener with its own certificate, key and CA (an external PKI)
    // needs no local CA; any other one takes what it lacks from the local CA.
    const certs = needsLocalCa(config) ? buildCerts(config, deps.logger) : undefined
    this.certs = certs
    const acl = certs === undefined ? undefined : compileDeviceAcl(config)
    this.#flowAcl = acl?.forDevice(config.nodeRed.identity)
    const acme = config.certs.acme === undefined ? undefined : new AcmeWiring(config, config.certs.acme, deps.logger)
    this.acme = acme
    this.broker = new LocalBroker({
      listeners: config.broker.listeners,
      limits: config.broker.limits,
      auth: {
        passwordFile: passwordFilePath(config),
        maxFailedLogins: config.broker.auth.maxFailedLogins,
        failedLoginWindowMs: config.broker.auth.failedLoginWindowSec * 1000,
      },
      logger: deps.logger,
      persistence: () => this.brokerState?.persistence,
      // A PUBACK waits until the retained message or offline-queue copy it stands for is durable.
      ...(this.brokerState === undefined
        ? {}
        : {
            stateSync: {
              needed: (p) => this.brokerState?.needsSync(p) === true,
              sync: () => this.brokerState?.sync() ?? Promise.resolve(),
            },
          }),
      ...(certs !== undefined && acl !== undefined
        ? { tls: () => certs.tlsMaterial(), devices: this.#deviceOptions(certs, acl) }
        : mqtts.length > 0
          ? { devices: this.#deviceOptions(undefined, externalPkiAcl(config)) }
          : {}),
      ...(acme === undefined ? {} : { serverCertificate: () => acme.gateway.material() }),
      // Every device PUBLISH passes the bridges' capture: its PUBACK waits
      // until each matching `out` rule's copy is committed to the store.
      onPublish: (packet) => this.bridges.capture(packet),
    })
    // One bridge per upstream; inbound messages enter the local broker as the
    // agent's own publishes, which never pass onPublish (no re-capture, no loop).
    const agentInfo = { id: randomUUID(), site: config.site.name, level: config.site.level, version: deps.version }
    const publishLocal = (m: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }): Promise<void> =>
      this.broker.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain })
    this.#agentInfo = agentInfo
    this.#publishLocal = publishLocal
    this.bridges = new BridgeGroup({
      bridges: config.upstreams.map(
        (upstream) =>
          new Bridge({
            upstream,
            agent: agentInfo,
            store: this.store,
            publishLocal,
            logger: deps.logger,
            ...(acme !== undefined && upstream.clientCertificate === 'acme' ? { tlsMaterial: acme.material() } : {}),
          }),
      ),
      agent: agentInfo,
      publishLocal,
      logger: deps.logger,
    })
    sqlite?.setLossReports(lossReportTargets(config, this.bridges.bridges))
    this.renewers = new Map(
      this.bridges.bridges.flatMap((bridge, i) => {
        const upstream = config.upstreams[i]
        return upstream?.renewCertificate.enabled ? [[upstream.name, buildRenewer(upstream, bridge, deps.logger)] as const] : []
      }),
    )
    if (certs !== undefined) this.#wireCerts(certs)
    if (acme !== undefined) {
      // certs.acme → mqtts listeners with serverCertificate: acme, swapped in place.
      acme.gateway.on('promoted', (m) => this.broker.setServerCertificate(m))
      this.bridges.bridges.forEach((b, i) => {
        if (config.upstreams[i]?.clientCertificate === 'acme') acme.use(b)
      })
    }
    this.#rates = new RateMeter(() => {
      const s = this.broker.stats()
      return { received: s.messagesReceived, delivered: s.messagesDelivered }
    })
    this.admin = config.admin.enabled
      ? new AdminServer({
          host: config.admin.host,
          port: config.admin.port,
          logger: deps.logger.child({ component: 'admin' }),
          handlers: {
            healthy: () => this.health(),
            status: () => this.status(),
            metrics: () => this.metrics(),
            ...(deps.reload === undefined ? {} : { reload: deps.reload }),
            ...(acme === undefined ? {} : { renewGateway: () => acme.gateway.renewNow().then((promoted) => ({ promoted, ...acme.gateway.status() })) }),
          },
        })
      : undefined
    const nr = config.nodeRed
    this.nodeRed = nr.enabled
      ? new NodeRed({
          host: nr.host,
          port: nr.port,
          httpNodeRoot: nr.httpNodeRoot,
          editor: nr.editor,
          logLevel: nr.logLevel,
          maxPublishRatePerSec: nr.maxPublishRatePerSec,
          maxPayloadBytes: nr.maxPayloadBytes,
          dataDir: config.dataDir,
          link: this.#edgeLink(),
          logger: deps.logger,
        })
      : undefined
    this.#components = this.#componentList()
  }

  /** Start order is dependency order (stop runs it backwards). Absent parts are left out. */
  #componentList(): Component[] {
    const order: (Component | undefined)[] = [
    this.admin, // first, so that /healthz can say "starting" during a slow start
    this.store, // the buffer: captures need it before any device connects
    this.brokerState, // retained messages and sessions, in the store's file
    this.certs, // the CA and the server certificate the broker's TLS listeners need
    this.acme, // the gateway certificate (certs.acme): listeners and upstreams may use it
    this.broker, // devices connect from here on; their PUBLISHes reach the store
    this.nodeRed, // flows subscribe and publish through the broker, so after it and before the bridges
    ...this.bridges.bridges, // one per upstream: drains the store upward
    ...this.renewers.values(), // upstream client certificates, over the bridges' sessions
    this.bridges, // the agent's beacon, once the bridges know their upstreams
  ]
    return order.filter((c): c is Component => c !== undefined)
  }

  /** The config in effect (the started one with what reloads applied). */
  get config(): Readonly<AgentConfig> {
    return this.#config
  }

  /**
   * Applies a new, already validated config to the running agent: bridge
   * rules and upstream settings (the changed upstream's bridge is replaced:
   * it reconnects, its buffered rows stay in the store), broker limits that
   * are checked per connection, device grants and groups. Device connections
   * stay up. What cannot change live is listed in needsRestart. Reloads run
   * one at a time. log.level is the caller's (it owns the root logger).
   */
  reload(next: Readonly<AgentConfig>, signal: AbortSignal): Promise<ReloadResult> {
    const run = this.#reloading.then(() => this.#reload(next, signal))
    this.#reloading = run.catch(() => undefined)
    return run
  }

  async #reload(next: Readonly<AgentConfig>, signal: AbortSignal): Promise<ReloadResult> {
    const cur = this.#config
    const applied: string[] = []
    const needsRestart: string[] = []
    const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b)
    for (const key of ['dataDir', 'site', 'admin', 'buffer', 'certs', 'nodeRed'] as const) {
      if (differs(cur[key], next[key])) needsRestart.push(key)
    }
    let auth = cur.broker.auth
    if (cur.broker.auth.passwordFile !== next.broker.auth.passwordFile) {
      await this.broker.setPasswordFile(passwordFilePath(next))
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
    if (differs(limits, cur.broker.limits)) this.broker.reconfigure({ limits })

    // Device grants and groups: a new ACL for new and connected devices.
    let devices = cur.devices
    if (differs(cur.devices, next.devices)) {
      const live = ['publish', 'subscribe', 'groups', 'onDeniedPublish'] as const
      for (const k of Object.keys(next.devices) as (keyof typeof next.devices)[]) {
        if (!differs(cur.devices[k], next.devices[k])) continue
        if ((live as readonly string[]).includes(k) && this.certs !== undefined) applied.push(`devices.${k}`)
        else needsRestart.push(`devices.${k}`)
      }
      if (this.certs !== undefined) {
        // Renewal and CRL topics stay those of the running certs section.
        const acl = compileDeviceAcl({ ...next, certs: cur.certs })
        this.broker.reconfigure({ acl, onDeniedPublish: next.devices.onDeniedPublish })
        devices = { ...cur.devices, publish: next.devices.publish, subscribe: next.devices.subscribe, groups: next.devices.groups, onDeniedPublish: next.devices.onDeniedPublish }
      }
    }

    // The client ACL (broker.acl, its acl_file re-read): swapped for every listener.
    let brokerAcl = cur.broker.acl
    if (differs(cur.broker.acl, next.broker.acl) || next.broker.acl.file !== undefined) {
      const compiled = await this.#clientAcl(next)
      this.broker.setAcl(compiled, next.broker.acl.onDeniedPublish)
      brokerAcl = next.broker.acl
      if (differs(cur.broker.acl, next.broker.acl)) applied.push('broker.acl')
    }

    // Upstreams: keep the bridges of unchanged upstreams, replace the rest.
    // One with certificate renewal is tied to its renewer: restart.
    const upstreams: AgentConfig['upstreams'][number][] = []
    const bridges: Bridge[] = []
    const byName = new Map(cur.upstreams.map((u, i) => [u.name, { u, bridge: this.bridges.bridges[i] as Bridge }] as const))
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
        bridges.push(new Bridge({ upstream: u, agent: this.#agentInfo, store: this.store, publishLocal: this.#publishLocal, logger: this.#deps.logger }))
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
    if (bridges.length !== this.bridges.bridges.length || bridges.some((b, i) => b !== this.bridges.bridges[i])) {
      if (this.store instanceof SqliteStore) this.store.setLossReports(lossReportTargets({ ...next, upstreams }, bridges))
      await this.bridges.reconfigure(bridges, signal)
      this.#components = this.#componentList()
    }

    this.#config = frozen({ ...cur, log: { ...cur.log, level: next.log.level }, broker: { ...cur.broker, limits, auth, acl: brokerAcl }, devices, upstreams })
    this.#log.info({ applied, needsRestart }, applied.length + needsRestart.length === 0 ? 'config reloaded, nothing changed' : 'config reloaded')
    return { applied, needsRestart }
  }

  get state(): AgentState {
    return this.#state
  }

  /** broker.acl, with its Mosquitto acl_file (config load has checked that it parses). */
  async #clientAcl(config: Readonly<AgentConfig> = this.#config): Promise<ClientAcl> {
    const acl = config.broker.acl
    const own = clientAclOptions(acl)
    if (acl.file === undefined) return ClientAcl.compile(own)
    return ClientAcl.compile(ClientAcl.merge(own, parseMosquittoAcl(await readFile(acl.file, 'utf8'), acl.file)))
  }

  /**
   * What flows reach of the agent: publish as the flow identity (the device
   * ACL, then the bridges' capture into the buffer, awaited like a device's
   * PUBACK, then the local broker) and in-process subscriptions.
   */
  #edgeLink(): EdgeLink {
    return {
      publish: async (m) => {
        this.#authorizeFlowPublish(m.topic)
        // The client ACL (broker.acl) names the flow by nodeRed.identity; publishAs
        // then passes the bridges' capture like a device's PUBLISH.
        const identity = this.#config.nodeRed.identity
        await this.broker.publishAs({ username: identity, clientId: identity }, m.topic, m.payload, { qos: m.qos, retain: m.retain })
      },
      subscribe: (filter, deliver) => this.broker.subscribe(filter, deliver),
    }
  }

  /**
   * The one place a flow's publish is authorized: the device ACL for
   * nodeRed.identity (with mqtts listeners), and never a `$` topic or a topic
   * only the agent publishes.
   */
  #authorizeFlowPublish(topic: string): void {
    const acl = this.#flowAcl
    if (topic.startsWith('$') || (acl !== undefined && acl.publish(topic) !== 'allow')) {
      throw new NodeRedError('EDGE_ERR_NODERED_PUBLISH_DENIED', `flow identity ${this.#config.nodeRed.identity} may not publish to ${topic.slice(0, 200)} (devices.publish / devices.groups)`)
    }
  }

  /**
   * Device identity and isolation for the broker, backed by the local CA; with
   * an external PKI only (no local CA) there is no renewal over MQTT, no CRL
   * and no revocation list of ours: the device space still applies.
   */
  #deviceOptions(certs: CertsService | undefined, acl: Acl): DeviceOptions {
    const c = this.#config
    const space = {
      acl,
      identity: c.devices.identity,
      maxIdBytes: c.devices.maxIdBytes,
      onDeniedPublish: c.devices.onDeniedPublish,
    }
    if (certs === undefined) return space
    return {
      ...space,
      isRevoked: (serial) => certs.ca.isRevoked(serial),
      reservedClientId: (id) => certs.isKnownDevice(id),
      now: () => certs.guard.trustedNow(),
      onRequest: (req) => {
        // Renewal over MQTT: the broker bound req.id to the session's certificate.
        certs
          .handleRenewal({ id: req.id, clientId: req.clientId, payload: req.payload, credential: req.credential })
          .then(async (out) => {
            if (out.issued !== undefined) this.broker.refreshCredential(req.clientId, { serial: out.issued.serial, notBefore: out.issued.notBefore, notAfter: out.issued.notAfter })
            await this.broker.publish(out.topic, out.payload, { qos: 1 })
          })
          .catch((err: unknown) => {
            // A reply cut by a stop is not lost for good: the device asks again
            // with the same key and gets the same certificate.
            if ((err as { code?: unknown }).code === 'EDGE_ERR_BROKER_STOPPED') {
              this.#log.info({ deviceId: req.id }, 'renewal reply not sent: the broker is stopping')
            } else this.#log.error({ err, deviceId: req.id }, 'renewal reply failed')
          })
      },
    }
  }

  /** certs → broker: rotated server certificate, revocations, CRL. */
  #wireCerts(certs: CertsService): void {
    certs.on('rotated', (material) => this.broker.updateTls(material))
    certs.on('revoked', (e) => {
      this.broker.setRevokedSerials(e.serials)
      for (const r of e.revoked) this.broker.disconnectClient(r.id, 'revoked')
    })
    certs.on('crl', (e) => {
      if (this.#state !== 'running') return // published once started
      this.broker.publish(e.topic, e.pem, { qos: 1, retain: true }).catch((err: unknown) => this.#log.warn({ err }, 'crl publish failed'))
    })
  }

  /** An upstream certificate install that a power cut interrupted is finished before the bridges read the files. */
  async #completeInstalls(): Promise<void> {
    for (const u of this.#config.upstreams) {
      if (u.certFile === undefined || u.keyFile === undefined) continue
      const files = { cert: u.certFile, key: u.keyFile }
      if (await completeInstall(files)) {
        this.#log.warn({ upstream: u.name, ...files }, 'interrupted certificate install completed')
      }
    }
  }

  async start(signal: AbortSignal): Promise<void> {
    this.#state = 'starting'
    try {
      // 0700: the state directory will hold the message store and private keys.
      // Durable: a name never fsync'd into its parent is lost in a power cut with all below it.
      mkdirDurable(this.#config.dataDir, 0o700)
      await this.#completeInstalls()
      this.broker.setAcl(await this.#clientAcl(), this.#config.broker.acl.onDeniedPublish)
      await startAll(this.#components, signal, this.#log, this.#stopTimeoutMs())
    } catch (err) {
      this.#state = 'failed'
      throw err
    }
    this.#startedAt = this.#now()
    this.#rates.start()
    this.#state = 'running'
    if (this.certs !== undefined) {
      // The CRL, retained, for devices and anything downstream (docs/certificates.md).
      const crl = await this.certs.currentCrl()
      if (crl.pem !== '') await this.broker.publish(crl.topic, crl.pem, { qos: 1, retain: true }).catch((err: unknown) => this.#log.warn({ err }, 'crl publish failed'))
    }
    this.#log.info(
      { site: this.#config.site, listeners: this.broker.listeners(), admin: this.admin?.port, version: this.#deps.version },
      'agent started',
    )
  }

  /** Graceful, idempotent; resolves with the components that failed to stop. */
  stop(): Promise<Error[]> {
    this.#stopping ??= (async () => {
      this.#state = 'stopping'
      this.#rates.stop()
      const failures = await stopAll(this.#components, this.#stopTimeoutMs(), this.#log)
      this.#state = 'stopped'
      return failures
    })()
    return this.#stopping
  }

  /**
   * ok while every component runs. An upstream that is down does not make it
   * unhealthy (the agent buffers, that is its job, and the watchdog must not
   * restart it for that) but degraded: /healthz still answers 200, says so
   * and names the upstreams.
   */
  health(): { ok: boolean; detail: Record<string, unknown> } {
    const running = this.#state === 'running'
    const down = running ? this.bridges.bridges.filter((b) => !b.connected).map((b) => b.upstream) : []
    return {
      ok: running,
      detail: { ...(down.length > 0 ? { status: 'degraded', upstreamsDown: down } : {}), state: this.#state },
    }
  }

  status(): AgentStatus {
    const mem = process.memoryUsage()
    const rates = this.#rates.rates()
    const running = this.#state === 'running'
    return {
      agent: {
        version: this.#deps.version,
        site: this.#config.site,
        state: this.#state,
        startedAt: this.#startedAt === undefined ? null : new Date(this.#startedAt).toISOString(),
        uptimeSec: this.#startedAt === undefined ? 0 : Math.round((this.#now() - this.#startedAt) / 1000),
        dataDir: this.#config.dataDir,
      },
      process: { pid: process.pid, node: process.version, rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
      components: this.#components.map((c) => ({ name: c.name, state: running ? 'running' : this.#state })),
      broker: {
        ...this.broker.stats(),
        receivedPerSec: round(rates['received'] ?? 0),
        deliveredPerSec: round(rates['delivered'] ?? 0),
      },
      buffer: { ...this.store.stats(), brokerState: this.brokerState?.stats() ?? null },
      upstreams: this.bridges.statuses().map((u, i) => ({
        ...u,
        certificate: this.renewers.get(u.name)?.status() ?? null,
        clientCertificate: this.#config.upstreams[i]?.clientCertificate ?? 'files',
        held: this.bridges.bridges[i]?.held ?? null,
      })),
      certs: this.#certsStatus(),
      nodeRed: this.nodeRed?.status() ?? null,
      gatewayCertificate: this.acme?.gateway.status() ?? null,
    }
  }

  #certsStatus(): CertsStatus | null {
    if (this.certs === undefined) return null
    const b = this.broker.stats()
    return { ...this.certs.stats(), devicesConnected: b.devices, refusedHandshakes: b.tlsRefused, denied: b.denied }
  }

  metrics(): string {
    const s = this.status()
    const b = s.broker
    const m = new MetricsText()
      .gauge('edge_agent_info', 'Agent build and site; value is always 1', [
        { labels: { version: s.agent.version, site: s.agent.site.name, level: s.agent.site.level }, value: 1 },
      ])
      .gauge('edge_agent_up', '1 when every component is running', this.#state === 'running' ? 1 : 0)
      .gauge('edge_agent_uptime_seconds', 'Seconds since the agent finished starting', s.agent.uptimeSec)
      .gauge('edge_agent_process_resident_memory_bytes', 'Resident set size of the agent process', s.process.rssBytes)
      .gauge('edge_agent_process_heap_used_bytes', 'V8 heap in use', s.process.heapUsedBytes)
      .gauge('edge_agent_broker_clients', 'Devices connected to the local broker now', b.clients)
      .counter('edge_agent_broker_connections_total', 'Connections accepted by the local broker listeners', b.connectionsTotal)
      .counter('edge_agent_broker_messages_received_total', 'PUBLISH packets received from devices', b.messagesReceived)
      .counter('edge_agent_broker_messages_delivered_total', 'Messages delivered to local subscribers', b.messagesDelivered)
      .counter('edge_agent_broker_refused_total', 'Connections refused or closed, by limit or protocol rule', byLabel('reason', b.refused))
    bufferMetrics(m, s.buffer)
    upstreamMetrics(m, s.upstreams, this.#now())
    const renewed = s.upstreams.filter((u) => u.certificate !== null)
    if (renewed.length > 0) {
      const per = (f: (c: CertificateRenewerStatus) => number) => renewed.map((u) => ({ labels: { upstream: u.name }, value: f(u.certificate as CertificateRenewerStatus) }))
      m.gauge('edge_agent_upstream_certificate_expiry_seconds', "Seconds until this upstream's client certificate expires (renewCertificate)", per((c) => (c.notAfter === null ? 0 : Math.round((Date.parse(c.notAfter) - this.#now()) / 1000))))
        .counter('edge_agent_upstream_certificate_renewals_total', "Renewals of this upstream's client certificate", per((c) => c.renewals))
        .gauge('edge_agent_upstream_certificate_renewal_failures', 'Consecutive failed renewal attempts (0 after a success)', per((c) => c.failures))
    }
    if (s.certs !== null) certsMetrics(m, s.certs)
    if (s.nodeRed !== null) {
      const e = s.nodeRed.edge
      m.counter('edge_agent_nodered_published_total', 'Messages published by edge out nodes', e.published)
        .counter('edge_agent_nodered_throttled_total', 'edge out messages dropped above nodeRed.maxPublishRatePerSec', e.throttled)
        .counter('edge_agent_nodered_failed_total', 'edge out publishes refused (ACL, size, buffer full)', e.failed)
        .counter('edge_agent_nodered_received_total', 'Messages delivered to edge in nodes', e.received)
    }
    if (s.gatewayCertificate !== null) {
      gatewayCertMetrics(m, s.gatewayCertificate)
      m.gauge('edge_agent_upstream_held', '1 while the upstream connection is held (gateway certificate expired or not yet issued); buffering continues', s.upstreams.map((u) => ({ labels: { upstream: u.name }, value: u.held === null ? 0 : 1 })))
    }
    return m.toString()
  }

  #stopTimeoutMs(): number {
    return this.#deps.stopTimeoutMs ?? 8_000
  }
}

/** The device space without the local CA's renewal and CRL topics (external PKI only). */
function externalPkiAcl(c: Readonly<AgentConfig>): Acl {
  return Acl.compile({ publish: c.devices.publish, subscribe: c.devices.subscribe, groups: c.devices.groups })
}

function compileDeviceAcl(c: Readonly<AgentConfig>): Acl {
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

/** An upstream whose client certificate another component keeps (renewer, ACME) is replaced only by a restart. */
function tiedToCertificate(u: AgentConfig['upstreams'][number]): boolean {
  return u.renewCertificate.enabled || u.clientCertificate === 'acme'
}

function frozen<T extends object>(value: T): Readonly<T> {
  return Object.freeze(value)
}

function newSqliteStore(config: Readonly<AgentConfig>, logger: Logger): SqliteStore {
  const b = config.buffer
  return new SqliteStore({
    dataDir: config.dataDir,
    logger,
    durability: b.durability,
    maxBatch: b.maxBatch,
    batchWindowMs: b.batchWindowMs,
    // 0 in the config means "size it from the disk", which the store does when unset.
    ...(b.maxBytes > 0 ? { maxBytes: b.maxBytes } : {}),
    ...(b.minFreeBytes > 0 ? { minFreeBytes: b.minFreeBytes } : {}),
    migrations: BROKER_STATE_MIGRATIONS,
  })
}

/** buffer ← bridges: per upstream (= buffer queue), where its loss reports go and its rules' topic filters. */
function lossReportTargets(config: Readonly<AgentConfig>, bridges: readonly Bridge[]): Map<string, LossReportTarget> {
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

export function buildAgent(config: Readonly<AgentConfig>, deps: AgentDeps): Agent {
  return new Agent(config, deps)
}

/**
 * bridge ← certs: the upstream's client certificate renewed over the bridge's
 * own session with the device-side protocol client, installed in two phases.
 * No probe connection before the rename (device renew's verify step): it
 * would have to use the bridge's client id and take over its session; the
 * new certificate was checked against caFile and our key instead.
 */
function buildRenewer(upstream: Readonly<AgentConfig>['upstreams'][number], bridge: Bridge, logger: Logger): CertificateRenewer {
  const r = upstream.renewCertificate
  // The key of a request still unanswered, on disk: a retry, even after a
  // restart, certifies the same key, so that a reply lost with the link is
  // sent again instead of refused as too early (pending-key.ts).
  const pending = r.rotateKey ? new PendingKey(`${upstream.keyFile}.pending`) : undefined
  let resumedLogged = false
  return new CertificateRenewer({
    upstream: upstream.name,
    files: { cert: upstream.certFile, key: upstream.keyFile, ca: upstream.caFile },
    atFraction: r.atFraction,
    retryMinMs: r.retryMinMs,
    retryMaxMs: r.retryMaxMs,
    link: bridge,
    clock: systemClock,
    renew: async (current) => {
      let newKeyPem: string | undefined
      if (pending !== undefined) {
        const t = await pending.take(current.keyPem)
        if (t.replaced !== undefined) logger.warn({ upstream: upstream.name, file: pending.path, problem: t.replaced }, 'pending renewal key replaced by a new one')
        if (t.source === 'resumed' && !resumedLogged) {
          resumedLogged = true
          logger.info({ upstream: upstream.name, file: pending.path }, 'renewing with the key of an earlier unanswered request')
        }
        newKeyPem = t.keyPem
      }
      return renewOverMqtt({
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
      await installCertificate({ cert: upstream.certFile, key: upstream.keyFile }, renewed, { replaceKey: renewed.keyRotated })
      resumedLogged = false
      await pending?.clear()
    },
    logger,
  })
}

function buildCerts(config: Readonly<AgentConfig>, logger: Logger): CertsService {
  const c = config.certs
  const names = [...new Set([hostname(), 'localhost', '127.0.0.1', '::1', ...c.server.hostnames])]
  return new CertsService({
    dataDir: config.dataDir,
    logger,
    autoInit: c.autoInit,
    caName: c.caName !== '' ? c.caName : `edge-agent local CA (${config.site.name})`,
    caLifetimeMs: c.caLifetimeSec * 1000,
    backdateMs: c.backdateSec * 1000,
    maxIdBytes: config.devices.maxIdBytes,
    device: { lifetimeMs: c.device.lifetimeSec * 1000, renewAfter: c.device.renewAfter },
    server: { lifetimeMs: c.server.lifetimeSec * 1000, renewAfter: c.server.renewAfter, names },
    renewal: { enabled: c.renewal.enabled, topicPrefix: c.renewal.topicPrefix, minRequestIntervalMs: c.renewal.minRequestIntervalSec * 1000 },
    crl: { topic: c.crl.topic, validityMs: c.crl.validitySec * 1000 },
    clockGuard: { toleranceMs: c.clock.toleranceSec * 1000, maxForwardJumpMs: c.clock.maxForwardJumpSec * 1000 },
  })
}

function certsMetrics(m: MetricsText, c: CertsStatus): void {
  m.counter('edge_agent_certs_issued_total', 'Certificates issued by the running agent (CLI issuance not included)', [
    { labels: { kind: 'device' }, value: c.issued },
    { labels: { kind: 'server' }, value: c.server.rotations },
  ])
    .counter('edge_agent_certs_renewed_total', 'Device certificates renewed over MQTT', c.renewal.renewed)
    .counter('edge_agent_certs_renewal_resent_total', 'Certificates sent again to a device that retried with the same key (its first reply was lost)', c.renewal.resent)
    .counter('edge_agent_certs_renewal_refused_total', 'Renewal requests refused, by protocol error code', byLabel('reason', c.renewal.refused))
    .counter('edge_agent_certs_server_rotations_total', "Rotations of the broker's server certificate", c.server.rotations)
    .counter('edge_agent_certs_server_rotations_postponed_total', 'Server certificate rotations postponed (clock suspicious, issuance failed)', c.server.postponed)
    .gauge('edge_agent_certs_revoked', 'Revoked certificates not yet expired', c.revoked)
    .gauge('edge_agent_certs_ca_expiry_days', 'Days until the local CA expires', c.ca.expiresInDays)
    .gauge('edge_agent_certs_server_expiry_seconds', "Seconds until the broker's server certificate expires", c.server.expiresInSec ?? 0)
    .gauge('edge_agent_certs_clock_suspicious', '1 while the clock is not trusted and issuance is paused', c.clock.state === 'ok' ? 0 : 1)
    .gauge('edge_agent_broker_devices', 'Certificate-identified device sessions connected now', c.devicesConnected)
    .counter('edge_agent_broker_tls_refused_total', 'TLS connections refused before MQTT, by reason', byLabel('reason', c.refusedHandshakes))
    .counter('edge_agent_broker_device_denied_total', 'Device ACL denials and sessions closed by credential, by reason', byLabel('reason', c.denied))
}

function gatewayCertMetrics(m: MetricsText, g: GatewayCertificateStatus): void {
  m.gauge('edge_agent_gateway_certificate_expiry_seconds', "Seconds until the gateway's ACME certificate expires (negative: expired; absent before the first issuance)", g.expiresInSec === null ? [] : g.expiresInSec)
    .gauge('edge_agent_gateway_certificate_expiry_days', "Days until the gateway's ACME certificate expires", g.expiresInSec === null ? [] : Math.floor(g.expiresInSec / 86400))
    .gauge('edge_agent_gateway_certificate_valid', '1 while the gateway certificate is valid (expiring included), 0 when expired or not yet issued', g.state === 'valid' || g.state === 'expiring' ? 1 : 0)
    .counter('edge_agent_gateway_certificate_renewals_total', 'Gateway certificates promoted by the running agent', g.renewals)
    .gauge('edge_agent_gateway_certificate_renewal_failures', 'Consecutive failed renewal attempts (0 after a success)', g.failures)
}

/** The buffer's families: depth, bytes and oldest age per queue; rates; drops by reason and rule. */
function bufferMetrics(m: MetricsText, b: AgentStatus['buffer']): void {
  const perQueue = (f: (q: BufferStats['queues'][number]) => number) => b.queues.map((q) => ({ labels: { queue: q.queue }, value: f(q) }))
  m.gauge('edge_agent_buffer_messages', 'Messages in the buffer, per queue (upstream), in flight included', perQueue((q) => q.depth))
    .gauge('edge_agent_buffer_bytes', 'Bytes of messages in the buffer, per queue', perQueue((q) => q.bytes))
    .gauge('edge_agent_buffer_inflight', 'Buffered messages sent upstream and not yet acknowledged, per queue', perQueue((q) => q.inFlight))
    .gauge('edge_agent_buffer_oldest_age_seconds', 'Age of the oldest buffered message, per queue', perQueue((q) => (q.oldestAgeMs ?? 0) / 1000))
    .gauge('edge_agent_buffer_capacity_bytes', 'Bytes the buffer may hold now (maxBytes, lowered near the free-space floor)', b.limits.effectiveMaxBytes)
    .gauge('edge_agent_buffer_disk_free_bytes', 'Free bytes on the file system of the buffer', b.limits.freeBytes ?? 0)
    .gauge('edge_agent_buffer_healthy', '1 when the buffer accepts writes normally, 0 when degraded (disk full or low, I/O error)', b.health.state === 'ok' ? 1 : 0)
    .counter('edge_agent_buffer_appended_total', 'Messages committed to the buffer', b.totals.appended)
    .counter('edge_agent_buffer_acked_total', 'Messages removed after the upstream acknowledged them', b.totals.acked)
    .counter('edge_agent_buffer_commits_total', 'Group commits', b.totals.commits)
    .counter('edge_agent_buffer_failed_commits_total', 'Group commits that failed (their messages were not acknowledged)', b.totals.failedCommits)
    .gauge('edge_agent_buffer_append_rate', 'Messages appended per second, recent', b.rates.appendPerSec)
    .gauge('edge_agent_buffer_drain_rate', 'Messages acknowledged upstream per second, recent', b.rates.ackPerSec)
    .counter('edge_agent_buffer_dropped_total', 'Messages the buffer dropped, by reason', byLabel('reason', b.drops.byReason))
    .counter(
      'edge_agent_buffer_dropped_by_rule_total',
      'Messages the buffer dropped, by bridge rule and reason',
      Object.entries(b.drops.byRule).flatMap(([rule, byReason]) =>
        Object.entries(byReason).map(([reason, value]) => ({ labels: { rule, reason }, value: value ?? 0 })),
      ),
    )
    .counter('edge_agent_buffer_quarantined_total', 'Corrupt database files moved aside at start', b.quarantine.count)
  const durable = b.drops.sinceCreated
  if (durable) {
    m.counter(
      'edge_agent_buffer_dropped_durable_total',
      'Messages the buffer dropped since the store was created (kept in SQLite across restarts), by rule and reason',
      Object.entries(durable.byRule).flatMap(([rule, byReason]) =>
        Object.entries(byReason).map(([reason, value]) => ({ labels: { rule, reason }, value: value ?? 0 })),
      ),
    ).gauge('edge_agent_buffer_drop_ledger_ranges', 'Ranges kept in the drop ledger (edge-agent buffer drops)', durable.ledger.rows)
  }
  if (b.brokerState) {
    m.gauge('edge_agent_broker_retained_messages', 'Retained messages kept by the local broker', b.brokerState.retainedMessages)
      .gauge('edge_agent_broker_persistent_sessions', 'Persistent sessions kept by the local broker', b.brokerState.persistentSessions)
      .gauge('edge_agent_broker_offline_queued_messages', 'QoS 1/2 messages queued for offline persistent sessions', b.brokerState.queuedMessages)
      .counter('edge_agent_broker_offline_dropped_total', 'Offline-queue messages dropped past the per-client bounds', b.brokerState.droppedMessages)
  }
}

/** Per-upstream families, one sample per upstream (label `upstream`). */
function upstreamMetrics(m: MetricsText, ups: readonly BridgeStatus[], now: number): void {
  const per = (f: (u: BridgeStatus) => number) => ups.map((u) => ({ labels: { upstream: u.name }, value: f(u) }))
  m.gauge('edge_agent_upstream_connected', '1 while the upstream connection is up', per((u) => (u.connected ? 1 : 0)))
    .gauge('edge_agent_upstream_state_seconds', 'Seconds since the upstream connection last changed state', per((u) => Math.max(0, Math.round((now - Date.parse(u.since)) / 1000))))
    .gauge('edge_agent_upstream_inflight', 'Messages sent upstream and not yet acknowledged', per((u) => u.inflight))
    .gauge('edge_agent_upstream_window', "In-flight window (config inflight, lowered by the upstream's Receive Maximum)", per((u) => u.window))
    .gauge('edge_agent_upstream_backlog_messages', 'Messages in the buffer for this upstream, in flight included', per((u) => u.backlog.depth))
    .gauge('edge_agent_upstream_backlog_bytes', 'Bytes in the buffer for this upstream', per((u) => u.backlog.bytes))
    .gauge('edge_agent_upstream_backlog_oldest_age_seconds', 'Age of the oldest buffered message for this upstream', per((u) => (u.backlog.oldestAgeMs ?? 0) / 1000))
    .counter('edge_agent_upstream_messages_sent_total', 'PUBLISH packets sent upstream (first sends)', per((u) => u.totals.sent))
    .counter('edge_agent_upstream_messages_acked_total', 'Messages acknowledged by the upstream and removed from the buffer', per((u) => u.totals.acked))
    .counter('edge_agent_upstream_messages_resent_total', 'In-flight messages sent again after a reconnect', per((u) => u.totals.resent))
    .counter('edge_agent_upstream_messages_received_total', 'Messages from the upstream delivered to the local broker (in rules)', per((u) => u.totals.received))
    .counter('edge_agent_upstream_connect_attempts_total', 'Connection attempts to the upstream', per((u) => u.totals.attempts))
    .counter('edge_agent_upstream_connects_total', 'Connections established to the upstream', per((u) => u.totals.connects))
    .counter('edge_agent_upstream_disconnects_total', 'Established connections that ended', per((u) => u.totals.disconnects))
    .counter(
      'edge_agent_upstream_dropped_total',
      'Messages not forwarded, by reason (bridge and buffer drops of this upstream)',
      ups.flatMap((u) => Object.entries(u.drops).map(([reason, value]) => ({ labels: { upstream: u.name, reason }, value }))),
    )
    .counter(
      'edge_agent_upstream_dropped_by_rule_total',
      'Messages not forwarded, by upstream, rule and reason (bridge and buffer drops)',
      ups.flatMap((u) =>
        Object.entries(u.dropsByRule ?? {}).flatMap(([rule, byReason]) =>
          Object.entries(byReason).map(([reason, value]) => ({ labels: { upstream: u.name, rule, reason }, value })),
        ),
      ),
    )
    .gauge('edge_agent_upstream_loop', '1 while forwarding is paused because it would loop back to this agent', per((u) => (u.loop === null ? 0 : 1)))
}

function round(n: number): number {
  return Math.round(n * 10) / 10
}
