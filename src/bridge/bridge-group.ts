// The bridges of one agent, seen together: the capture hook that fans a
// device's PUBLISH out to every upstream's rules, and this agent's beacon
// (beacon.ts), republished on the local broker whenever what is known about
// the agents above changes.
import type { Logger } from 'pino'
import type { AgentInfo, Bridge } from './bridge.js'
import type { BridgeStatus } from './bridge-status.js'
import type { CapturedPublish } from './capture.js'
import type { LocalMessage } from './inbound.js'
import { BEACON_TOPIC, composeBeacon, encodeBeacon, sameBeacon, type AgentBeacon } from './beacon.js'

export interface BridgeGroupOptions {
  readonly bridges: readonly Bridge[]
  readonly agent: AgentInfo
  readonly publishLocal: (msg: LocalMessage) => Promise<void>
  readonly logger: Logger
}

export class BridgeGroup {
  /** The component's name in /status (kept from when the beacon was called the identity). */
  readonly name = 'bridge-identity'
  /** Replaced as a whole by reconfigure(); capture reads it at each call. */
  bridges: readonly Bridge[]
  readonly #o: BridgeGroupOptions
  readonly #log: Logger
  #published: AgentBeacon | undefined
  #publishing: Promise<void> = Promise.resolve()
  #started = false

  constructor(options: BridgeGroupOptions) {
    this.#o = options
    this.bridges = options.bridges
    this.#log = options.logger.child({ component: 'bridge' })
  }

  /**
   * For LocalBroker's onPublish: undefined when no `out` rule matches (the
   * device is acknowledged at once), else a promise the PUBACK waits for.
   */
  readonly capture = (packet: CapturedPublish): Promise<unknown> | undefined => {
    const bridges = this.bridges
    if (bridges.length === 1) return (bridges[0] as Bridge).capture(packet)
    let pending: Promise<unknown>[] | undefined
    for (const b of bridges) {
      const p = b.capture(packet)
      if (p !== undefined) (pending ??= []).push(p)
    }
    if (pending === undefined) return undefined
    return pending.length === 1 ? pending[0] : Promise.all(pending)
  }

  /** Publishes this agent's beacon (retained, local) and keeps it current. */
  async start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.#started) return
    this.#started = true
    for (const b of this.bridges) b.on('peer', () => this.#republish())
    this.#republish()
    await this.#publishing
  }

  async stop(): Promise<void> {
    this.#started = false
    await this.#publishing
  }

  /**
   * Live reload: `next` becomes the set of bridges. Captures go to it at once
   * (a bridge stores into the buffer whether started or not); bridges no
   * longer in it are stopped (their in-flight rows go back to the buffer),
   * then the new ones started, in that order so that an upstream's old and
   * new bridge never hold its client id or drain its queue together.
   */
  async reconfigure(next: readonly Bridge[], signal: AbortSignal): Promise<void> {
    const prev = this.bridges
    this.bridges = next
    for (const b of prev) if (!next.includes(b)) await b.stop()
    for (const b of next) {
      if (prev.includes(b)) continue
      if (this.#started) b.on('peer', () => this.#republish())
      await b.start(signal)
    }
    this.#republish()
  }

  beacon(): AgentBeacon {
    const a = this.#o.agent
    return composeBeacon(
      { id: a.id, site: a.site, level: a.level },
      this.bridges.map((b) => b.upstreamBeacon),
    )
  }

  statuses(): BridgeStatus[] {
    return this.bridges.map((b) => b.status())
  }

  #republish(): void {
    if (!this.#started) return
    const beacon = this.beacon()
    if (sameBeacon(beacon, this.#published)) return
    this.#published = beacon
    this.#publishing = this.#publishing
      .then(() => this.#o.publishLocal({ topic: BEACON_TOPIC, payload: encodeBeacon(beacon), qos: 1, retain: true }))
      .then(
        () => this.#log.debug({ above: beacon.above.length }, 'agent beacon published'),
        (err: unknown) => this.#log.warn({ err }, 'publishing the agent beacon failed'),
      )
  }
}
