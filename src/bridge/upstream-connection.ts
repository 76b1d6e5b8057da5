// Keeps one MQTT session to an upstream connected: connects, reconnects with
// decorrelated-jitter backoff, and reports every state change (log line,
// counters, event). Only ever dials out.
//
// Reconnecting within a second of the upstream's return without hammering it:
// - after an established connection is lost, the first attempt is immediate
//   if the connection had been stable (≥ resetAfterMs); after a short-lived
//   one it waits a backoff delay, which a TCP probe cuts short only once the
//   port has refused at least once and accepts again: an upstream that went
//   away and came back, not one that is up and keeps kicking us out (e.g. a
//   duplicate client id taking the session over);
// - while attempts fail at the transport level (refused, unreachable, timed
//   out: nobody is listening), a cheap TCP probe runs every probeIntervalMs
//   (±20 %) beside the backoff timer and cuts the wait short as soon as the
//   port accepts again; a probe success also restarts an attempt whose TCP
//   SYN is stuck in the kernel's retransmission schedule;
// - when the upstream answers but refuses (CONNACK ≠ 0, TLS failure,
//   DISCONNECT with a reason), only the backoff applies: probing a broker
//   that is up but says no would turn into a retry storm.
import { EventEmitter } from 'node:events'
import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { Backoff, jittered } from './backoff.js'
import { BridgeError, isBridgeError } from './errors.js'
import {
  MqttSession,
  type ConnectInfo,
  type InboundMessage,
  type ProtocolVersion,
  type WillMessage,
} from './mqtt-session.js'
import { openTransport, probe, type TlsFiles, type TlsMaterial } from './transport.js'

export type UpstreamState = 'idle' | 'connecting' | 'connected' | 'waiting' | 'stopped'

export interface ReconnectOptions {
  /** Smallest backoff delay, ms. */
  readonly minMs: number
  /** Largest backoff delay, ms. */
  readonly maxMs: number
  /** A connection up this long counts as stable and resets the backoff, ms. */
  readonly resetAfterMs: number
  /** TCP probe period while the upstream is unreachable, ms; 0 disables probing. */
  readonly probeIntervalMs: number
}

export interface UpstreamConnectionOptions {
  readonly name: string
  readonly url: URL
  readonly protocolVersion: ProtocolVersion
  readonly clientId: string
  readonly username?: string | undefined
  /** File holding the password (trailing newline ignored); read at each attempt. */
  readonly passwordFile?: string | undefined
  readonly password?: Buffer | undefined
  readonly tls?: TlsFiles | undefined
  /** In-memory TLS material (the gateway's own certificate), preferred over files. */
  readonly tlsMaterial?: (() => TlsMaterial | undefined) | undefined
  readonly keepaliveSec: number
  readonly cleanStart: boolean
  readonly sessionExpirySec: number
  readonly connectTimeoutMs: number
  readonly maxInflight: number
  readonly bridgeFlag: boolean
  readonly will?: WillMessage | undefined
  readonly reconnect: ReconnectOptions
  readonly onMessage: (msg: InboundMessage) => Promise<void>
  readonly logger: Logger
  readonly random?: () => number
  readonly now?: () => number
}

export interface UpstreamConnectionEvents {
  connected: [info: ConnectInfo]
  disconnected: [err: Error | undefined]
  state: [state: UpstreamState]
  /** The transport can take more QoS 0 data. */
  drain: []
}

export interface ConnectionStats {
  readonly state: UpstreamState
  /** Epoch ms of the last state change. */
  readonly since: number
  readonly connected: boolean
  /** Epoch ms the current connection was established; null when not connected. */
  readonly connectedAt: number | null
  readonly attempts: number
  readonly connects: number
  readonly disconnects: number
  readonly lastError: {
    readonly code: string
    readonly message: string
    readonly reasonCode: number | undefined
    readonly at: number
  } | null
  readonly window: number
  readonly sessionPresent: boolean | null
}

type FailureKind = 'transport' | 'rejected'

export class UpstreamConnection extends EventEmitter<UpstreamConnectionEvents> {
  readonly session: MqttSession
  readonly #o: UpstreamConnectionOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #random: () => number
  readonly #backoff: Backoff
  #state: UpstreamState = 'idle'
  #since: number
  #connectedAt: number | null = null
  #attempts = 0
  #connects = 0
  #disconnects = 0
  #lastError: ConnectionStats['lastError'] = null
  #running: Promise<void> | undefined
  #stopped = false
  /** Wakes a pending wait (stop, or a probe that found the port open). */
  #wake: (() => void) | undefined
  #attemptAbort: AbortController | undefined
  /** Set by reconnect(): the close that follows is ours and the next attempt comes at once. */
  #recycling = false
  /** Set by hold(): no connection attempts until released (e.g. an expired client certificate). */
  #held: string | null = null
  #release: (() => void) | undefined

