// Loop detection for one upstream: reads the upstream agent's beacon
// (beacon.ts) and says whether forwarding to it may go on.
//
// Forwarding waits until the beacon question is decided, so that not even one
// message goes around a loop on the first connection: decided means a beacon
// arrived, or identityWaitMs passed after the SUBACK without one (the upstream
// is not an edge-agent), or loop detection is off. A beacon that names this
// agent pauses forwarding until a later beacon no longer does.
//
// The beacon subscription is a SUBSCRIBE of its own: some cloud brokers close
// the connection on a filter they do not allow (AWS IoT Core does for '$'
// topics). A refusal (SUBACK 0x80) or two connections closed while it was
// pending turn loop detection off for this upstream, with a warning, instead
// of a reconnect loop.
import type { Logger } from 'pino'
import { BEACON_TOPIC, decodeBeacon, formsLoop, sameBeacon, type AgentBeacon } from './beacon.js'
import type { UpstreamConnection } from './upstream-connection.js'

const LOOP_DETECTION_OFF =
  'loop detection is off for this upstream (it does not serve $edge-agent/identity); set loopDetection: false to silence this'

export interface LoopDetectorOptions {
  /** upstreams[].loopDetection */
  readonly enabled: boolean
  /** This agent's random per-process id. */
  readonly agentId: string
  readonly conn: UpstreamConnection
  /** After SUBACK, how long to wait for the upstream's retained beacon, ms. */
  readonly waitMs: number
  readonly logger: Logger
  readonly now: () => number
  /** Forwarding may have become possible (the question was decided). */
  readonly onDecided: () => void
  /** The upstream agent's beacon changed (undefined: none / not an edge-agent). */
  readonly onPeer: (beacon: AgentBeacon | undefined) => void
  /** Forwarding paused (true) or resumed (false) because of a loop. */
  readonly onLoop: (looping: boolean) => void
}

export class LoopDetector {
  readonly #o: LoopDetectorOptions
  #mode: 'on' | 'off'
  #decided: boolean
  #failures = 0
  #timer: NodeJS.Timeout | undefined
  #peer: AgentBeacon | undefined
  #loopSince: number | null = null

  constructor(options: LoopDetectorOptions) {
    this.#o = options
    this.#mode = options.enabled ? 'on' : 'off'
    this.#decided = !options.enabled
  }

  /** The upstream agent's beacon, if it is an edge-agent that published one. */
  get peer(): AgentBeacon | undefined {
    return this.#peer
  }

  /** Epoch ms since forwarding is paused because of a loop; null when it is not. */
  get loopSince(): number | null {
    return this.#loopSince
  }

  /** Decided, and no loop. */
  get allowsForwarding(): boolean {
    return this.#decided && this.#loopSince === null
  }

  /** On every connection: (re)subscribes to the beacon while detection is on. */
  connected(): void {
    if (this.#mode === 'on') this.#subscribe()
  }

  /** A message on BEACON_TOPIC from the upstream. */
  received(payload: Buffer): void {
    const beacon = payload.length === 0 ? undefined : decodeBeacon(payload)
    const changed = !sameBeacon(beacon, this.#peer)
    this.#peer = beacon
    const looping = beacon !== undefined && formsLoop(this.#o.agentId, beacon)
    if (looping && this.#loopSince === null) {
      this.#loopSince = this.#o.now()
      const peer = { peerSite: beacon.site, peerLevel: beacon.level, peerAbove: beacon.above.length }
      this.#o.logger.error(
        { code: 'EDGE_ERR_BRIDGE_LOOP_DETECTED', ...peer },
        'forwarding loop detected: this upstream is also one of our downstreams; forwarding to it is paused',
      )
      this.#o.onLoop(true)
    } else if (!looping && this.#loopSince !== null) {
      this.#loopSince = null
      this.#o.logger.info('forwarding loop cleared, forwarding resumed')
      this.#o.onLoop(false)
    }
    if (changed) this.#o.onPeer(beacon)
    this.#decide()
  }

  stop(): void {
    clearTimeout(this.#timer)
  }

  #subscribe(): void {
    const conn = this.#o.conn
    let settled = false
    const onClose = (): void => {
      if (settled) return
      settled = true
      if (++this.#failures >= 2) this.#off('the upstream closed the connection on the identity subscription')
    }
    conn.once('disconnected', onClose)
    conn.session.subscribe([{ topic: BEACON_TOPIC, qos: 1, nl: true, rap: true, rh: 0 }]).then(
      ([granted]) => {
        settled = true
        conn.off('disconnected', onClose)
        this.#failures = 0
        if (granted === undefined || granted >= 0x80) {
          this.#off(`the upstream refused the identity subscription (reason code ${granted ?? 'none'})`)
          return
        }
        if (!this.#decided) {
          // The upstream's retained beacon, if any, follows the SUBACK; give it a moment.
          clearTimeout(this.#timer)
          this.#timer = setTimeout(() => this.#decide(), this.#o.waitMs)
          this.#timer.unref()
        }
      },
      () => undefined, // disconnected: onClose counts it
    )
  }

  #off(why: string): void {
    if (this.#mode === 'off') return
    this.#mode = 'off'
    this.#o.logger.warn({ why }, LOOP_DETECTION_OFF)
    this.#decide()
  }

  #decide(): void {
    if (this.#decided) return
    this.#decided = true
    this.#o.onDecided()
  }
}
