// The simulated device population, run in its own process by soak/run.ts so
// that the orchestrator's sampling stays on time. Each device is one mqtt.js
// client (mqtts with its certificate, or plain mqtt) that publishes numbered
// messages on its schedule, reconnects now and then, and renews its
// certificate over MQTT with the project's reference client (renewOverMqtt)
// once 70-80 % of its lifetime has passed. IPC protocol: lib/devices-protocol.ts.
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { TLSSocket } from 'node:tls'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { RenewalRefusedError, generateKeyPair, renewOverMqtt } from '../src/certs/index.js'
import type { SentStream } from './lib/accounting.js'
import type {
  DeviceSpec,
  DevicesInput,
  DevicesProgress,
  DevicesToParent,
  Lapse,
  ParentToDevices,
  SoakPayload,
  StreamKind,
} from './lib/devices-protocol.js'

const TICK_MS = 50
const CONNECT_CONCURRENCY = 20

function send(msg: DevicesToParent): void {
  process.send?.(msg)
}

class Device {
  client: MqttClient | undefined
  readonly opts: IClientOptions
  certPem = ''
  keyPem = ''
  notBefore = 0
  notAfter = Number.POSITIVE_INFINITY
  readonly seq: Record<StreamKind, number> = { telemetry: 0, events: 0, q0: 0 }
  /** QoS 1 numbers published and not yet acknowledged. */
  readonly pending: Record<'telemetry' | 'events', Set<number>> = { telemetry: new Set(), events: new Set() }
  /** QoS 1 numbers in flight when a connection was lost: mqtt.js resends them, the agent may store both copies. */
  readonly resent: Record<'telemetry' | 'events', Set<number>> = { telemetry: new Set(), events: new Set() }
  next = {
    telemetry: Number.POSITIVE_INFINITY,
    burst: Number.POSITIVE_INFINITY,
    events: Number.POSITIVE_INFINITY,
    q0: Number.POSITIVE_INFINITY,
    reconnect: Number.POSITIVE_INFINITY,
    renew: Number.POSITIVE_INFINITY,
  }
  renewing = false
  lapsed = false
  /** The new key of a renewal that got no answer: asked again for the same key (see PendingKey in src/certs). */
  pendingKeyPem: string | undefined
  /** The current renewal round: when its first attempt was made, how many, how the last one ended. */
  round = {
    startedAt: null as number | null,
    attempts: 0,
    lastAt: null as number | null,
    lastError: null as string | null,
    lastHintSec: null as number | null,
  }

  constructor(
    readonly spec: DeviceSpec,
    readonly input: DevicesInput,
    caPem: string,
  ) {
    const common = {
      clientId: spec.id,
      host: input.host,
      protocolVersion: 4 as const,
      keepalive: 30,
      reconnectPeriod: 500 + Math.floor(Math.random() * 1000),
      connectTimeout: 15_000,
      clean: true,
      resubscribe: false,
      queueQoSZero: false,
    }
    if (spec.tls) {
      this.certPem = readFileSync(spec.certFile ?? '', 'utf8')
      this.keyPem = readFileSync(spec.keyFile ?? '', 'utf8')
      this.#noteCert()
      this.opts = {
        ...common,
        protocol: 'mqtts',
        port: input.tlsPort,
        ca: caPem,
        cert: this.certPem,
        key: this.keyPem,
        rejectUnauthorized: true,
      }
    } else {
      this.opts = { ...common, protocol: 'mqtt', port: input.plainPort }
    }
  }

  #noteCert(): void {
    const x = new X509Certificate(this.certPem)
    this.notBefore = Date.parse(x.validFrom)
    this.notAfter = Date.parse(x.validTo)
    const life = this.notAfter - this.notBefore
    this.next.renew = this.notBefore + life * (0.7 + Math.random() * 0.1)
  }

  installCert(certPem: string, keyPem: string): void {
    this.certPem = certPem
    this.keyPem = keyPem
    // mqtt.js builds every reconnect's TLS socket from client.options (this object).
    this.opts.cert = certPem
    this.opts.key = keyPem
    this.#noteCert()
  }
}