  constructor(options: UpstreamConnectionOptions) {
    super()
    this.#o = options
    this.#log = options.logger
    this.#now = options.now ?? Date.now
    this.#random = options.random ?? Math.random
    this.#since = this.#now()
    this.#backoff = new Backoff({
      baseMs: options.reconnect.minMs,
      capMs: options.reconnect.maxMs,
      resetAfterMs: options.reconnect.resetAfterMs,
      random: this.#random,
    })
    this.session = new MqttSession({
      protocolVersion: options.protocolVersion,
      clientId: options.clientId,
      username: options.username,
      keepaliveSec: options.keepaliveSec,
      cleanStart: options.cleanStart,
      sessionExpirySec: options.sessionExpirySec,
      will: options.will,
      bridgeFlag: options.bridgeFlag,
      connectTimeoutMs: options.connectTimeoutMs,
      maxInflight: options.maxInflight,
      onMessage: options.onMessage,
      logger: options.logger,
      now: this.#now,
    })
    this.session.on('drain', () => this.emit('drain'))
  }

  get state(): UpstreamState {
    return this.#state
  }

  stats(): ConnectionStats {
    const info = this.session.info
    return {
      state: this.#state,
      since: this.#since,
      connected: this.#state === 'connected',
      connectedAt: this.#connectedAt,
      attempts: this.#attempts,
      connects: this.#connects,
      disconnects: this.#disconnects,
      lastError: this.#lastError,
      window: info?.window ?? 0,
      sessionPresent: info?.sessionPresent ?? null,
    }
  }

  /** Starts the connect loop; returns at once (an unreachable upstream is a state, not an error). */
  start(): void {
    if (this.#running !== undefined || this.#stopped) return
    this.#running = this.#run().catch((err: unknown) => {
      // The loop handles every expected failure; reaching this is a bug.
      this.#log.error({ err }, 'upstream connection loop failed')
      this.#setState('stopped')
    })
  }

  /**
   * Stops reconnecting and ends the connection gracefully (DISCONNECT). With
   * `withWill` (MQTT 5), the upstream publishes the Will as it closes.
   */
  async stop(opts: { withWill?: boolean } = {}): Promise<void> {
    if (this.#stopped) return this.#running
    this.#stopped = true
    this.#attemptAbort?.abort()
    this.#wake?.()
    if (this.session.connected) await this.session.disconnect(opts)
    else this.session.destroy()
    await this.#running
    this.#setState('stopped')
  }

  /**
   * Ends the current connection gracefully (DISCONNECT, no Will) and connects
   * again at once, e.g. to present a renewed client certificate. In-flight
   * messages are sent again on the new connection, as after any reconnect.
   */
  async reconnect(): Promise<void> {
    if (this.#stopped || !this.session.connected) return
    this.#recycling = true
    await this.session.disconnect()
  }

  /** Why connecting is held, or null. */
  get held(): string | null {
    return this.#held
  }

  /**
   * hold(reason): closes the connection and makes no attempt until
   * hold(null). Messages keep being buffered meanwhile.
   */
  async hold(reason: string | null): Promise<void> {
    if (reason === null) {
      this.#held = null
      this.#release?.()
      return
    }
    this.#held = reason
    this.#attemptAbort?.abort()
    this.#wake?.()
    if (this.session.connected) await this.session.disconnect()
  }

  // ---------------------------------------------------------------------------

  async #run(): Promise<void> {
    // What the next wait looks like: none; backoff cut short by the first
    // successful probe ('probe': the upstream was just found unreachable);
    // backoff cut short by a probe that succeeds after one failed ('watch':
    // a connection dropped soon after it was made, which is either the
    // upstream going away or the upstream kicking us out, e.g. a duplicate
    // client id; only the former makes a probe fail); plain backoff.
    let next: 'now' | 'probe' | 'watch' | 'backoff' = 'now'
    while (!this.#stopped) {
      if (this.#held !== null) {
        this.#setState('waiting')
        await new Promise<void>((resolve) => {
          this.#release = resolve
          this.#wake = resolve
        })
        this.#release = undefined
        this.#wake = undefined
        if (this.#stopped) break
        if (this.#held !== null) continue
        next = 'now'
      }
      if (next !== 'now') {
        const delay = this.#backoff.next()
        this.#setState('waiting')
        this.#log.debug({ delayMs: delay, probing: next }, 'upstream reconnect scheduled')
        await this.#wait(delay, next === 'backoff' ? 'off' : next === 'probe' ? 'open' : 'reopened')
        if (this.#stopped) break
        if (this.#held !== null) continue
      }
      const result = await this.#attempt(next === 'probe')
      if (this.#stopped) {
        if (result.ok) this.session.destroy()
        break
      }
      if (this.#held !== null) {
        if (result.ok) await this.session.disconnect()
        continue
      }
      if (!result.ok) {
        next = result.kind === 'retry' ? 'now' : result.kind === 'transport' ? 'probe' : 'backoff'
        continue
      }
      const upForMs = await this.#connectedUntilClosed(result.info)
      if (this.#recycling) {
        this.#recycling = false
        next = 'now'
        continue
      }
      this.#backoff.connectionEnded(upForMs)
      // A stable connection that dropped: try again at once (the upstream may
      // only have restarted); a flapping one backs off.
      next = upForMs >= this.#o.reconnect.resetAfterMs ? 'now' : 'watch'
    }
    this.#setState('stopped')
  }

  async #attempt(
    withProbe: boolean,
  ): Promise<{ ok: true; info: ConnectInfo } | { ok: false; kind: FailureKind | 'retry' }> {
    this.#attempts++
    this.#setState('connecting')
    const abort = new AbortController()
    this.#attemptAbort = abort
    let transportOpen = false
    let restarted = false
    const stopProbe = withProbe
      ? this.#probeLoop(() => {
          if (!transportOpen && !abort.signal.aborted) {
            restarted = true
            abort.abort()
          }
        })
      : undefined
    try {
      const password =
        this.#o.password ?? (this.#o.passwordFile === undefined ? undefined : await readPassword(this.#o.passwordFile))
      const stream = await openTransport({
        url: this.#o.url,
        connectTimeoutMs: this.#o.connectTimeoutMs,
        tls: this.#o.tls,
        material: this.#o.tlsMaterial,
        signal: abort.signal,
      })
      transportOpen = true
      stopProbe?.()
      if (this.#stopped) {
        stream.destroy()
        return { ok: false, kind: 'transport' }
      }
      this.session.setPassword(password)
      const info = await this.session.connect(stream)
      return { ok: true, info }
    } catch (err) {
      if (restarted && !this.#stopped) {
        this.#log.debug('upstream port answers again, restarting the pending attempt')
        return { ok: false, kind: 'retry' }
      }
      if (this.#stopped) return { ok: false, kind: 'transport' }
      const kind = classify(err)
      this.#recordError(err)
      this.#log.warn(
        { err: errInfo(err), attempt: this.#backoff.attempt + 1, kind, url: redactUrl(this.#o.url) },
        kind === 'rejected' ? 'upstream refused the connection' : 'upstream connect failed',
      )
      return { ok: false, kind }
    } finally {
      stopProbe?.()
      this.#attemptAbort = undefined
    }
  }

  async #connectedUntilClosed(info: ConnectInfo): Promise<number> {
    const closed = new Promise<Error | undefined>((resolve) => this.session.once('close', resolve))
    const downSince = this.#since
    this.#connectedAt = this.#now()
    this.#connects++
    this.#setState('connected')
    this.#log.info(
      {
        url: redactUrl(this.#o.url),
        protocolVersion: this.#o.protocolVersion,
        clientId: this.#o.clientId,
        sessionPresent: info.sessionPresent,
        window: info.window,
        resent: info.resent,
        downForMs: this.#connects > 1 ? this.#connectedAt - downSince : undefined,
      },
      'upstream connected',
    )
    this.emit('connected', info)
    const err = await closed
    const upForMs = this.#now() - (this.#connectedAt ?? this.#now())
    this.#connectedAt = null
    this.#disconnects++
    if (err !== undefined) this.#recordError(err)
    if (this.#stopped || this.#recycling || this.#held !== null) {
      this.#log.info(
        { upForMs, reason: this.#held ?? (this.#recycling ? 'reconnect' : 'stop') },
        'upstream disconnected',
      )
    } else {
      this.#log.warn(
        { err: err === undefined ? undefined : errInfo(err), upForMs, inflight: this.session.inflight },
        'upstream connection lost',
      )
    }
    this.#setState(this.#stopped ? 'stopped' : 'waiting')
    this.emit('disconnected', err)
    return upForMs
  }

  /**
   * Resolves after `ms`, on stop, or once a probe finds the upstream's port
   * open ('open'), or open after having found it closed ('reopened').
   */
  #wait(ms: number, probing: 'off' | 'open' | 'reopened'): Promise<void> {
    return new Promise<void>((resolve) => {
      let stopProbe: (() => void) | undefined
      const done = (): void => {
        clearTimeout(timer)
        stopProbe?.()
        this.#wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake = done
      if (probing !== 'off') stopProbe = this.#probeLoop(done, probing === 'reopened')
    })
  }

  /**
   * Probes every probeIntervalMs (±20 %), at most two outstanding; calls
   * onOpen once the port accepts (after at least one refusal if
   * `afterFailure`). Returns a stop function.
   */
  #probeLoop(onOpen: () => void, afterFailure = false): () => void {
    const interval = this.#o.reconnect.probeIntervalMs
    if (interval <= 0) return () => undefined
    let stopped = false
    let outstanding = 0
    let failedOnce = !afterFailure
    let timer: NodeJS.Timeout | undefined
    const tick = (): void => {
      if (stopped) return
      if (outstanding < 2) {
        outstanding++
        void probe(this.#o.url, Math.max(500, interval * 2)).then((open) => {
          outstanding--
          if (!open) failedOnce = true
          if (open && failedOnce && !stopped) {
            stopped = true
            clearTimeout(timer)
            onOpen()
          }
        })
      }
      timer = setTimeout(tick, jittered(interval, 0.2, this.#random))
    }
    // Watching after a lost connection, probe at once: an upstream that just
    // went away refuses now, which is what lets a later success count.
    timer = setTimeout(tick, afterFailure ? 0 : jittered(interval, 0.2, this.#random))
    return () => {
      stopped = true
      clearTimeout(timer)
    }
  }

  #setState(state: UpstreamState): void {
    if (this.#state === state) return
    this.#state = state
    this.#since = this.#now()
    this.emit('state', state)
  }

  #recordError(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err))
    this.#lastError = {
      code: isBridgeError(e) ? e.code : ((e as NodeJS.ErrnoException).code ?? 'ERROR'),
      message: e.message,
      reasonCode: isBridgeError(e) ? e.reasonCode : undefined,
      at: this.#now(),
    }
  }
}

