// The retained status messages one bridge keeps on its upstream's status
// topic (upstreams[].status): "online" on every connect, before any data;
// "offline" as the Will, for a lost connection; "offline" on stop. They go
// outside the buffer: a status is about now, and is worthless replayed.
import type { MqttSession, OutboundMessage } from './mqtt-session.js'

export interface StatusMessagesOptions {
  readonly enabled: boolean
  /** Placeholders {site}, {upstream}. */
  readonly topic: string
  readonly upstream: string
  readonly agent: { readonly id: string; readonly site: string; readonly level: number; readonly version: string }
  readonly now: () => number
}

export class StatusMessages {
  /** The status topic, or undefined when status messages are off. */
  readonly topic: string | undefined
  readonly #o: StatusMessagesOptions

  constructor(options: StatusMessagesOptions) {
    this.#o = options
    this.topic = options.enabled
      ? options.topic.replace(/\{site\}/g, options.agent.site).replace(/\{upstream\}/g, options.upstream)
      : undefined
  }

  /** The CONNECT's Will: composed now, sent by the upstream when the connection is lost. */
  will(): OutboundMessage | undefined {
    if (this.topic === undefined) return undefined
    return { topic: this.topic, payload: this.#payload('offline', 'connection lost', false), qos: 1, retain: true }
  }

  /** "online", on a new connection; not awaited (the data follows it on the same session). */
  birth(session: MqttSession): void {
    if (this.topic === undefined) return
    const msg = { topic: this.topic, payload: this.#payload('online'), qos: 1 as const, retain: true }
    void publishDirect(session, msg, 5_000)
  }

  /** "offline", on stop; resolves on the upstream's ack or after `ms`. */
  offline(session: MqttSession, ms: number): Promise<void> {
    if (this.topic === undefined) return Promise.resolve()
    return publishDirect(
      session,
      { topic: this.topic, payload: this.#payload('offline', 'stopped'), qos: 1, retain: true },
      ms,
    )
  }

  /** The status payload; `at` is omitted for the Will, which is composed at start and sent by the upstream later. */
  #payload(state: 'online' | 'offline', reason?: string, withTime = true): Buffer {
    const a = this.#o.agent
    return Buffer.from(
      JSON.stringify({
        state,
        site: a.site,
        level: a.level,
        upstream: this.#o.upstream,
        agent: a.id,
        version: a.version,
        ...(withTime ? { at: new Date(this.#o.now()).toISOString() } : {}),
        ...(reason === undefined ? {} : { reason }),
      }),
    )
  }
}

/** Publishes outside the buffer; resolves on ack or after `ms`. */
function publishDirect(session: MqttSession, msg: OutboundMessage, ms: number): Promise<void> {
  if (!session.connected) return Promise.resolve()
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    try {
      session.publish(msg, () => {
        clearTimeout(timer)
        resolve()
      })
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}
