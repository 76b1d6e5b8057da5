// Messages between the soak orchestrator (soak/run.ts) and the device
// population it runs in a child process (soak/devices-main.ts), over IPC.
import type { SentStream } from './accounting.js'

export interface DeviceSpec {
  readonly id: string
  /** mqtts with a certificate from the local CA (files below), else plain mqtt. */
  readonly tls: boolean
  readonly certFile?: string
  readonly keyFile?: string
  /** Sends a burst of messages on its telemetry topic once per simulated day. */
  readonly bursts: boolean
  /** Publishes on events (the rule with ttlSec). */
  readonly events: boolean
  /** Publishes QoS 0 on q0 (the rule with bufferQos0). */
  readonly qos0: boolean
}

export interface DevicesInput {
  readonly daySec: number
  readonly host: string
  readonly plainPort: number
  readonly tlsPort: number
  readonly caFile: string
  readonly devices: readonly DeviceSpec[]
  readonly telemetryPerDay: number
  readonly burstSize: number
  readonly eventsPerDay: number
  readonly qos0PerDay: number
  /** Mean simulated days between planned reconnects of one device. */
  readonly reconnectEveryDays: number
  readonly payloadBytes: number
}

export type ParentToDevices =
  | { readonly type: 'start'; readonly input: DevicesInput }
  /** Day 0 begins at `t0` (epoch ms): publishing starts. */
  | { readonly type: 'go'; readonly t0: number }
  | { readonly type: 'stop-publishing' }
  | { readonly type: 'finish'; readonly ackTimeoutMs: number }

export interface DevicesProgress {
  readonly connected: number
  readonly sent: number
  readonly acked: number
  readonly qos0Sent: number
  readonly connects: number
  readonly connectErrors: number
  readonly renewals: number
  readonly renewalFailures: number
  /** Devices whose newest certificate expired before it was renewed. */
  readonly lapses: readonly Lapse[]
  /** Longest renewal round (first attempt to the new certificate), seconds, and the largest retry hint received. */
  readonly renewalLongestRoundSec: number | null
  readonly renewalMaxHintSec: number | null
  /** Smallest time left on a device's newest certificate seen so far, seconds. */
  readonly minCertMarginSec: number | null
  /** Smallest time left on the server certificate seen at a connect, seconds. */
  readonly minServerMarginSec: number | null
  readonly lastError: string | null
  /** Failed renewal attempts by cause. */
  readonly renewalErrors: Readonly<Record<string, number>>
}

export type DevicesToParent =
  | { readonly type: 'ready' }
  | { readonly type: 'progress'; readonly progress: DevicesProgress }
  | {
      readonly type: 'final'
      readonly progress: DevicesProgress
      readonly streams: readonly SentStream[]
      readonly qos0Sent: number
    }
  | { readonly type: 'fatal'; readonly error: string }

/** The payload every simulated device sends: who, which stream, which number, when. */
export interface SoakPayload {
  readonly d: string
  readonly k: string
  readonly s: number
  readonly t: number
  readonly p: string
}

export const STREAM_KINDS = ['telemetry', 'events', 'q0'] as const
export type StreamKind = (typeof STREAM_KINDS)[number]

/** A device whose newest certificate expired, and how its last renewal round went. */
export interface Lapse {
  readonly id: string
  readonly atDay: number
  /** When the round's first attempt was made (simulated day), null if none was. */
  readonly roundStartDay: number | null
  readonly attempts: number
  readonly lastError: string | null
  readonly lastHintSec: number | null
  /** Simulated days between the last attempt and the lapse. */
  readonly sinceLastAttemptDays: number | null
  readonly connected: boolean
  readonly renewing: boolean
}