async function readPassword(file: string): Promise<Buffer> {
  try {
    const text = await readFile(file)
    let end = text.length
    while (end > 0 && (text[end - 1] === 0x0a || text[end - 1] === 0x0d)) end--
    return text.subarray(0, end)
  } catch (err) {
    throw new BridgeError('EDGE_ERR_BRIDGE_TLS_FILES', `cannot read password file ${file}`, { cause: err })
  }
}

function classify(err: unknown): FailureKind {
  if (isBridgeError(err)) {
    if (
      err.code === 'EDGE_ERR_BRIDGE_UPSTREAM_REJECTED' ||
      err.code === 'EDGE_ERR_BRIDGE_PROTOCOL' ||
      err.code === 'EDGE_ERR_BRIDGE_TLS_FILES'
    )
      return 'rejected'
    const cause = err.cause as NodeJS.ErrnoException | undefined
    // TLS verification failures come through as transport errors with an OpenSSL code.
    if (
      cause?.code !== undefined &&
      /^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/.test(cause.code)
    )
      return 'rejected'
    if (cause !== undefined && /certificate|handshake|alert/i.test(cause.message)) return 'rejected'
    return 'transport'
  }
  return 'transport'
}

function errInfo(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) }
  const cause = err.cause as NodeJS.ErrnoException | undefined
  return {
    code: isBridgeError(err) ? err.code : (err as NodeJS.ErrnoException).code,
    message: err.message,
    ...(isBridgeError(err) && err.reasonCode !== undefined ? { reasonCode: err.reasonCode } : {}),
    ...(cause?.code !== undefined ? { cause: cause.code } : {}),
  }
}

/** The URL without user info, for logs and status. */
export function redactUrl(url: URL): string {
  if (url.username === '' && url.password === '') return url.href
  const copy = new URL(url.href)
  copy.username = ''
  copy.password = ''
  return copy.href
}
