// `npm run soak`: a month offline, compressed (issue #18, docs/soak.md).
//
// One agent (dist/agent/main.js, a black box: its process, /status, its data
// dir), a real Mosquitto upstream behind a relay this program controls, the
// ACME CA (Debian's pebble) of the gateway's upstream certificate behind a
// second relay that follows the first, and a device population in a child
// process (devices-main.ts). A simulated day
// lasts --day seconds; certificate lifetimes, TTLs and the buffer's budget are
// scaled through the agent's own config, nothing in the agent is patched.
//
// Invariants: every process started is killed by PID on exit, failure or
// SIGINT (bench/lib/proc.ts); every wait is bounded; loopback only. Output: a
// Markdown table on stdout, summary.json + samples.tsv + soak.png in the output
// dir, progress on stderr. Exit 0 when every check passes, 1 when one fails,
// 2 when the run could not be made.
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { estimateMessageBytes } from '../src/buffer/index.js'
import { ClockGuard, LocalCa, generateKeyPair, systemClock, writeAtomic } from '../src/certs/index.js'
import { AGENT_MAIN, deployedEnv, getJson } from '../bench/lib/agent.js'
import { freePort } from '../bench/lib/ports.js'
import { installCleanupHooks, killAllStarted, repoRoot, spawnTracked, type Started } from '../bench/lib/proc.js'
import { closeAccounts, type Accounts, type SentStream } from './lib/accounting.js'
import { FILL_DAY, MONTH, dayAt, type CalendarEvent } from './lib/calendar.js'
import type {
  DeviceSpec,
  DevicesInput,
  DevicesProgress,
  DevicesToParent,
  ParentToDevices,
} from './lib/devices-protocol.js'
import { DropTotals, readDropCounts, sumOf, type DropCounts } from './lib/drops.js'
import { GNUPLOT_INSTALL, gnuplotAvailable, plot, type PlotRow } from './lib/plot.js'
import { Relay } from './lib/relay.js'
import { readDataFiles, readProc } from './lib/sample.js'
import { Sink } from './lib/sink.js'
import {
  GatewayCertWatch,
  attemptBound,
  gatewayCertPlan,
  readFailedAttempts,
  type GatewayCertPlan,
  type GatewayView,
} from './lib/gateway-cert.js'
import { makeTestTls, pebbleMissing, startPebble } from '../test/helpers/pebble.js'
import type { Scope } from '../test/helpers/scope.js'

const UPSTREAM = 'up'
const GATEWAY_NAME = 'gw.soak.test'
const REMOTE_PREFIX = 'site/soak/'
const QOS1_RULES = ['telemetry', 'events']
const RSS_GROWTH_LIMIT = 10 * 1048576
const RATE_TOLERANCE = 1.1
/**
 * Signs that the machine, not the agent, was short of CPU: the soak's own
 * event loop (which does almost nothing) stalled this long, or the 1-minute
 * load exceeded this many runnable tasks per core.
 */
const STARVED_LOOP_DELAY_MS = 1000
const STARVED_LOAD_PER_CORE = 2

interface Options {
  readonly daySec: number
  readonly tlsDevices: number
  readonly plainDevices: number
  readonly telemetryPerDay: number
  readonly burstSize: number
  readonly eventsPerDay: number
  readonly qos0PerDay: number
  readonly payloadBytes: number
  readonly maxRatePerSec: number
  readonly out: string
  readonly plot: boolean
  readonly keep: boolean
}

const USAGE = `usage: npm run soak -- [--day SEC] [--devices N] [--plain N] [--telemetry PER_DAY] [--rate MSG_PER_SEC] [--out DIR] [--no-plot] [--keep]
  --day SEC          seconds per simulated day (default 20: the month takes about 11 minutes)
  --devices N        devices over mqtts with certificates from the local CA (default 200)
  --plain N          devices over plain mqtt (default 20)
  --telemetry N      telemetry messages per device per simulated day (default 6)
  --rate N           the upstream's maxRatePerSec during the drain (default 800)
  --out DIR          output directory (default soak/results/<timestamp>)
  --no-plot          skip the PNG (no gnuplot needed)
  --keep             keep the work directory (agent data dir, logs) after the run`

function parseOptions(argv: readonly string[]): Options | string {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      day: { type: 'string', default: '20' },
      devices: { type: 'string', default: '200' },
      plain: { type: 'string', default: '20' },
      telemetry: { type: 'string', default: '6' },
      rate: { type: 'string', default: '800' },
      out: { type: 'string' },
      'no-plot': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  })
  if (values.help) return USAGE
  const num = (name: string, v: string, min: number): number | string => {
    const n = Number(v)
    return Number.isFinite(n) && n >= min ? n : `--${name} ${v}: expected a number >= ${min}\n${USAGE}`
  }
  const day = num('day', values.day, 2)
  const devices = num('devices', values.devices, 1)
  const plain = num('plain', values.plain, 0)
  const telemetry = num('telemetry', values.telemetry, 1)
  const rate = num('rate', values.rate, 1)
  for (const v of [day, devices, plain, telemetry, rate]) if (typeof v === 'string') return v
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  return {
    daySec: day as number,
    tlsDevices: Math.floor(devices as number),
    plainDevices: Math.floor(plain as number),
    telemetryPerDay: telemetry as number,
    burstSize: 20,
    eventsPerDay: 4,
    qos0PerDay: 6,
    payloadBytes: 160,
    maxRatePerSec: rate as number,
    out: resolve(values.out ?? join(repoRoot, 'soak', 'results', stamp)),
    plot: !values['no-plot'],
    keep: values.keep,
  }
}

const log = (line: string): void => {
  process.stderr.write(`soak: ${line}\n`)
}

