/**
 * sd_notify(3) for the agent: READY=1, STOPPING=1, STATUS=…, WATCHDOG=1.
 *
 * Node has no AF_UNIX SOCK_DGRAM sockets, so each message is sent by spawning
 * `systemd-notify` (always present where systemd is; no native addon to
 * cross-build for arm64). Invariants:
 *
 * - A no-op unless NOTIFY_SOCKET is set: running by hand or under Type=exec
 *   costs nothing and spawns nothing.
 * - Messages go out one at a time, in call order (READY before STATUS before
 *   STOPPING): the next `systemd-notify` starts only after the previous exited.
 * - `systemd-notify` is run WITHOUT `--no-block`, so it waits (≤ 5 s, its own
 *   barrier) until PID 1 has processed the datagram. This closes the known race
 *   where PID 1 cannot attribute a message from a process that already exited
 *   to the unit and drops it, even with NotifyAccess=all (systemd-notify(1)).
 *   The unit therefore needs `NotifyAccess=all`: the sender is our child, not
 *   the main PID. READY also carries `--pid=<our pid>` (MAINPID=) so that the
 *   node process, not the launcher or the helper, is the unit's main process.
 * - Watchdog keep-alives are driven by a timer on this event loop at
 *   WATCHDOG_USEC / 2, and sent only while `isHealthy()` returns true. A blocked
 *   event loop or a failing health check therefore starves the watchdog and
 *   systemd restarts the agent (WatchdogSec=). At most one keep-alive is queued
 *   or in flight at a time, so a slow PID 1 cannot pile up processes.
 * - A missing or failing `systemd-notify` is logged (warn) and never throws.
 */
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process'

/** The pino-compatible subset this module logs through. */
export interface NotifierLogger {
  debug(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

/** Just enough of `child_process.spawn` to inject a fake in tests. */
export type NotifySpawn = (
  command: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; stdio: ['ignore', 'ignore', 'pipe'] },
) => ChildProcess

export interface NotifierOptions {
  /** The process environment (main.ts passes `process.env`); reads NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID. */
  env: Readonly<Record<string, string | undefined>>
  /** Our PID, sent as MAINPID with READY and matched against WATCHDOG_PID. Default: `process.pid`. */
  pid?: number
  /** Default: `child_process.spawn`. */
  spawn?: NotifySpawn
  /** Default: no logging. */
  logger?: NotifierLogger
  /** Path of the helper. Default: `/usr/bin/systemd-notify`. */
  command?: string
  /** Kill a helper that has not exited after this long, in ms. Default: 10 000 (its own barrier waits ≤ 5 s). */
  helperTimeoutMs?: number
}

export interface Notifier {
  /** True when NOTIFY_SOCKET is set, i.e. messages are actually sent. */
  readonly enabled: boolean
  /** Keep-alive interval in ms (WATCHDOG_USEC / 2), or undefined when systemd asked for no watchdog. */
  readonly watchdogIntervalMs: number | undefined
  /** READY=1 (plus MAINPID and an optional STATUS). Call once every listener is up and the store is open. */
  ready(status?: string): void
  /** STOPPING=1. Call first thing on SIGTERM. */
  stopping(status?: string): void
  /** STATUS=<text>: one line shown by `systemctl status`. */
  status(text: string): void
  /** Start sending WATCHDOG=1 every WATCHDOG_USEC/2 while `isHealthy()` is true. No-op without a watchdog. */
  startWatchdog(isHealthy: () => boolean): void
  /**
   * Stop the watchdog timer and wait (bounded by `timeoutMs`, default 3000) for queued messages to go out.
   * Idempotent.
   */
  stop(timeoutMs?: number): Promise<void>
}

type Job = { args: string[]; watchdog: boolean }

const DEFAULT_COMMAND = '/usr/bin/systemd-notify'

/** Parse WATCHDOG_USEC into a keep-alive interval (half the timeout), honouring WATCHDOG_PID. */
export function watchdogIntervalMs(env: NotifierOptions['env'], pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC)
  if (!Number.isFinite(usec) || usec <= 0) return undefined
  // sd_watchdog_enabled(3): a WATCHDOG_PID naming another process means the watchdog is not ours.
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return undefined
  return Math.max(1, Math.floor(usec / 2000))
}

