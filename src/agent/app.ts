// Composition root: turns a validated config into components, wires the
// effects between them, and answers /status and /metrics. No I/O at build
// time; start() does it all, in dependency order, and stop() in reverse.
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { LocalBroker, type DeviceAcl } from '../local-broker/index.js'
import type { AcmeModule, CertificateRenewer, CertsModule, CertsService } from '../certs/index.js'
import { Bridge, BridgeGroup, type LocalMessage as LocalPublish } from '../bridge/index.js'
import { SqliteStore, type MessageStore } from '../buffer/index.js'
import { BrokerState } from '../broker-state/index.js'
import { mkdirDurable } from '../storage/index.js'
import { needsLocalCa, passwordFilePath } from './config/paths.js'
import { NodeRed, NodeRedError, type EdgeLink } from '../node-red/index.js'
import type { AcmeConfig, AgentConfig } from './config/schema.js'
import { startAll, stopAll, type Component } from './lifecycle.js'
import { AdminServer } from './admin-server.js'
import { RateMeter } from './rate-meter.js'
import { AcmeWiring } from './acme-wiring.js'
import { certsLib, completeInstalls, deviceOptions, usesCerts, wireCerts } from './certs-wiring.js'
import type { AgentState, AgentStatus, CertsStatus } from './agent-status.js'
import { agentMetrics, round } from './agent-metrics.js'
import {
  buildCerts,
  buildRenewer,
  compileClientAcl,
  compileDeviceAcl,
  externalPkiAcl,
  lossReportTargets,
  newSqliteStore,
} from './builders.js'
import { applyReload, type ReloadResult } from './reload.js'

export type { AgentState, AgentStatus, CertsStatus, UpstreamStatus } from './agent-status.js'
export type { ReloadResult } from './reload.js'

export interface AgentDeps {
  readonly logger: Logger
  readonly version: string
  /** The certs component's code; buildAgent() loads it when the config uses certificates (usesCerts()). */
  readonly certs?: CertsModule
  /** The ACME code (loadAcme()); buildAgent() loads it when certs.acme is configured. */
  readonly acme?: AcmeModule
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
  readonly #publishLocal: (m: LocalPublish) => Promise<void>
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
    const certs = needsLocalCa(config) ? buildCerts(certsLib(deps), config, deps.logger) : undefined
    this.certs = certs
    const acl = certs === undefined ? undefined : compileDeviceAcl(config)
    this.#flowAcl = acl?.forDevice(config.nodeRed.identity)
    const acme = config.certs.acme === undefined ? undefined : newAcmeWiring(config, config.certs.acme, deps)
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
        ? { tls: () => certs.tlsMaterial(), devices: deviceOptions(config, acl, certs, () => this.broker, deps.logger) }
        : mqtts.length > 0
          ? { devices: deviceOptions(config, externalPkiAcl(config)) }
          : {}),
      ...(acme === undefined ? {} : { serverCertificate: () => acme.gateway.material() }),
      // Every device PUBLISH passes the bridges' capture: its PUBACK waits
      // until each matching `out` rule's copy is committed to the store.
      onPublish: (packet) => this.bridges.capture(packet),
    })
    // One bridge per upstream; inbound messages enter the local broker as the
    // agent's own publishes, which never pass onPublish (no re-capture, no loop).
    const agentInfo = { id: randomUUID(), site: config.site.name, level: config.site.level, version: deps.version }
    const publishLocal = (m: LocalPublish): Promise<void> =>
      this.broker.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain, properties: m.properties })
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
        return upstream?.renewCertificate.enabled
          ? [[upstream.name, buildRenewer(certsLib(deps), upstream, bridge, deps.logger)] as const]
          : []
      }),
    )
    if (certs !== undefined) wireCerts(certs, this.broker, () => this.#state === 'running', deps.logger)
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
            ...(acme === undefined
              ? {}
              : {
                  renewGateway: () =>
                    acme.gateway.renewNow().then((promoted) => ({ promoted, ...acme.gateway.status() })),
                }),
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
    const wiring = { agent: this.#agentInfo, store: this.store, publishLocal: this.#publishLocal, logger: this.#log }
    const r = await applyReload(
      this.#config,
      next,
      {
        broker: this.broker,
        bridges: this.bridges,
        setLossReports: (targets) => {
          if (this.store instanceof SqliteStore) this.store.setLossReports(targets)
        },
        hasCerts: this.certs !== undefined,
        newBridge: (upstream) => new Bridge({ upstream, ...wiring }),
        clientAcl: compileClientAcl,
        logger: this.#log,
      },
      signal,
    )
    if (r.bridgesChanged) this.#components = this.#componentList()
    this.#config = r.config
    return { applied: r.applied, needsRestart: r.needsRestart }
  }

  get state(): AgentState {
    return this.#state
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
        await this.broker.publishAs({ username: identity, clientId: identity }, m.topic, m.payload, {
          qos: m.qos,
          retain: m.retain,
        })
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
      throw new NodeRedError(
        'EDGE_ERR_NODERED_PUBLISH_DENIED',
        `flow identity ${this.#config.nodeRed.identity} may not publish to ${topic.slice(0, 200)} (devices.publish / devices.groups)`,
      )
    }
  }

  async start(signal: AbortSignal): Promise<void> {
    this.#state = 'starting'
    try {
      // 0700: the state directory will hold the message store and private keys.
      // Durable: a name never fsync'd into its parent is lost in a power cut with all below it.
      mkdirDurable(this.#config.dataDir, 0o700)
      await completeInstalls(this.#config.upstreams, () => certsLib(this.#deps), this.#log)
      this.broker.setAcl(await compileClientAcl(this.#config), this.#config.broker.acl.onDeniedPublish)
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
      if (crl.pem !== '')
        await this.broker
          .publish(crl.topic, crl.pem, { qos: 1, retain: true })
          .catch((err: unknown) => this.#log.warn({ err }, 'crl publish failed'))
    }
    this.#log.info(
      {
        site: this.#config.site,
        listeners: this.broker.listeners(),
        admin: this.admin?.port,
        version: this.#deps.version,
      },
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
    return agentMetrics(this.status(), this.#now())
  }

  #stopTimeoutMs(): number {
    return this.#deps.stopTimeoutMs ?? 8_000
  }
}

/**
 * Builds the agent. The certificate code (X.509 and ACME libraries) is the
 * costliest to load and many sites use none of it, so it is loaded here only
 * when the config uses it: a restart after a crash reaches its listeners sooner.
 */
export async function buildAgent(config: Readonly<AgentConfig>, deps: AgentDeps): Promise<Agent> {
  const certs = deps.certs ?? (usesCerts(config) ? await import('../certs/index.js') : undefined)
  const acme = deps.acme ?? (config.certs.acme !== undefined ? await certs?.loadAcme() : undefined)
  return new Agent(config, {
    ...deps,
    ...(certs === undefined ? {} : { certs }),
    ...(acme === undefined ? {} : { acme }),
  })
}

function newAcmeWiring(config: Readonly<AgentConfig>, acme: Readonly<AcmeConfig>, deps: AgentDeps): AcmeWiring {
  if (deps.acme === undefined) throw new Error('certs.acme is configured but its code was not loaded (buildAgent)')
  return new AcmeWiring(config, acme, deps.acme, deps.logger)
}