const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MB`

// ---------------------------------------------------------------- upstream

interface UpstreamTls {
  readonly port: number
  /** Client certificates must chain to this (pebble's root). */
  readonly clientCaFile: string
  readonly certFile: string
  readonly keyFile: string
}

/**
 * Mosquitto: a plain listener for the soak's subscriber, and the agent's listener (mqtts, client certificates
 * from pebble's root required) behind the relay.
 */
async function startMosquitto(port: number, dir: string, tls: UpstreamTls): Promise<Started> {
  const conf = join(dir, 'mosquitto.conf')
  // Queues without a limit: the accounting must not lose messages on the upstream's side.
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      `listener ${tls.port} 127.0.0.1`,
      `cafile ${tls.clientCaFile}`,
      `certfile ${tls.certFile}`,
      `keyfile ${tls.keyFile}`,
      'require_certificate true',
      'allow_anonymous true',
      'persistence false',
      'max_queued_messages 0',
      'max_queued_bytes 0',
      'max_inflight_messages 100',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'user root',
      '',
    ].join('\n'),
  )
  const proc = await spawnTracked('/usr/sbin/mosquitto', ['-c', conf], { name: 'mosquitto', fdLimit: 65_536 })
  await waitUntil('mosquitto to listen', 20_000, proc, async () => (await tcpAccepts(port)) && tcpAccepts(tls.port))
  return proc
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = connect({ port, host: '127.0.0.1' })
    const end = (ok: boolean): void => {
      s.destroy()
      done(ok)
    }
    s.setTimeout(1000, () => end(false))
    s.once('connect', () => end(true))
    s.once('error', () => end(false))
  })
}

async function waitUntil(
  what: string,
  timeoutMs: number,
  proc: Started | undefined,
  probe: () => Promise<boolean> | boolean,
  intervalMs = 50,
): Promise<number> {
  const t0 = performance.now()
  let exited = false
  void proc?.exited.then(() => (exited = true))
  while (performance.now() - t0 < timeoutMs) {
    if (exited) throw new Error(`${proc?.name ?? 'process'} exited while waiting for ${what}\n${proc?.output() ?? ''}`)
    if (
      await Promise.resolve()
        .then(probe)
        .catch(() => false)
    )
      return performance.now() - t0
    await sleep(intervalMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

// ---------------------------------------------------------------- certificates and config

interface Ports {
  readonly plain: number
  readonly tls: number
  readonly admin: number
  readonly relay: number
  /** The ACME CA (pebble) behind its own relay: it is upstream too. */
  readonly acmeRelay: number
  /** Where the agent answers http-01 challenges (pebble connects here directly). */
  readonly http01: number
}

/** What the agent's certs.acme and its upstream need. */
interface AcmeSetup {
  readonly plan: GatewayCertPlan
  /** pebble's own HTTPS CA, for certs.acme.caFile. */
  readonly httpsCaFile: string
  /** The upstream's server CA, for upstreams[].caFile. */
  readonly upstreamCaFile: string
}

/** The local CA in the agent's data dir, and the devices' first certificates, issued before the agent starts. */
async function provision(
  o: Options,
  dataDir: string,
  deviceDir: string,
): Promise<{ specs: DeviceSpec[]; caFile: string }> {
  const certsDir = join(dataDir, 'certs')
  await LocalCa.prepareDir(certsDir)
  const guard = new ClockGuard({
    clock: systemClock,
    file: join(certsDir, 'clock.json'),
    toleranceMs: 300_000,
    maxForwardJumpMs: 604_800_000,
  })
  await guard.load()
  await LocalCa.init(certsDir, { name: 'edge-agent soak CA', lifetimeMs: 5 * 365 * 86_400_000, now: Date.now() })
  await guard.commit()
  const ca = new LocalCa({ dir: certsDir, guard, backdateMs: 0, crlValidityMs: 86_400_000 })
  await ca.load()
  mkdirSync(deviceDir, { recursive: true, mode: 0o700 })
  const caFile = join(deviceDir, 'ca.crt')
  await writeAtomic(caFile, ca.bundlePem(), 0o644)
  const specs: DeviceSpec[] = []
  const lifetimeMs = 7 * o.daySec * 1000
  const total = o.tlsDevices + o.plainDevices
  for (let i = 0; i < total; i++) {
    const tls = i < o.tlsDevices
    const id = tls ? `dev-${String(i).padStart(4, '0')}` : `plain-${String(i - o.tlsDevices).padStart(4, '0')}`
    const role = { bursts: i % 10 === 3, events: i % 5 === 1, qos0: i % 5 === 2 }
    if (!tls) {
      specs.push({ id, tls, ...role })
      continue
    }
    const key = await generateKeyPair()
    const cert = await ca.issue({ id, profile: 'client', publicKey: key.publicKey, lifetimeMs })
    const keyFile = join(deviceDir, `${id}.key`)
    const certFile = join(deviceDir, `${id}.crt`)
    await writeAtomic(keyFile, key.privateKeyPem, 0o600)
    await writeAtomic(certFile, cert.certPem, 0o644)
    specs.push({ id, tls, certFile, keyFile, ...role })
  }
  return { specs, caFile }
}

/** Bytes of the messages kept from day 1 to FILL_DAY (the store's own estimate): the buffer's budget. */
function budgetBytes(o: Options, specs: readonly DeviceSpec[]): number {
  const est = (id: string, kind: string, rule: string): number =>
    estimateMessageBytes({
      queue: UPSTREAM,
      topic: `devices/${id}/${kind}`,
      payload: new Uint8Array(o.payloadBytes),
      rule,
      propertiesJson: null,
    })
  let perDay = 0
  let events = 0
  for (const s of specs) {
    perDay += (o.telemetryPerDay + (s.bursts ? o.burstSize : 0)) * est(s.id, 'telemetry', 'telemetry')
    if (s.qos0) perDay += o.qos0PerDay * est(s.id, 'q0', 'q0')
    // Events live 2 days, so at most 2 days of them are queued at once.
    if (s.events) events += 2 * o.eventsPerDay * (est(s.id, 'events', 'events') + 32)
  }
  return Math.round(perDay * (FILL_DAY - 1) + events)
}

function agentConfig(o: Options, dataDir: string, ports: Ports, maxBytes: number, acme: AcmeSetup): string {
  const day = o.daySec
  const out = { direction: 'out', remotePrefix: REMOTE_PREFIX }
  const config = {
    site: { name: 'soak', level: 2 },
    dataDir,
    log: { level: 'warn', format: 'json' },
    admin: { host: '127.0.0.1', port: ports.admin },
    broker: {
      listeners: [
        { protocol: 'mqtt', host: '127.0.0.1', port: ports.plain },
        { protocol: 'mqtts', host: '127.0.0.1', port: ports.tls },
      ],
    },
    buffer: { maxBytes },
    certs: {
      allowShortLifetimes: true,
      backdateSec: 0,
      device: { lifetimeSec: Math.round(7 * day), maxLifetimeSec: Math.round(7 * day) },
      server: { lifetimeSec: Math.round(7 * day) },
      renewal: { minRequestIntervalSec: 1 },
      acme: {
        directoryUrl: `https://127.0.0.1:${ports.acmeRelay}/dir`,
        caFile: acme.httpsCaFile,
        identifiers: [GATEWAY_NAME],
        challenge: 'http-01',
        http01: { host: '127.0.0.1', port: ports.http01 },
        renewAt: acme.plan.renewAt,
        retryMinMs: acme.plan.retryMinMs,
        retryMaxMs: acme.plan.retryMaxMs,
        requestTimeoutMs: acme.plan.requestTimeoutMs,
        warnBeforeSec: acme.plan.warnBeforeSec,
      },
    },
    upstreams: [
      {
        name: UPSTREAM,
        url: `mqtts://127.0.0.1:${ports.relay}`,
        caFile: acme.upstreamCaFile,
        clientCertificate: 'acme',
        maxRatePerSec: o.maxRatePerSec,
        rules: [
          { name: 'telemetry', topic: 'devices/+/telemetry', qos: 1, whenFull: 'drop-oldest', ttlSec: 0, ...out },
          {
            name: 'events',
            topic: 'devices/+/events',
            qos: 1,
            whenFull: 'drop-oldest',
            ttlSec: Math.max(1, Math.round(2 * day)),
            ...out,
          },
          { name: 'q0', topic: 'devices/+/q0', qos: 0, bufferQos0: true, ttlSec: 0, ...out },
        ],
      },
    ],
  }
  return JSON.stringify(config, null, 2)
}

// ---------------------------------------------------------------- the agent

interface Lifetime {
  readonly startedAtDay: number
  readonly listeningMs: number
  readonly healthyMs: number
  readonly after: 'first start' | 'kill -9' | 'clean stop'
  endedBy?: 'kill -9' | 'clean stop' | 'end of run'
  exitCode?: number | string | null
  stopMs?: number
}

class AgentRunner {
  proc: Started | undefined
  readonly lifetimes: Lifetime[] = []

  constructor(
    private readonly configFile: string,
    private readonly ports: Ports,
    private readonly logFile: string,
  ) {}

  async start(day: number, after: Lifetime['after']): Promise<Lifetime> {
    const logStream = createWriteStream(this.logFile, { flags: 'a' })
    const proc = await spawnTracked(process.execPath, [AGENT_MAIN, 'run', '--config', this.configFile], {
      name: 'edge-agent',
      fdLimit: 65_536,
      env: { ...process.env, ...deployedEnv() },
      onStdout: (chunk) => logStream.write(chunk),
    })
    void proc.exited.then(() => logStream.end())
    this.proc = proc
    const listening = waitUntil('the agent to listen (mqtts)', 60_000, proc, () => tcpAccepts(this.ports.tls), 20)
    const healthy = waitUntil(
      'the agent /healthz = 200',
      60_000,
      proc,
      async () => (await getJson(this.ports.admin, '/healthz', 2000)).status === 200,
      20,
    )
    // Both measured from the spawn (waitUntil counts from its own start, just after it).
    const [listeningMs, healthyMs] = await Promise.all([listening, healthy])
    const lifetime: Lifetime = { startedAtDay: day, listeningMs, healthyMs, after }
    this.lifetimes.push(lifetime)
    return lifetime
  }

  async kill(): Promise<void> {
    const p = this.proc
    if (p === undefined) return
    const exit = await p.stop('SIGKILL', 5_000)
    const l = this.lifetimes.at(-1)
    if (l !== undefined) {
      l.endedBy = 'kill -9'
      l.exitCode = exit.signal ?? exit.code
    }
  }