const state = {
  input: undefined as DevicesInput | undefined,
  t0: 0,
  devices: [] as Device[],
  publishing: false,
  connects: 0,
  connectErrors: 0,
  renewals: 0,
  renewalFailures: 0,
  sent: 0,
  acked: 0,
  qos0Sent: 0,
  lapses: [] as Lapse[],
  renewalLongestRoundSec: null as number | null,
  renewalMaxHintSec: null as number | null,
  minCertMarginSec: null as number | null,
  minServerMarginSec: null as number | null,
  lastError: null as string | null,
  renewalErrors: {} as Record<string, number>,
}

const dayOf = (t: number): number => {
  const i = state.input
  return i === undefined ? 0 : (t - state.t0) / (i.daySec * 1000)
}

function progress(): DevicesProgress {
  return {
    connected: state.devices.filter((d) => d.client?.connected === true).length,
    sent: state.sent,
    acked: state.acked,
    qos0Sent: state.qos0Sent,
    connects: state.connects,
    connectErrors: state.connectErrors,
    renewals: state.renewals,
    renewalFailures: state.renewalFailures,
    lapses: state.lapses,
    renewalLongestRoundSec: state.renewalLongestRoundSec,
    renewalMaxHintSec: state.renewalMaxHintSec,
    minCertMarginSec: state.minCertMarginSec,
    minServerMarginSec: state.minServerMarginSec,
    lastError: state.lastError,
    renewalErrors: state.renewalErrors,
  }
}

function connectDevice(d: Device): Promise<void> {
  return new Promise((resolve) => {
    const client = mqtt.connect(d.opts)
    d.client = client
    let first = true
    client.on('connect', () => {
      state.connects++
      const now = Date.now()
      if (d.spec.tls) {
        if (now >= d.notAfter) state.lastError = `${d.spec.id} connected with an expired certificate`
        const peer = (client.stream as TLSSocket).getPeerCertificate?.()
        if (peer !== undefined && peer.valid_to !== undefined) {
          const margin = (Date.parse(peer.valid_to) - now) / 1000
          if (state.minServerMarginSec === null || margin < state.minServerMarginSec) state.minServerMarginSec = margin
        }
      }
      if (first) {
        first = false
        resolve()
      }
    })
    client.on('close', () => {
      for (const kind of ['telemetry', 'events'] as const) for (const n of d.pending[kind]) d.resent[kind].add(n)
    })
    client.on('error', (err) => {
      state.connectErrors++
      state.lastError = `${d.spec.id}: ${err.message}`
    })
    // Bounded: the first connect may fail and be retried by mqtt.js; the run goes on regardless.
    setTimeout(() => {
      if (first) {
        first = false
        resolve()
      }
    }, 30_000).unref()
  })
}

async function connectAll(): Promise<void> {
  const queue = [...state.devices]
  const workers = Array.from({ length: CONNECT_CONCURRENCY }, async () => {
    for (let d = queue.shift(); d !== undefined; d = queue.shift()) await connectDevice(d)
  })
  await Promise.all(workers)
}

function payload(d: Device, kind: StreamKind, seq: number): string {
  const i = state.input
  const body: SoakPayload = { d: d.spec.id, k: kind, s: seq, t: Date.now(), p: '' }
  const base = JSON.stringify(body).length
  return JSON.stringify({ ...body, p: 'x'.repeat(Math.max(0, (i?.payloadBytes ?? 0) - base)) })
}

function publishQos1(d: Device, kind: 'telemetry' | 'events'): void {
  const client = d.client
  if (client === undefined) return
  const seq = ++d.seq[kind]
  d.pending[kind].add(seq)
  state.sent++
  client.publish(`devices/${d.spec.id}/${kind}`, payload(d, kind, seq), { qos: 1 }, (err) => {
    if (err !== undefined && err !== null) {
      state.lastError = `${d.spec.id} publish: ${err.message}`
      return
    }
    if (d.pending[kind].delete(seq)) state.acked++
  })
}

