// The upstream side: one subscriber on the real Mosquitto (not through the
// relay), with a persistent session, counting what the agent delivered per
// device stream, and arrivals per second for the rate-limit check.
import mqtt, { type MqttClient } from 'mqtt'
import { DeliveryTracker } from './accounting.js'
import type { SoakPayload } from './devices-protocol.js'

/** Loss reports the agent sent upstream (edge-agent/{site}/drops): counted apart from device messages. */
export interface LossReportsSeen {
  /** Distinct reports (a report resent after a reconnect is counted once). */
  reports: number
  duplicates: number
  /** rule → reason → dropped messages the reports announce. */
  readonly byRule: Record<string, Record<string, number>>
}

export class Sink {
  readonly lossReports: LossReportsSeen = { reports: 0, duplicates: 0, byRule: {} }
  readonly #reportKeys = new Set<string>()
  readonly qos1 = new DeliveryTracker()
  readonly qos0 = new DeliveryTracker()
  /** Arrivals per whole second (epoch seconds), QoS 0 and 1. */
  readonly perSecond = new Map<number, number>()
  lastArrivalAt = 0
  #client: MqttClient | undefined

  constructor(
    private readonly port: number,
    private readonly topicFilter: string,
    private readonly lossReportFilter = 'edge-agent/+/drops',
  ) {}

  async start(): Promise<void> {
    const client = await mqtt.connectAsync({
      host: '127.0.0.1',
      port: this.port,
      protocolVersion: 5,
      clientId: 'edge-soak-sink',
      clean: false,
      properties: { sessionExpiryInterval: 86_400 },
      reconnectPeriod: 500,
      connectTimeout: 10_000,
    })
    this.#client = client
    client.on('message', (topic, payload) =>
      /^edge-agent\/[^/]+\/drops$/.test(topic) ? this.#onLossReport(payload) : this.#onMessage(payload),
    )
    await client.subscribeAsync([this.topicFilter, this.lossReportFilter], { qos: 1 })
  }

  #onLossReport(payload: Buffer): void {
    let r: {
      rule?: unknown
      reason?: unknown
      count?: unknown
      firstId?: unknown
      lastId?: unknown
      firstAt?: unknown
      reportedAt?: unknown
    }
    try {
      r = JSON.parse(payload.toString('utf8')) as typeof r
    } catch {
      return
    }
    const key = JSON.stringify([r.rule, r.reason, r.firstId, r.lastId, r.firstAt, r.count, r.reportedAt])
    if (this.#reportKeys.has(key)) {
      this.lossReports.duplicates++
      return
    }
    this.#reportKeys.add(key)
    this.lossReports.reports++
    const rule = String(r.rule)
    const reason = String(r.reason)
    const byReason = (this.lossReports.byRule[rule] ??= {})
    byReason[reason] = (byReason[reason] ?? 0) + (typeof r.count === 'number' ? r.count : 0)
  }

  #onMessage(payload: Buffer): void {
    const now = Date.now()
    this.lastArrivalAt = now
    const sec = Math.floor(now / 1000)
    this.perSecond.set(sec, (this.perSecond.get(sec) ?? 0) + 1)
    let m: SoakPayload
    try {
      m = JSON.parse(payload.toString('utf8')) as SoakPayload
    } catch {
      this.qos1.malformed()
      return
    }
    const tracker = m.k === 'q0' ? this.qos0 : this.qos1
    tracker.observe(`${m.d}/${m.k}`, m.s)
  }

  /** Highest mean arrival rate over any `windowSec` window between two epoch-ms times. */
  maxRate(fromMs: number, toMs: number, windowSec: number): number {
    const a = Math.floor(fromMs / 1000)
    const b = Math.floor(toMs / 1000)
    let best = 0
    for (let s = a; s + windowSec <= b + 1; s++) {
      let n = 0
      for (let i = 0; i < windowSec; i++) n += this.perSecond.get(s + i) ?? 0
      best = Math.max(best, n / windowSec)
    }
    return best
  }

  async stop(): Promise<void> {
    await this.#client?.endAsync(true).catch(() => undefined)
  }
}