/** STATUS is a single line; systemd shows it verbatim. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, 512)
}

export function createNotifier(options: NotifierOptions): Notifier {
  const socket = options.env.NOTIFY_SOCKET
  const enabled = socket !== undefined && socket !== ''
  const pid = options.pid ?? process.pid
  const interval = enabled ? watchdogIntervalMs(options.env, pid) : undefined

  if (!enabled) {
    return {
      enabled: false,
      watchdogIntervalMs: undefined,
      ready() {},
      stopping() {},
      status() {},
      startWatchdog() {},
      stop: () => Promise.resolve(),
    }
  }

  const spawn: NotifySpawn = options.spawn ?? nodeSpawn
  const log = options.logger
  const command = options.command ?? DEFAULT_COMMAND
  const helperTimeoutMs = options.helperTimeoutMs ?? 10_000
  // The helper needs NOTIFY_SOCKET and nothing of ours that might confuse it.
  const childEnv: NodeJS.ProcessEnv = { NOTIFY_SOCKET: socket, PATH: options.env.PATH ?? '/usr/bin:/bin' }

  const queue: Job[] = []
  let running = false
  let broken = false
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  /** A keep-alive is queued or in flight: skip further ones until it is done. */
  let watchdogPending = false
  const idleWaiters: Array<() => void> = []

  function pump(): void {
    if (running) return
    const job = queue.shift()
    if (job === undefined) {
      for (const resolve of idleWaiters.splice(0)) resolve()
      return
    }
    if (broken) {
      queue.length = 0
      watchdogPending = false
      pump()
      return
    }
    const current: Job = job
    running = true
    let stderr = ''
    let child: ChildProcess
    try {
      child = spawn(command, job.args, { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] })
    } catch (err) {
      finish(err as Error, null)
      return
    }
    const kill = setTimeout(() => child.kill('SIGKILL'), helperTimeoutMs)
    kill.unref()
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      if (stderr.length < 1000) stderr += chunk
    })
    let done = false
    child.once('error', (err) => {
      if (done) return
      done = true
      clearTimeout(kill)
      finish(err, null)
    })
    child.once('close', (code, signal) => {
      if (done) return
      done = true
      clearTimeout(kill)
      finish(null, code ?? signal)
    })

    function finish(err: Error | null, result: number | string | null): void {
      running = false
      if (current.watchdog) watchdogPending = false
      if (err !== null) {
        // ENOENT: no systemd-notify on this host. Say it once, then stop trying.
        broken = (err as NodeJS.ErrnoException).code === 'ENOENT'
        log?.warn({ err, command }, 'sd_notify helper failed')
      } else if (result !== 0) {
        log?.warn({ command, args: current.args, exit: result, stderr: stderr.trim() }, 'sd_notify helper failed')
      } else {
        log?.debug({ args: current.args }, 'sd_notify sent')
      }
      pump()
    }
  }

  function send(args: string[], watchdog = false): void {
    if (broken) return
    if (watchdog) {
      if (watchdogPending) return
      watchdogPending = true
    }
    queue.push({ args, watchdog })
    pump()
  }

  return {
    enabled: true,
    watchdogIntervalMs: interval,
    ready(status) {
      const args = [`--pid=${pid}`, 'READY=1']
      if (status !== undefined) args.push(`STATUS=${oneLine(status)}`)
      send(args)
    },
    stopping(status) {
      const args = ['STOPPING=1']
      if (status !== undefined) args.push(`STATUS=${oneLine(status)}`)
      send(args)
    },
    status(text) {
      send([`STATUS=${oneLine(text)}`])
    },
    startWatchdog(isHealthy) {
      if (interval === undefined || timer !== undefined || stopped) return
      const tick = (): void => {
        let healthy = false
        try {
          healthy = isHealthy()
        } catch (err) {
          log?.warn({ err }, 'health check threw; withholding watchdog keep-alive')
        }
        if (healthy) send(['WATCHDOG=1'], true)
        else log?.warn({}, 'unhealthy; withholding watchdog keep-alive')
      }
      tick()
      // unref: the agent's servers keep the loop alive; the notifier alone never should.
      timer = setInterval(tick, interval)
      timer.unref()
    },
    stop(timeoutMs = 3000) {
      stopped = true
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
      // Drop queued keep-alives; keep READY/STATUS/STOPPING.
      for (let i = queue.length - 1; i >= 0; i--) {
        if (queue[i]!.watchdog) {
          queue.splice(i, 1)
        }
      }
      if (!running && queue.length === 0) return Promise.resolve()
      return new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs)
        t.unref()
        idleWaiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    },
  }
}