function publishQos0(d: Device): void {
  const client = d.client
  // QoS 0 is fire-and-forget: a device does not queue it while disconnected.
  if (client === undefined || !client.connected) return
  const seq = ++d.seq.q0
  state.qos0Sent++
  client.publish(`devices/${d.spec.id}/q0`, payload(d, 'q0', seq), { qos: 0 })
}

async function renew(d: Device): Promise<void> {
  const client = d.client
  if (client === undefined || !client.connected || d.renewing) return
  d.renewing = true
  const again = d.pendingKeyPem !== undefined
  const startedAt = Date.now()
  d.round.startedAt ??= startedAt
  d.round.attempts++
  d.round.lastAt = startedAt
  try {
    d.pendingKeyPem ??= (await generateKeyPair()).privateKeyPem
    // A short wait: a reply lost to an agent restart must leave time to ask again before the certificate lapses.
    const timeoutMs = Math.max(2000, (d.notAfter - d.notBefore) * 0.04)
    const r = await renewOverMqtt({
      client,
      id: d.spec.id,
      caPem: readFileSync(d.input.caFile, 'utf8'),
      currentKeyPem: d.keyPem,
      newKeyPem: d.pendingKeyPem,
      timeoutMs,
    })
    d.pendingKeyPem = undefined
    d.installCert(r.certPem, r.keyPem)
    state.renewals++
    const roundSec = (Date.now() - (d.round.startedAt ?? startedAt)) / 1000
    if (state.renewalLongestRoundSec === null || roundSec > state.renewalLongestRoundSec)
      state.renewalLongestRoundSec = roundSec
    d.round = { startedAt: null, attempts: 0, lastAt: null, lastError: null, lastHintSec: null }
    // Use the new certificate on the next connection, soon: a device does not wait for the old one to lapse.
    d.next.reconnect = Math.min(d.next.reconnect, Date.now() + Math.random() * d.input.daySec * 100)
  } catch (err) {
    state.renewalFailures++
    const why =
      err instanceof RenewalRefusedError
        ? `refused: ${err.error} (${again ? 'key of an unanswered request' : 'new key'})`
        : err instanceof Error
          ? err.message.replace(/devices\/[^/]+\//, 'devices/<id>/')
          : String(err)
    state.renewalErrors[why] = (state.renewalErrors[why] ?? 0) + 1
    state.lastError = `${d.spec.id} renewal: ${why}`
    // As advised ('busy', 'too-early', 'rate-limited'), else soon.
    const hintSec = err instanceof RenewalRefusedError ? err.retryAfterSec : undefined
    d.round.lastError = why
    d.round.lastHintSec = hintSec ?? null
    if (hintSec !== undefined && (state.renewalMaxHintSec === null || hintSec > state.renewalMaxHintSec))
      state.renewalMaxHintSec = hintSec
    d.next.renew = Date.now() + (hintSec ?? 1) * 1000
  } finally {
    d.renewing = false
  }
}

function schedule(d: Device, now: number): void {
  const i = d.input
  const day = i.daySec * 1000
  d.next.telemetry = now + Math.random() * (day / i.telemetryPerDay)
  d.next.burst = d.spec.bursts ? now + Math.random() * day : Number.POSITIVE_INFINITY
  d.next.events = d.spec.events ? now + Math.random() * (day / i.eventsPerDay) : Number.POSITIVE_INFINITY
  d.next.q0 = d.spec.qos0 ? now + Math.random() * (day / i.qos0PerDay) : Number.POSITIVE_INFINITY
  d.next.reconnect = now + (0.5 + Math.random()) * i.reconnectEveryDays * day
}

function tick(): void {
  const i = state.input
  if (i === undefined) return
  const now = Date.now()
  const day = i.daySec * 1000
  for (const d of state.devices) {
    if (d.spec.tls) {
      const margin = (d.notAfter - now) / 1000
      if (state.minCertMarginSec === null || margin < state.minCertMarginSec) state.minCertMarginSec = margin
      if (margin <= 0 && !d.lapsed) {
        d.lapsed = true
        const r = d.round
        state.lapses.push({
          id: d.spec.id,
          atDay: dayOf(now),
          roundStartDay: r.startedAt === null ? null : dayOf(r.startedAt),
          attempts: r.attempts,
          lastError: r.lastError,
          lastHintSec: r.lastHintSec,
          sinceLastAttemptDays: r.lastAt === null ? null : (now - r.lastAt) / (i.daySec * 1000),
          connected: d.client?.connected === true,
          renewing: d.renewing,
        })
      }
      if (now >= d.next.renew) void renew(d) // errors are counted inside
    }
    if (!state.publishing) continue
    while (now >= d.next.telemetry) {
      publishQos1(d, 'telemetry')
      d.next.telemetry += day / i.telemetryPerDay
    }
    if (now >= d.next.burst) {
      for (let n = 0; n < i.burstSize; n++) publishQos1(d, 'telemetry')
      d.next.burst += day
    }
    while (now >= d.next.events) {
      publishQos1(d, 'events')
      d.next.events += day / i.eventsPerDay
    }
    while (now >= d.next.q0) {
      publishQos0(d)
      d.next.q0 += day / i.qos0PerDay
    }
    if (now >= d.next.reconnect) {
      d.next.reconnect = now + (0.5 + Math.random()) * i.reconnectEveryDays * day
      // A device's own reconnect: the socket goes, mqtt.js reconnects and resends what is unacknowledged.
      if (d.client?.connected === true) d.client.stream.destroy()
    }
  }
}

function streams(): SentStream[] {
  const out: SentStream[] = []
  for (const d of state.devices) {
    for (const kind of ['telemetry', 'events'] as const) {
      if (d.seq[kind] > 0) {
        const id = `${d.spec.id}/${kind}`
        out.push({ id, sent: d.seq[kind], unacked: [...d.pending[kind]], resent: [...d.resent[kind]] })
      }
    }
  }
  return out
}

async function finish(ackTimeoutMs: number): Promise<void> {
  state.publishing = false
  const deadline = Date.now() + ackTimeoutMs
  while (Date.now() < deadline && state.devices.some((d) => d.pending.telemetry.size + d.pending.events.size > 0)) {
    await new Promise((r) => setTimeout(r, 200))
  }
  clearInterval(ticker)
  clearInterval(reporter)
  const final = progress()
  const s = streams()
  await Promise.all(
    state.devices.map((d) =>
      d.client === undefined ? Promise.resolve() : d.client.endAsync(true).catch(() => undefined),
    ),
  )
  process.send?.(
    { type: 'final', progress: final, streams: s, qos0Sent: state.qos0Sent } satisfies DevicesToParent,
    undefined,
    {},
    () => process.disconnect?.(),
  )
}

let ticker: NodeJS.Timeout | undefined
let reporter: NodeJS.Timeout | undefined

process.on('message', (m: ParentToDevices) => {
  if (m.type === 'start') {
    const input = m.input
    state.input = input
    const caPem = readFileSync(input.caFile, 'utf8')
    state.devices = input.devices.map((s) => new Device(s, input, caPem))
    state.t0 = Date.now()
    // Renewal and the validity watch run from the first connection, before day 0 begins.
    ticker = setInterval(tick, TICK_MS)
    void connectAll().then(() => send({ type: 'ready' }))
  } else if (m.type === 'go') {
    state.t0 = m.t0
    const now = Date.now()
    for (const d of state.devices) schedule(d, now)
    state.publishing = true
    reporter = setInterval(() => send({ type: 'progress', progress: progress() }), 1000)
  } else if (m.type === 'stop-publishing') {
    state.publishing = false
  } else {
    void finish(m.ackTimeoutMs).catch((err: unknown) => send({ type: 'fatal', error: String(err) }))
  }
})
// The orchestrator owns this process: when it goes, so do we.
process.on('disconnect', () => process.exit(0))
