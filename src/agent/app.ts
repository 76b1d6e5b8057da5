// Composition root: turns a validated config into components, wires the
// effects between them, and answers /status and /metrics. No I/O at build
// time; start() does it all, in dependency order, and stop() in reverse.
import { mkdir } from 'node:fs/promises'
import type { Logger } from 'pino'
import { LocalBroker } from '../local-broker/index.js'
import type { AgentConfig } from './config/schema.js'
import { startAll, stopAll, type Component } from './lifecycle.js'
import { AdminServer } from './admin-server.js'
import { MetricsText, byLabel } from './metrics.js'
import { RateMeter } from './rate-meter.js'

export interface AgentDeps {
  readonly logger: Logger
  readonly version: string
  /** Per-component stop deadline; the sum stays below systemd's TimeoutStopSec. */
  readonly stopTimeoutMs?: number
  readonly now?: () => number
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
}

export class Agent {
  readonly broker: LocalBroker
  readonly admin: AdminServer | undefined
  readonly #config: Readonly<AgentConfig>
  readonly #deps: AgentDeps
  readonly #log: Logger
  readonly #components: Component[]
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
    this.broker = new LocalBroker({
      listeners: config.broker.listeners,
      limits: config.broker.limits,
      logger: deps.logger,
    })
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
          },
        })
      : undefined
    // Start order is dependency order; the admin endpoint comes first so that
    // /healthz can say "starting" during a slow start.
    this.#components = [...(this.admin ? [this.admin] : []), this.broker]
  }

  get state(): AgentState {
    return this.#state
  }

  async start(signal: AbortSignal): Promise<void> {
    this.#state = 'starting'
    try {
      // 0700: the state directory will hold the message store and private keys.
      await mkdir(this.#config.dataDir, { recursive: true, mode: 0o700 })
      await startAll(this.#components, signal, this.#log, this.#stopTimeoutMs())
    } catch (err) {
      this.#state = 'failed'
      throw err
    }
    this.#startedAt = this.#now()
    this.#rates.start()
    this.#state = 'running'
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

  health(): { ok: boolean; detail: Record<string, unknown> } {
    return { ok: this.#state === 'running', detail: { state: this.#state } }
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
    }
  }

  metrics(): string {
    const s = this.status()
    const b = s.broker
    return new MetricsText()
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
      .toString()
  }

  #stopTimeoutMs(): number {
    return this.#deps.stopTimeoutMs ?? 8_000
  }
}

export function buildAgent(config: Readonly<AgentConfig>, deps: AgentDeps): Agent {
  return new Agent(config, deps)
}

function round(n: number): number {
  return Math.round(n * 10) / 10
}