  async stopCleanly(endedBy: 'clean stop' | 'end of run'): Promise<boolean> {
    const p = this.proc
    if (p === undefined) return true
    const t0 = performance.now()
    const exit = await p.stop('SIGTERM', 30_000)
    const l = this.lifetimes.at(-1)
    if (l !== undefined) {
      l.endedBy = endedBy
      l.exitCode = exit.code ?? exit.signal
      l.stopMs = performance.now() - t0
    }
    return exit.code === 0
  }
}

// ---------------------------------------------------------------- samples

interface Sample extends PlotRow {
  readonly t: number
  readonly connected: boolean
  readonly clients: number
  readonly issuedCerts: number
  /** The buffer's own byte count (estimateMessageBytes) and message count. */
  readonly bufferBytes: number
  readonly bufferMessages: number
  /** V8 heap in use (the agent's /status): RSS growth outside it is native memory. */
  readonly heapUsedBytes: number
  /** The soak's own event-loop delay, highest since the previous sample, and the 1-minute load: starvation. */
  readonly soakLoopDelayMs: number
  readonly load1: number
  /** How long /status took to answer. */
  readonly statusMs: number
}

/** A counter that restarts at 0 in every agent process, summed over the run. */
class LifetimeSum {
  #closed = 0
  #current = 0
  observe(v: number): void {
    this.#current = v
  }
  endOfLife(): void {
    this.#closed += this.#current
    this.#current = 0
  }
  get total(): number {
    return this.#closed + this.#current
  }
}

interface StatusView {
  readonly process?: { readonly pid?: number; readonly heapUsedBytes?: number }
  readonly buffer?: {
    readonly totals?: { readonly messages?: number; readonly bytes?: number; readonly appended?: number }
  }
  readonly upstreams?: readonly {
    readonly connected?: boolean
    readonly held?: string | null
    readonly backlog?: { readonly depth?: number }
  }[]
  readonly gatewayCertificate?: GatewayView | null
  readonly broker?: { readonly clients?: number }
  readonly certs?: {
    readonly server?: { readonly serial?: string; readonly rotations?: number; readonly expiresInSec?: number }
    readonly refusedHandshakes?: Record<string, number>
    readonly renewal?: { readonly renewed?: number; readonly refused?: Record<string, number> }
  } | null
}

// ---------------------------------------------------------------- the run

interface RunResult {
  readonly exitCode: number
}

