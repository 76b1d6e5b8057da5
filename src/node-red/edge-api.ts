// The one object the `edge in` / `edge out` nodes get from the agent, and all
// they get: publish and subscribe by node id. Publishes pass a per-node rate
// limit and a size limit here, then the agent's link (ACL, bridge capture into
// the buffer, local publish). The object holds only closures: nothing in it
// leads to the broker, the store or the bridges as objects.
import type { Logger } from 'pino'
import { NodeRedError } from './errors.js'

export interface EdgeMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
}

/** What the agent provides (wired in src/agent/app.ts). */
export interface EdgeLink {
  /**
   * Publishes as the flow identity: refused by the ACL with an error; else
   * resolves once every matching bridge rule's copy is committed to the
   * buffer and the message is routed locally.
   */
  publish(msg: EdgeMessage): Promise<void>
  /** In-process subscription on the local broker; resolves with the unsubscribe. */
  subscribe(filter: string, deliver: (msg: EdgeMessage) => void): Promise<() => Promise<void>>
}

export type PublishOutcome = 'published' | 'throttled'

/** As the nodes see it (dist/node-red/nodes/edge.cjs). */
export interface EdgeNodesApi {
  publish(nodeId: string, msg: EdgeMessage): Promise<PublishOutcome>
  subscribe(nodeId: string, filter: string, deliver: (msg: EdgeMessage) => void): Promise<() => Promise<void>>
}

export interface EdgeCounters {
  published: number
  throttled: number
  failed: number
  received: number
  subscriptions: number
}

interface Bucket {
  tokens: number
  at: number
}

export interface EdgeApiOptions {
  readonly link: EdgeLink
  readonly maxRatePerSec: number
  readonly maxPayloadBytes: number
  readonly logger: Logger
  readonly now?: () => number
}

/** Builds the nodes' API; `counters` stays with the component for /status. */
export function createEdgeApi(o: EdgeApiOptions): { api: EdgeNodesApi; counters: EdgeCounters } {
  const counters: EdgeCounters = { published: 0, throttled: 0, failed: 0, received: 0, subscriptions: 0 }
  const now = o.now ?? Date.now
  const buckets = new Map<string, Bucket>()
  // One warning per node per 10 s at most: a flooding flow must not flood the journal too.
  const warned = new Map<string, number>()
  const take = (nodeId: string): boolean => {
    const t = now()
    const b = buckets.get(nodeId) ?? { tokens: o.maxRatePerSec, at: t }
    b.tokens = Math.min(o.maxRatePerSec, b.tokens + ((t - b.at) / 1000) * o.maxRatePerSec)
    b.at = t
    buckets.set(nodeId, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }
  const api: EdgeNodesApi = Object.freeze({
    publish: async (nodeId: string, msg: EdgeMessage): Promise<PublishOutcome> => {
      if (msg.payload.length > o.maxPayloadBytes) {
        counters.failed++
        throw new NodeRedError(
          'EDGE_ERR_NODERED_PAYLOAD_TOO_LARGE',
          `payload of ${msg.payload.length} bytes exceeds nodeRed.maxPayloadBytes (${o.maxPayloadBytes})`,
        )
      }
      if (!take(nodeId)) {
        counters.throttled++
        const last = warned.get(nodeId) ?? 0
        if (now() - last >= 10_000) {
          warned.set(nodeId, now())
          o.logger.warn(
            { nodeId, maxPublishRatePerSec: o.maxRatePerSec, throttledTotal: counters.throttled },
            'edge out publishing faster than allowed; messages dropped',
          )
        }
        return 'throttled'
      }
      try {
        await o.link.publish(msg)
      } catch (err) {
        counters.failed++
        throw err
      }
      counters.published++
      return 'published'
    },
    subscribe: async (nodeId: string, filter: string, deliver: (msg: EdgeMessage) => void) => {
      const unsubscribe = await o.link.subscribe(filter, (m) => {
        counters.received++
        deliver(m)
      })
      counters.subscriptions++
      o.logger.debug({ nodeId, filter }, 'edge in subscribed')
      let done = false
      return async () => {
        if (done) return
        done = true
        counters.subscriptions--
        buckets.delete(nodeId)
        await unsubscribe()
      }
    },
  })
  return { api, counters }
}