async function run(o: Options): Promise<RunResult> {
  if (!existsSync(AGENT_MAIN)) {
    log(`${AGENT_MAIN} missing: run \`npm run build\` first`)
    return { exitCode: 2 }
  }
  const noPebble = pebbleMissing()
  if (noPebble !== undefined) {
    log(`the ACME CA for the gateway certificate: ${noPebble}`)
    return { exitCode: 2 }
  }
  if (o.plot && !gnuplotAvailable()) {
    log(`gnuplot is needed for the plot: ${GNUPLOT_INSTALL}  (or run with --no-plot)`)
    return { exitCode: 2 }
  }
  mkdirSync(o.out, { recursive: true })
  const work = mkdtempSync(join(tmpdir(), 'edge-soak-'))
  const dataDir = join(work, 'data')
  const ports: Ports = {
    plain: await freePort(),
    tls: await freePort(),
    admin: await freePort(),
    relay: 0,
    acmeRelay: 0,
    http01: await freePort(),
  }
  const mqPort = await freePort()
  const mqTlsPort = await freePort()
  const devicesProc: { p?: Started } = {}
  const sink = new Sink(mqPort, `${REMOTE_PREFIX}#`)
  const relay = new Relay(mqTlsPort)
  // The test helpers' cleanups (pebble's processes, its temp dir), run in reverse order at the end.
  const cleanups: (() => unknown)[] = []
  const scope: Scope = { after: (fn) => void cleanups.push(fn) }
  let acmeRelay: Relay | undefined
  let agent: AgentRunner | undefined
  try {
    log(`work dir ${work}, results ${o.out}`)
    const plan = gatewayCertPlan(o.daySec)
    const pebble = await startPebble(scope, {
      httpPort: ports.http01,
      tlsPort: await freePort(),
      validitySec: plan.lifetimeSec,
    })
    // pebble is not started through bench/lib/proc: killed by PID here if the soak is interrupted.
    const killPebble = (): void => {
      for (const pid of pebble.pids()) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
    }
    process.once('exit', killPebble)
    cleanups.push(() => process.off('exit', killPebble))
    const rootFile = join(work, 'pebble-root.pem')
    writeFileSync(rootFile, await pebble.root())
    const upstreamTls = makeTestTls(work, 'upstream')
    await startMosquitto(mqPort, work, {
      port: mqTlsPort,
      clientCaFile: rootFile,
      certFile: upstreamTls.certFile,
      keyFile: upstreamTls.keyFile,
    })
    await relay.start()
    acmeRelay = new Relay(Number(new URL(pebble.directoryUrl).port))
    await acmeRelay.start()
    const usedPorts = { ...ports, relay: relay.port, acmeRelay: acmeRelay.port }
    const acme: AcmeSetup = { plan, httpsCaFile: pebble.httpsCaFile, upstreamCaFile: upstreamTls.caFile }
    const t = performance.now()
    const { specs, caFile } = await provision(o, dataDir, join(work, 'devices'))
    log(`issued ${o.tlsDevices} device certificates in ${((performance.now() - t) / 1000).toFixed(1)} s`)
    const maxBytes = budgetBytes(o, specs)
    const configFile = join(work, 'agent.yaml')
    writeFileSync(configFile, agentConfig(o, dataDir, usedPorts, maxBytes, acme))
    const logFile = join(work, 'agent.log')
    agent = new AgentRunner(configFile, usedPorts, logFile)
    const first = await agent.start(0, 'first start')
    log(`agent listening after ${first.listeningMs.toFixed(0)} ms; buffer budget ${mb(maxBytes)}`)
    // The first gateway certificate, and the bridge connected with it, before the month begins.
    const issuedMs = await waitUntil(
      'the first gateway certificate and the bridge connected',
      120_000,
      agent.proc,
      async () => {
        const s = (await getJson(usedPorts.admin, '/status', 3000)).body as StatusView
        return (s.gatewayCertificate?.serial ?? null) !== null && s.upstreams?.[0]?.connected === true
      },
      100,
    )
    log(
      `gateway certificate issued by pebble and the bridge connected ${(issuedMs / 1000).toFixed(1)} s after the start`,
    )
    await sink.start()
    return await month(o, {
      agent,
      relay,
      acmeRelay,
      acme,
      logFile,
      sink,
      specs,
      caFile,
      dataDir,
      ports: usedPorts,
      maxBytes,
      devicesProc,
      work,
    })
  } catch (err) {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    if (agent?.proc !== undefined) log(`agent output (tail):\n${agent.proc.output()}`)
    return { exitCode: 2 }
  } finally {
    await sink.stop()
    await relay.stop()
    await acmeRelay?.stop()
    killAllStarted()
    for (const fn of cleanups.reverse()) {
      try {
        await fn()
      } catch (err) {
        log(`cleanup: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    if (o.keep) log(`kept ${work}`)
    else rmSync(work, { recursive: true, force: true })
  }
}

interface World {
  readonly agent: AgentRunner
  readonly relay: Relay
  readonly acmeRelay: Relay
  readonly acme: AcmeSetup
  readonly logFile: string
  readonly sink: Sink
  readonly specs: readonly DeviceSpec[]
  readonly caFile: string
  readonly dataDir: string
  readonly ports: Ports
  readonly maxBytes: number
  readonly devicesProc: { p?: Started }
  readonly work: string
}

async function month(o: Options, w: World): Promise<RunResult> {
  const { agent, relay, sink } = w
  // --- the devices, in their own process
  const child = await spawnTracked(process.execPath, ['--import', 'tsx', join(repoRoot, 'soak', 'devices-main.ts')], {
    name: 'devices',
    ipc: true,
    fdLimit: 65_536,
  })
  w.devicesProc.p = child
  let progress: DevicesProgress | undefined
  let final: { progress: DevicesProgress; streams: readonly SentStream[]; qos0Sent: number } | undefined
  let ready = false
  let fatal: string | undefined
  child.child.on('message', (m: DevicesToParent) => {
    if (m.type === 'ready') ready = true
    else if (m.type === 'progress') progress = m.progress
    else if (m.type === 'final') final = m
    else fatal = m.error
  })
  const toDevices = (m: ParentToDevices): void => {
    child.child.send(m)
  }
  const input: DevicesInput = {
    daySec: o.daySec,
    host: '127.0.0.1',
    plainPort: w.ports.plain,
    tlsPort: w.ports.tls,
    caFile: w.caFile,
    devices: w.specs,
    telemetryPerDay: o.telemetryPerDay,
    burstSize: o.burstSize,
    eventsPerDay: o.eventsPerDay,
    qos0PerDay: o.qos0PerDay,
    reconnectEveryDays: 3,
    payloadBytes: o.payloadBytes,
  }
  toDevices({ type: 'start', input })
  const connectMs = await waitUntil('the devices to connect', 180_000, child, () => ready, 100)
  log(`${w.specs.length} devices connected in ${(connectMs / 1000).toFixed(1)} s`)

  // --- day 0
  const t0 = Date.now()
  toDevices({ type: 'go', t0 })
  const day = (): number => dayAt(Date.now(), t0, o.daySec)
  const drops = new DropTotals()
  const plan = w.acme.plan
  const gw = new GatewayCertWatch(t0, o.daySec, plan.graceMs)
  let linkDownAt: number | null = null
  let offlineSnapshot: {
    day: number
    state: string
    serial: string | null
    failures: number
    held: string | null
  } | null = null
  /** After the link returns: when the gateway certificate was valid again, and the bridge connected (fast polls). */
  const linkReturn: { certValidAt: number | null; bridgeAt: number | null } = { certValidAt: null, bridgeAt: null }
  let watchingReturn: Promise<void> = Promise.resolve()
  const watchReturn = async (from: number): Promise<void> => {
    const deadline = from + plan.graceMs + 60_000
    while (Date.now() < deadline && (linkReturn.certValidAt === null || linkReturn.bridgeAt === null)) {
      const r = await getJson(w.ports.admin, '/status', 3000).catch(() => undefined)
      const now = Date.now()
      if (r?.status === 200) {
        const st = r.body as StatusView
        const g = st.gatewayCertificate
        if (linkReturn.certValidAt === null && g != null && g.state !== 'expired' && g.state !== 'none')
          linkReturn.certValidAt = now
        if (linkReturn.bridgeAt === null && st.upstreams?.[0]?.connected === true) linkReturn.bridgeAt = now
      }
      await sleep(100)
    }
  }
  const appended = new LifetimeSum()
  const rotations = new LifetimeSum()
  const serverSerials = new Set<string>()
  const refusedHandshakes: Record<string, number> = {}
  const samples: Sample[] = []
  const notes: string[] = []
  const restarts: {
    day: number
    kind: string
    listeningMs: number
    healthyMs: number
    droppingBefore: boolean
    stopOk?: boolean
  }[] = []
  let dropsBeforePrev: DropCounts | undefined
  let dropsBeforeLast: DropCounts | undefined
  let tolerance = 0
  let firstEvictionDay: number | null = null
  let linkUpAt: number | null = null
  let drainedAt: number | null = null
  let lastProgressDay = -1
  let prevCpu: { pid: number; cpuSec: number; t: number } | undefined
  const liveRatePerSec = Math.max(
    10,
    (w.specs.length * o.telemetryPerDay + w.specs.filter((s) => s.bursts).length * o.burstSize) / o.daySec,
  )

  let statusFailures = 0
  let statusGapStart: number | null = null
  let longestStatusGapMs = 0
  let statusMs = 0
  const poll = async (): Promise<StatusView | undefined> => {
    const asked = Date.now()
    const r = await getJson(w.ports.admin, '/status', 3000).catch(() => undefined)
    statusMs = Date.now() - asked
    if (r === undefined || r.status !== 200) {
      statusFailures++
      statusGapStart ??= Date.now()
      longestStatusGapMs = Math.max(longestStatusGapMs, Date.now() - statusGapStart)
      return undefined
    }
    statusGapStart = null
    const s = r.body as StatusView
    dropsBeforePrev = dropsBeforeLast
    const counts = readDropCounts(r.body)
    dropsBeforeLast = counts
    drops.observe(counts)
    appended.observe(s.buffer?.totals?.appended ?? 0)
    rotations.observe(s.certs?.server?.rotations ?? 0)
    if (s.certs?.server?.serial !== undefined) serverSerials.add(s.certs.server.serial)
    return s
  }

  const endOfLife = (): void => {
    // The drops of the last poll interval, and the device messages in flight, are what a kill can hide.
    const last = dropsBeforeLast === undefined ? 0 : sumOf(dropsBeforeLast.byReason)
    const prev = dropsBeforePrev === undefined ? 0 : sumOf(dropsBeforePrev.byReason)
    if (!drops.durable) tolerance += Math.max(0, last - prev)
    for (const [k, v] of Object.entries(lastStatus?.certs?.refusedHandshakes ?? {}))
      refusedHandshakes[k] = (refusedHandshakes[k] ?? 0) + v
    drops.endOfLife()
    appended.endOfLife()
    rotations.endOfLife()
    dropsBeforePrev = undefined
    dropsBeforeLast = undefined
  }

  let lastStatus: StatusView | undefined
  const loopDelay = monitorEventLoopDelay({ resolution: 20 })
  loopDelay.enable()
  const sample = async (): Promise<void> => {
    const s = await poll()
    if (s !== undefined) lastStatus = s
    const pid = agent.proc?.pid ?? 0
    const p = readProc(pid)
    const f = readDataFiles(w.dataDir)
    const now = Date.now()
    let cpuPct = 0
    if (p !== undefined && prevCpu !== undefined && prevCpu.pid === pid && now > prevCpu.t) {
      cpuPct = ((p.cpuSec - prevCpu.cpuSec) / ((now - prevCpu.t) / 1000)) * 100
    }
    if (p !== undefined) prevCpu = { pid, cpuSec: p.cpuSec, t: now }
    const total = drops.total()
    const evicted = total.byReason['evicted-full'] ?? 0
    const expired = total.byReason.expired ?? 0
    const d = dayAt(now, t0, o.daySec)
    if (evicted > 0 && firstEvictionDay === null) firstEvictionDay = d
    const up = s?.upstreams?.[0]
    const depth = up?.backlog?.depth ?? s?.buffer?.totals?.messages ?? 0
    if (linkUpAt !== null && drainedAt === null && up?.connected === true && depth <= liveRatePerSec) drainedAt = now
    const g = s?.gatewayCertificate
    gw.observe(now, relay.mode === 'pass', linkUpAt, s === undefined ? undefined : g)
    if (p !== undefined && s !== undefined) {
      samples.push({
        t: now,
        day: d,
        rssBytes: p.rssBytes,
        dbBytes: f.dbBytes,
        walBytes: f.walBytes,
        depth,
        droppedEvicted: evicted,
        droppedExpired: expired,
        droppedOther: sumOf(total.byReason) - evicted - expired + sumOf(total.bridge),
        cpuPct,
        connected: up?.connected === true,
        clients: s.broker?.clients ?? 0,
        issuedCerts: f.issuedCerts,
        bufferBytes: s.buffer?.totals?.bytes ?? 0,
        bufferMessages: s.buffer?.totals?.messages ?? 0,
        heapUsedBytes: s.process?.heapUsedBytes ?? 0,
        soakLoopDelayMs: loopDelay.max / 1e6,
        load1: loadavg()[0] ?? 0,
        statusMs,
        gatewayLeftH:
          g?.expiresInSec === undefined || g.expiresInSec === null ? 0 : Math.max(0, (g.expiresInSec / o.daySec) * 24),
        bridgeUp: up?.connected === true ? 1 : 0,
      })
    }
    loopDelay.reset()
    if (Math.floor(d) > lastProgressDay) {
      lastProgressDay = Math.floor(d)
      const pr = progress
      log(
        `day ${d.toFixed(1)}  link ${relay.mode}  depth ${s === undefined ? '- (/status unanswered)' : depth}  rss ${p === undefined ? '-' : mb(p.rssBytes)}  db ${mb(f.dbBytes)}  wal ${mb(f.walBytes)}  ` +
          `dropped ${sumOf(total.byReason)}  devices ${pr?.connected ?? 0}/${w.specs.length}  acked ${pr?.acked ?? 0}/${pr?.sent ?? 0}  ` +
          `renewed ${pr?.renewals ?? 0}  lapses ${pr?.lapses.length ?? 0}  cpu ${cpuPct.toFixed(0)} %`,
      )
    }
  }

  const restart = async (ev: CalendarEvent): Promise<void> => {
    await poll()
    const droppingBefore = sumOf(drops.total().byReason) > 0 && (drops.total().byReason['evicted-full'] ?? 0) > 0
    let stopOk: boolean | undefined
    if (ev.action === 'kill-9') await agent.kill()
    else stopOk = await agent.stopCleanly('clean stop')
    endOfLife()
    const l = await agent.start(day(), ev.action === 'kill-9' ? 'kill -9' : 'clean stop')
    statusGapStart = null
    restarts.push({
      day: ev.day,
      kind: ev.action === 'kill-9' ? 'kill -9' : 'SIGTERM',
      listeningMs: l.listeningMs,
      healthyMs: l.healthyMs,
      droppingBefore,
      ...(stopOk === undefined ? {} : { stopOk }),
    })
    log(`${ev.note}: listening again after ${l.listeningMs.toFixed(0)} ms`)
  }

  const events = [...MONTH]
  let ended = false
  while (!ended) {
    if (fatal !== undefined) throw new Error(`devices: ${fatal}`)
    if (child.child.exitCode !== null) throw new Error(`the devices process exited\n${child.output()}`)
    const d = day()
    while (events.length > 0 && (events[0]?.day ?? Infinity) <= d) {
      const ev = events.shift() as CalendarEvent
      switch (ev.action) {
        case 'link-down':
          await Promise.all([relay.set('refuse'), w.acmeRelay.set('refuse')])
          linkDownAt ??= Date.now()
          log(`day ${d.toFixed(2)}: ${ev.note}`)
          break
        case 'link-blackhole':
          await Promise.all([relay.set('blackhole'), w.acmeRelay.set('blackhole')])
          log(`day ${d.toFixed(2)}: ${ev.note}`)
          break
        case 'kill-9':
        case 'clean-restart':
          await restart(ev)
          break
        case 'upstream-cert': {
          // Offline: the certificate has run out, renewals fail against the unreachable CA; it must still be there.
          const st = await poll()
          const g = st?.gatewayCertificate
          offlineSnapshot = {
            day: d,
            state: g?.state ?? '-',
            serial: g?.serial ?? null,
            failures: g?.failures ?? 0,
            held: st?.upstreams?.[0]?.held ?? null,
          }
          log(
            `day ${d.toFixed(2)}: gateway certificate ${offlineSnapshot.state}, serial ${offlineSnapshot.serial ?? '-'}, ` +
              `${offlineSnapshot.failures} failed attempts in this process; upstream held: ${offlineSnapshot.held ?? 'no'}`,
          )
          break
        }
        case 'link-up':
          await Promise.all([relay.set('pass'), w.acmeRelay.set('pass')])
          linkUpAt = Date.now()
          watchingReturn = watchReturn(linkUpAt)
          log(`day ${d.toFixed(2)}: ${ev.note}`)
          break
        case 'end':
          ended = true
          break
      }
    }
    await sample()
    if (!ended) await sleep(Math.max(50, 1000 - (Date.now() % 1000)))
  }

  // --- the end: publishing stops, every acknowledgement is awaited, the backlog drains
  toDevices({ type: 'stop-publishing' })
  toDevices({ type: 'finish', ackTimeoutMs: 60_000 })
  const finishDeadline = Date.now() + 120_000
  while (final === undefined && Date.now() < finishDeadline) {
    await sample()
    await sleep(500)
  }
  if (final === undefined) throw new Error('timed out after 120 s waiting for the devices to report')
  const drainDeadline = Date.now() + 600_000
  let depth = Infinity
  while (Date.now() < drainDeadline) {
    await sample()
    const s = lastStatus
    depth = s?.upstreams?.[0]?.backlog?.depth ?? Infinity
    if (depth === 0 && Date.now() - sink.lastArrivalAt > 2000) break
    await sleep(500)
  }
  const endAt = Date.now()
  if (drainedAt === null && depth === 0) drainedAt = endAt
  const lastPoll = await poll()
  if (lastPoll !== undefined) lastStatus = lastPoll
  await watchingReturn
  gw.finish(Date.now())
  const stopOk = await agent.stopCleanly('end of run')
  endOfLife()
  if (!stopOk) notes.push(`the agent did not exit 0 on SIGTERM at the end: ${String(agent.lifetimes.at(-1)?.exitCode)}`)

  // --- the books
  const f = final
  const total = drops.total()
  const qos1Dropped = QOS1_RULES.reduce((n, r) => n + sumOf(total.byRule[r] ?? {}), 0) + sumOf(total.bridge)
  // A message stored and never acknowledged to its device (in flight at a kill, or held by a device whose
  // certificate lapsed) may be dropped by policy without being in the acknowledged count.
  const unackedAtEnd = f.streams.reduce((n, st) => n + st.unacked.length, 0)
  const accounts = closeAccounts(
    f.streams,
    sink.qos1,
    qos1Dropped,
    (drops.durable ? 0 : tolerance) + unackedAtEnd,
    drops.durable,
  )
  const q0Dropped = sumOf(total.byRule.q0 ?? {})
  let q0Delivered = 0
  for (const id of sink.qos0.streams()) q0Delivered += sink.qos0.stream(id)?.seqs.size ?? 0

  const inDay = (a: number, b: number): Sample[] => samples.filter((s) => s.day >= a && s.day < b)
  const mean = (xs: readonly number[]): number | null =>
    xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length
  const rss5 = mean(inDay(5, 6).map((s) => s.rssBytes))
  const rss30 = mean(inDay(30, 31).map((s) => s.rssBytes))
  const size = (a: number, b: number) => mean(inDay(a, b).map((s) => s.dbBytes + s.walBytes))
  const store20 = size(20, 21)
  const store30 = size(30, 31)
  const rssGrowth = rss5 === null || rss30 === null ? null : rss30 - rss5
  // RSS slope within each process, after its first day (a restart resets RSS, which day 5 vs day 30 can hide).
  const starts = [...agent.lifetimes.map((l) => l.startedAtDay), Infinity]
  const rssSlopes = agent.lifetimes.map((l, i) => {
    const xs = samples.filter((x) => x.day >= l.startedAtDay + 1 && x.day < (starts[i + 1] ?? Infinity))
    return {
      fromDay: l.startedAtDay,
      mbPerDay: slope(xs.map((x) => [x.day, x.rssBytes / 1048576])),
      heapMbPerDay: slope(xs.map((x) => [x.day, x.heapUsedBytes / 1048576])),
    }
  })
  const cores = availableParallelism()
  const host = {
    cores,
    load1Mean: mean(samples.map((x) => x.load1)),
    load1Max: Math.max(0, ...samples.map((x) => x.load1)),
    soakLoopDelayMaxMs: Math.max(0, ...samples.map((x) => x.soakLoopDelayMs)),
    soakLoopDelayOver1sSamples: samples.filter((x) => x.soakLoopDelayMs > STARVED_LOOP_DELAY_MS).length,
    statusMsMax: Math.max(0, ...samples.map((x) => x.statusMs)),
  }
  const starved =
    host.soakLoopDelayMaxMs > STARVED_LOOP_DELAY_MS || host.load1Max > STARVED_LOAD_PER_CORE * cores
      ? `the machine was short of CPU: the soak's own event loop stalled up to ${host.soakLoopDelayMaxMs.toFixed(0)} ms ` +
        `(${host.soakLoopDelayOver1sSamples} samples over ${STARVED_LOOP_DELAY_MS} ms), 1-minute load up to ` +
        `${host.load1Max.toFixed(1)} on ${cores} cores`
      : null
  const maxRate = linkUpAt === null ? 0 : sink.maxRate(linkUpAt, drainedAt ?? endAt, 5)
  const expiredHandshakes = Object.entries(refusedHandshakes)
    .filter(([k]) => /expir/i.test(k))
    .reduce((n, [, v]) => n + v, 0)
  const lapses = f.progress.lapses.length + expiredHandshakes

  // The gateway's ACME certificate: renewals, failed attempts (from the log), the link's return.
  const dayOf = (t: number | null): number | null => (t === null ? null : dayAt(t, t0, o.daySec))
  const linkDownDay = dayOf(linkDownAt) ?? 1
  const linkUpDay = dayOf(linkUpAt)
  const promotions = gw.promotions
  const renewedBeforeOutage = promotions.filter((x, i) => i > 0 && x.notBeforeDay < linkDownDay).length
  const lastBeforeOutage = [...promotions].reverse().find((x) => x.notBeforeDay < linkDownDay)
  const failedAttempts = readFailedAttempts(w.logFile)
  const failedByCode: Record<string, number> = {}
  for (const a of failedAttempts) failedByCode[a.code] = (failedByCode[a.code] ?? 0) + 1
  const outageEnd = linkUpAt ?? endAt
  const failedOffline = linkDownAt === null ? [] : failedAttempts.filter((a) => a.t >= linkDownAt && a.t < outageEnd)
  const offlineProcesses = agent.lifetimes.filter((l) => l.startedAtDay < (linkUpDay ?? Infinity)).length
  const offlineBound =
    linkDownAt === null
      ? 0
      : attemptBound({
          fromMs: linkDownAt,
          toMs: outageEnd,
          processes: offlineProcesses,
          retryMinMs: plan.retryMinMs,
          retryMaxMs: plan.retryMaxMs,
        })
  const offlineDays = linkDownAt === null ? 0 : (outageEnd - linkDownAt) / (o.daySec * 1000)
  const toValidSec =
    linkUpAt === null || linkReturn.certValidAt === null ? null : (linkReturn.certValidAt - linkUpAt) / 1000
  const toBridgeSec = linkUpAt === null || linkReturn.bridgeAt === null ? null : (linkReturn.bridgeAt - linkUpAt) / 1000
  const graceSec = plan.graceMs / 1000
  const violations = gw.violations
  const gateway = {
    plan,
    promotions,
    renewals: Math.max(0, promotions.length - 1),
    renewedBeforeOutage,
    renewedAfterReturn: promotions.filter((x) => linkUpDay !== null && x.notBeforeDay >= linkUpDay).length,
    failedAttempts: failedAttempts.length,
    failedByCode,
    offline: {
      failedAttempts: failedOffline.length,
      perSimulatedDay: offlineDays > 0 ? failedOffline.length / offlineDays : null,
      bound: offlineBound,
      processes: offlineProcesses,
      longestRetryMs: Math.max(0, ...failedOffline.map((a) => a.retryInMs)),
    },
    snapshotDay10: offlineSnapshot,
    keptThroughOutage: {
      lastBeforeOutage: lastBeforeOutage?.serial ?? null,
      atDay10: offlineSnapshot?.serial ?? null,
      samplesWithoutCertificate: gw.lostOffline,
    },
    linkReturn: { toValidSec, toBridgeSec, graceSec },
    invalidWhileUp: gw.invalidWhileUp,
  }

  // Loss reports upstream: they must announce exactly the drops the agent counted (all reported reasons).
  const reportedDrops = sumOf(
    Object.fromEntries(Object.entries(sink.lossReports.byRule).map(([r, x]) => [r, sumOf(x)])),
  )
  const countedReportable = Object.values(total.byRule).reduce(
    (n, x) => n + sumOf(Object.fromEntries(Object.entries(x).filter(([k]) => k !== 'conflated' && k !== 'purged'))),
    0,
  )
  const checks = [
    {
      name: 'gateway certificate renewed online before the outage',
      ok: renewedBeforeOutage >= 1,
      detail: `${renewedBeforeOutage} renewals before day ${linkDownDay.toFixed(1)}`,
    },
    {
      name: 'gateway certificate kept offline (not lost while the CA was unreachable)',
      ok:
        gw.lostOffline === 0 &&
        lastBeforeOutage !== undefined &&
        (offlineSnapshot === null || offlineSnapshot.serial === lastBeforeOutage.serial),
      detail: `${gw.lostOffline} samples without one; day-10 serial ${offlineSnapshot?.serial ?? '-'} = last promoted ${lastBeforeOutage?.serial ?? '-'}`,
    },
    {
      name: 'no renewal storm while the CA was unreachable',
      ok: failedOffline.length <= offlineBound,
      detail: `${failedOffline.length} failed attempts in ${offlineDays.toFixed(1)} simulated days (bound ${offlineBound})`,
    },
    {
      name: `gateway certificate renewed and the bridge back within ${graceSec.toFixed(0)} s of the link's return`,
      ok: toValidSec !== null && toBridgeSec !== null && toValidSec <= graceSec && toBridgeSec <= graceSec,
      detail: `valid after ${toValidSec === null ? 'never' : `${toValidSec.toFixed(1)} s`}, bridge after ${toBridgeSec === null ? 'never' : `${toBridgeSec.toFixed(1)} s`}`,
    },
    {
      name: 'gateway certificate valid whenever the link was up (but the grace after its return)',
      ok: violations.length === 0,
      detail:
        violations.length === 0
          ? ''
          : violations
              .map((v) => `days ${v.fromDay.toFixed(2)}-${v.toDay.toFixed(2)} (${v.seconds.toFixed(0)} s)`)
              .join(', '),
    },
    {
      name: 'loss reports upstream announce the drops counted',
      ok: !drops.durable || reportedDrops === countedReportable,
      detail: `${sink.lossReports.reports} reports (${sink.lossReports.duplicates} resent) announce ${reportedDrops}; counted ${countedReportable}`,
    },
    {
      name: 'accounting closes (acknowledged = delivered + dropped by policy)',
      ok: accounts.verdict !== 'open',
      detail: `${accounts.verdict}, difference ${accounts.difference}`,
    },
    {
      name: 'per-topic order at the upstream',
      ok: accounts.outOfOrder === 0,
      detail: `${accounts.outOfOrder} out of order`,
    },
    { name: 'no phantom messages upstream', ok: accounts.phantom === 0, detail: `${accounts.phantom}` },
    {
      name: 'device certificates valid at every moment',
      ok: lapses === 0,
      detail: `${f.progress.lapses.length} lapsed, ${expiredHandshakes} handshakes refused as expired`,
    },
    {
      name: 'RSS growth day 5 → day 30 ≤ 10 MB',
      ok: rssGrowth !== null && rssGrowth <= RSS_GROWTH_LIMIT,
      detail: rssGrowth === null ? 'not measured' : `${rssGrowth >= 0 ? '+' : ''}${mb(rssGrowth)}`,
    },
    {
      name: 'backlog drained after the upstream returned',
      ok: depth === 0,
      detail: depth === 0 ? 'yes' : `depth ${depth} at the deadline`,
    },
    {
      name: `upstream rate ≤ maxRatePerSec (5 s windows, ×${RATE_TOLERANCE})`,
      ok: maxRate <= o.maxRatePerSec * RATE_TOLERANCE,
      detail: `${maxRate.toFixed(0)}/s vs ${o.maxRatePerSec}/s`,
    },
    { name: 'the agent exits 0 on every SIGTERM', ok: stopOk && restarts.every((r) => r.stopOk !== false), detail: '' },
  ]

  const summary = {
    measuredAt: new Date().toISOString(),
    options: o,
    devices: { tls: o.tlsDevices, plain: o.plainDevices },
    budgetBytes: w.maxBytes,
    bufferAtPeak: (() => {
      const top = samples.reduce<Sample | undefined>(
        (a, b) => (a === undefined || b.bufferBytes > a.bufferBytes ? b : a),
        undefined,
      )
      return top === undefined ? null : { day: top.day, bytes: top.bufferBytes, messages: top.bufferMessages }
    })(),
    accounts,
    accountingExactness: drops.durable
      ? `drop counts are durable totals: exact when the difference is 0; below 0 by at most ${accounts.possibleCopies} ` +
        `messages resent after a lost connection (the agent may hold two copies) + ${unackedAtEnd} never acknowledged ` +
        'is approximate; above 0 is a loss'
      : `approximate across ${drops.unobservedEnds} process ends (drop counts restart with each process): ` +
        `tolerance ${tolerance} drops of the last poll interval before each end + ${unackedAtEnd} messages never acknowledged`,
    lossReports: { ...sink.lossReports, announced: reportedDrops, counted: countedReportable },
    stored: appended.total,
    drops: total,
    qos0: { sent: f.qos0Sent, delivered: q0Delivered, duplicates: 0, dropped: q0Dropped },
    certificates: {
      renewals: f.progress.renewals,
      renewalFailures: f.progress.renewalFailures,
      lapses: f.progress.lapses,
      minCertMarginSec: f.progress.minCertMarginSec,
      minServerMarginSec: f.progress.minServerMarginSec,
      serverRotations: rotations.total,
      serverSerialsSeen: serverSerials.size,
      refusedHandshakes,
      issuedFilesAtEnd: samples.at(-1)?.issuedCerts ?? null,
    },
    devicesAtEnd: f.progress,
    restarts,
    lifetimes: agent.lifetimes,
    firstEvictionDay,
    rss: {
      day5: rss5,
      day30: rss30,
      growth: rssGrowth,
      peak: Math.max(...samples.map((s) => s.rssBytes)),
      slopes: rssSlopes,
    },
    host: { ...host, starved },
    admin: { statusFailures, longestStatusGapSec: longestStatusGapMs / 1000 },
    store: { day20: store20, day30: store30, peak: Math.max(...samples.map((s) => s.dbBytes + s.walBytes)) },
    drain: {
      linkUpAt,
      drainedAt,
      seconds: linkUpAt === null || drainedAt === null ? null : (drainedAt - linkUpAt) / 1000,
      maxRate5s: maxRate,
      limit: o.maxRatePerSec,
    },
    cpu: { meanPct: mean(samples.map((s) => s.cpuPct)) },
    gateway,
    checks,
    notes,
  }
  writeFileSync(join(o.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
  let png: string | null = null
  if (o.plot) {
    try {
      png = plot(
        o.out,
        samples,
        `edge-agent soak: ${w.specs.length} devices, 1 day = ${o.daySec} s`,
        MONTH.map((e) => ({ day: e.day, label: e.action })),
      )
    } catch (err) {
      notes.push(`plot: ${err instanceof Error ? err.message : String(err)}`)
    }
  } else {
    plot0(o.out, samples)
  }
  process.stdout.write(table(o, summary, accounts, png) + '\n')
  const failed = checks.filter((c) => !c.ok)
  for (const c of failed) log(`FAILED: ${c.name}: ${c.detail}`)
  // A failure on a starved machine may be the machine's: say so, never pass it.
  if (failed.length > 0 && starved !== null) log(`FAILED on a starved machine: ${starved}`)
  return { exitCode: failed.length === 0 ? 0 : 1 }
}

/** Least-squares slope of y over x, or null with fewer than 2 points. */
function slope(points: readonly (readonly [number, number])[]): number | null {
  if (points.length < 2) return null
  const n = points.length
  const mx = points.reduce((a, [x]) => a + x, 0) / n
  const my = points.reduce((a, [, y]) => a + y, 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of points) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? null : num / den
}

/** Without gnuplot the samples are still written, for plotting elsewhere. */
function plot0(dir: string, rows: readonly PlotRow[]): void {
  writeFileSync(join(dir, 'samples.json'), JSON.stringify(rows) + '\n')
}

function table(
  o: Options,
  s: Record<string, unknown> & { accounts: Accounts },
  a: Accounts,
  png: string | null,
): string {
  const x = s as unknown as {
    stored: number
    drops: DropCounts
    qos0: { sent: number; delivered: number; dropped: number }
    certificates: {
      renewals: number
      renewalFailures: number
      lapses: unknown[]
      minCertMarginSec: number | null
      minServerMarginSec: number | null
      serverRotations: number
      serverSerialsSeen: number
      issuedFilesAtEnd: number | null
    }
    restarts: { day: number; kind: string; listeningMs: number; healthyMs: number; droppingBefore: boolean }[]
    firstEvictionDay: number | null
    rss: {
      day5: number | null
      day30: number | null
      growth: number | null
      peak: number
      slopes: { fromDay: number; mbPerDay: number | null; heapMbPerDay: number | null }[]
    }
    host: {
      cores: number
      load1Mean: number | null
      load1Max: number
      soakLoopDelayMaxMs: number
      statusMsMax: number
      starved: string | null
    }
    admin: { statusFailures: number; longestStatusGapSec: number }
    store: { day20: number | null; day30: number | null; peak: number }
    drain: { seconds: number | null; maxRate5s: number; limit: number }
    cpu: { meanPct: number | null }
    checks: { name: string; ok: boolean; detail: string }[]
    gateway: {
      plan: GatewayCertPlan
      promotions: { serial: string; seenDay: number; notBeforeDay: number; notAfterDay: number }[]
      renewals: number
      renewedBeforeOutage: number
      renewedAfterReturn: number
      failedAttempts: number
      failedByCode: Record<string, number>
      offline: {
        failedAttempts: number
        perSimulatedDay: number | null
        bound: number
        processes: number
        longestRetryMs: number
      }
      snapshotDay10: { day: number; state: string; serial: string | null; failures: number; held: string | null } | null
      linkReturn: { toValidSec: number | null; toBridgeSec: number | null; graceSec: number }
      invalidWhileUp: { fromDay: number; toDay: number; seconds: number; inGrace: boolean }[]
    }
    accountingExactness: string
    budgetBytes: number
    bufferAtPeak: { day: number; bytes: number; messages: number } | null
    devicesAtEnd: DevicesProgress
    notes: string[]
  }
  const simH = (sec: number | null) =>
    sec === null ? '-' : `${((sec / o.daySec) * 24).toFixed(1)} simulated h (${sec.toFixed(0)} s)`
  const m = (b: number | null) => (b === null ? '-' : mb(b))
  const byReason =
    Object.entries(x.drops.byReason)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none'
  const bridge =
    Object.entries(x.drops.bridge)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none'
  const rows: [string, string][] = [
    ['calendar', `1 simulated day = ${o.daySec} s; online day 0, upstream away days 1-30, back day 31`],
    ['devices', `${o.tlsDevices} over mqtts (local CA certificates) + ${o.plainDevices} plain`],
    ['QoS 1 acknowledged to devices', String(a.acknowledged)],
    ['stored by the buffer (all rules, summed over processes)', String(x.stored)],
    [
      'delivered upstream (unique QoS 1)',
      `${a.deliveredUnique} (${a.duplicates} duplicates, ${a.deliveredUnacked} never acknowledged to the device)`,
    ],
    ['dropped by the buffer, by reason (all rules)', byReason],
    ['dropped by the bridge', bridge],
    ['acknowledged − delivered (missing)', String(a.missing)],
    ['dropped by policy, QoS 1 rules', String(a.dropped)],
    ['accounting', `${a.verdict} (difference ${a.difference}); ${x.accountingExactness}`],
    ['per-topic order upstream', a.outOfOrder === 0 ? 'kept' : `${a.outOfOrder} out of order`],
    [
      'QoS 0 (bufferQos0; not in the equation)',
      `sent ${x.qos0.sent}, delivered ${x.qos0.delivered}, dropped ${x.qos0.dropped}`,
    ],
    [
      'buffer budget / fullest / evicting from',
      `${mb(x.budgetBytes)} / ${x.bufferAtPeak === null ? '-' : `${mb(x.bufferAtPeak.bytes)}, ${x.bufferAtPeak.messages} messages (day ${x.bufferAtPeak.day.toFixed(1)})`} / ` +
        `${x.firstEvictionDay === null ? 'never' : `day ${x.firstEvictionDay.toFixed(1)}`}`,
    ],
    [
      'device certificates',
      `${x.certificates.renewals} renewals, ${x.certificates.renewalFailures} failed attempts, ${x.certificates.lapses.length} lapsed; least time left ${simH(x.certificates.minCertMarginSec)}`,
    ],
    [
      'renewal rounds (first attempt to new certificate)',
      `longest ${x.devicesAtEnd.renewalLongestRoundSec === null ? '-' : simH(x.devicesAtEnd.renewalLongestRoundSec)}; ` +
        `largest retry hint ${x.devicesAtEnd.renewalMaxHintSec === null ? '-' : `${x.devicesAtEnd.renewalMaxHintSec} s`}` +
        x.devicesAtEnd.lapses
          .map(
            (l) =>
              `; lapsed ${l.id} at day ${l.atDay.toFixed(2)}: ${l.attempts} attempts since day ` +
              `${l.roundStartDay === null ? '-' : l.roundStartDay.toFixed(2)}, last ${l.lastError ?? '-'} ` +
              `(hint ${l.lastHintSec ?? '-'} s, ${l.sinceLastAttemptDays === null ? '-' : l.sinceLastAttemptDays.toFixed(2)} days before)` +
              `${l.renewing ? ', attempt still open' : ''}${l.connected ? '' : ', disconnected'}`,
          )
          .join(''),
    ],
    [
      'failed renewal attempts by cause',
      Object.entries(x.devicesAtEnd.renewalErrors)
        .map(([k, n]) => `${k}: ${n}`)
        .join('; ') || 'none',
    ],
    [
      'server certificate',
      `${x.certificates.serverRotations} rotations (${x.certificates.serverSerialsSeen} serials seen); least time left at a connect ${simH(x.certificates.minServerMarginSec)}`,
    ],
    ['certificates kept by the CA at the end', String(x.certificates.issuedFilesAtEnd ?? '-')],
    [
      'gateway certificate (certs.acme, pebble behind the link)',
      `lifetime ${x.gateway.plan.lifetimeSec} s (${simH(x.gateway.plan.lifetimeSec)}), renewAt ${x.gateway.plan.renewAt}, ` +
        `retry ${x.gateway.plan.retryMinMs}-${x.gateway.plan.retryMaxMs} ms, request timeout ${x.gateway.plan.requestTimeoutMs} ms`,
    ],
    [
      'gateway certificate renewals (promoted)',
      `${x.gateway.renewals} after the first issuance: ${x.gateway.renewedBeforeOutage} before the outage, ` +
        `${x.gateway.renewedAfterReturn} after the link returned`,
    ],
    [
      'gateway certificate issued (day: notBefore → notAfter)',
      x.gateway.promotions.map((p) => `${p.notBeforeDay.toFixed(2)} → ${p.notAfterDay.toFixed(2)}`).join('; ') ||
        'none',
    ],
    [
      'gateway certificate failed attempts',
      `${x.gateway.failedAttempts} (${
        Object.entries(x.gateway.failedByCode)
          .map(([k, n]) => `${k} ${n}`)
          .join(', ') || 'none'
      }); while offline ${x.gateway.offline.failedAttempts} ` +
        `(${x.gateway.offline.perSimulatedDay === null ? '-' : x.gateway.offline.perSimulatedDay.toFixed(1)} per simulated day, ` +
        `bound ${x.gateway.offline.bound} over ${x.gateway.offline.processes} processes; longest retry wait ${x.gateway.offline.longestRetryMs} ms)`,
    ],
    [
      'gateway certificate at day 10 (offline)',
      x.gateway.snapshotDay10 === null
        ? '-'
        : `${x.gateway.snapshotDay10.state}, serial ${x.gateway.snapshotDay10.serial ?? '-'}, ` +
          `${x.gateway.snapshotDay10.failures} failed attempts in this process; upstream held: ${x.gateway.snapshotDay10.held ?? 'no'}`,
    ],
    [
      'link return → gateway certificate valid / bridge connected',
      `${x.gateway.linkReturn.toValidSec === null ? 'never' : simH(x.gateway.linkReturn.toValidSec)} / ` +
        `${x.gateway.linkReturn.toBridgeSec === null ? 'never' : simH(x.gateway.linkReturn.toBridgeSec)} (grace ${x.gateway.linkReturn.graceSec.toFixed(0)} s)`,
    ],
    [
      'gateway certificate invalid while the link was up',
      x.gateway.invalidWhileUp
        .map(
          (v) =>
            `days ${v.fromDay.toFixed(2)}-${v.toDay.toFixed(2)} (${v.seconds.toFixed(1)} s${v.inGrace ? ', in the grace' : ''})`,
        )
        .join('; ') || 'never',
    ],
    ...x.restarts.map((r): [string, string] => [
      `restart day ${r.day} (${r.kind})`,
      `listening after ${r.listeningMs.toFixed(0)} ms, /healthz after ${r.healthyMs.toFixed(0)} ms${r.kind === 'kill -9' ? (r.droppingBefore ? ', buffer already dropping' : ', before any drop') : ''}`,
    ]),
    [
      'RSS day 5 / day 30 / peak',
      `${m(x.rss.day5)} / ${m(x.rss.day30)} / ${m(x.rss.peak)} (growth ${x.rss.growth === null ? '-' : m(x.rss.growth)})`,
    ],
    [
      'RSS slope within each process (MB per simulated day)',
      x.rss.slopes
        .map(
          (r) =>
            `from day ${r.fromDay.toFixed(1)}: ${r.mbPerDay === null ? '-' : r.mbPerDay.toFixed(2)}` +
            ` (V8 heap ${r.heapMbPerDay === null ? '-' : r.heapMbPerDay.toFixed(2)})`,
        )
        .join('; '),
    ],
    [
      'machine load (starvation)',
      `1-minute load mean ${x.host.load1Mean === null ? '-' : x.host.load1Mean.toFixed(1)}, max ${x.host.load1Max.toFixed(1)} ` +
        `on ${x.host.cores} cores; the soak's event loop stalled up to ${x.host.soakLoopDelayMaxMs.toFixed(0)} ms; ` +
        `slowest /status ${x.host.statusMsMax} ms` +
        (x.host.starved === null ? '' : ' — **starved**: a failed check may be the machine, not the agent'),
    ],
    [
      '/status polls unanswered (3 s timeout)',
      `${x.admin.statusFailures}, longest gap ${x.admin.longestStatusGapSec.toFixed(0)} s`,
    ],
    ['database + WAL day 20 / day 30 / peak', `${m(x.store.day20)} / ${m(x.store.day30)} / ${m(x.store.peak)}`],
    [
      'drain after the upstream returned',
      `${x.drain.seconds === null ? 'not finished' : `${x.drain.seconds.toFixed(1)} s`}; highest 5 s rate ${x.drain.maxRate5s.toFixed(0)}/s (limit ${x.drain.limit}/s)`,
    ],
    ['agent CPU, mean', x.cpu.meanPct === null ? '-' : `${x.cpu.meanPct.toFixed(0)} % of one core`],
    ['plot', png ?? 'not written'],
  ]
  const esc = (t: string) => t.replace(/\|/g, '\\|')
  const lines = [
    '| measure | value |',
    '|---|---|',
    ...rows.map(([k, v]) => `| ${esc(k)} | ${esc(v)} |`),
    '',
    '| check | result |',
    '|---|---|',
  ]
  for (const c of x.checks)
    lines.push(`| ${esc(c.name)} | ${c.ok ? 'pass' : 'FAIL'}${c.detail === '' ? '' : `: ${esc(c.detail)}`} |`)
  if (x.notes.length > 0) lines.push('', ...x.notes.map((n) => `- ${n}`))
  return lines.join('\n')
}

async function main(): Promise<number> {
  installCleanupHooks()
  let o: Options | string
  try {
    o = parseOptions(process.argv.slice(2))
  } catch (err) {
    log(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`)
    return 2
  }
  if (typeof o === 'string') {
    process.stderr.write(`${o}\n`)
    return o === USAGE ? 0 : 2
  }
  const r = await run(o)
  return r.exitCode
}

const code = await main()
// Exit once stdout is flushed: a child's IPC channel or a lingering socket must not keep the run alive.
process.stdout.write('', () => process.exit(code))
