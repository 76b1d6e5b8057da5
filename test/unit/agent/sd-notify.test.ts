// sd-notify: the notifier API with an injected spawn, and end to end through the
// real /usr/bin/systemd-notify into a FAKE notify socket.
//
// Glossary
//   fake socket | an AF_UNIX SOCK_DGRAM socket bound by a small python3 process that
//               | prints each datagram as a JSON line {t: epoch ms, msg}; it plays PID 1.
//   BARRIER=1   | systemd-notify's own "wait until processed" datagram; filtered out.
//   blocker     | a child node process running the notifier whose event loop the test
//               | blocks with a bounded busy loop, to show that keep-alives stop.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { test, type TestContext } from 'node:test'
import { createNotifier, watchdogIntervalMs, type NotifySpawn } from '../../../src/agent/sd-notify.js'
import { startFakeNotifySocket, hasPython, type Datagram } from '../../helpers/fake-notify-socket.js'
import { withTimeout } from '../../helpers/wait.js'

const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify'
const SD_NOTIFY_MODULE = resolve(import.meta.dirname, '../../../src/agent/sd-notify.ts')
const realHelperSkip = !existsSync(SYSTEMD_NOTIFY)
  ? `${SYSTEMD_NOTIFY} is missing (apt-get install systemd)`
  : !hasPython()
    ? 'python3 is missing: it binds the fake notify socket'
    : false

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sd-notify-test-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function killOnExit(t: TestContext, child: ChildProcess): void {
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
}

/** A spawn that records its calls and "exits 0" on the next tick. */
function fakeSpawn(): { spawn: NotifySpawn; calls: string[][] } {
  const calls: string[][] = []
  const spawn: NotifySpawn = (_command, args) => {
    calls.push([...args])
    const child = new EventEmitter() as EventEmitter & { stderr: null; kill: () => boolean }
    child.stderr = null
    child.kill = () => true
    setImmediate(() => child.emit('close', 0, null))
    return child as unknown as ChildProcess
  }
  return { spawn, calls }
}

test('does nothing and spawns nothing when NOTIFY_SOCKET is unset', async () => {
  const spawn: NotifySpawn = () => assert.fail('must not spawn')
  const n = createNotifier({ env: { WATCHDOG_USEC: '1000' }, spawn })
  assert.equal(n.enabled, false)
  n.ready('up')
  n.status('x')
  n.startWatchdog(() => true)
  n.stopping()
  await n.stop()
})

test('derives the keep-alive interval as half of WATCHDOG_USEC and ignores a watchdog meant for another PID', () => {
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 10), 15_000)
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '10' }, 10), 15_000)
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '11' }, 10), undefined)
  assert.equal(watchdogIntervalMs({}, 10), undefined)
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'junk' }, 10), undefined)
  const n = createNotifier({ env: { NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '2000000' }, pid: 1, spawn: fakeSpawn().spawn })
  assert.equal(n.watchdogIntervalMs, 1000)
})

test('sends WATCHDOG=1 only while isHealthy() returns true', async () => {
  const { spawn, calls } = fakeSpawn()
  const n = createNotifier({ env: { NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '20000' }, pid: 7, spawn })
  let healthy = true
  let checks = 0
  const checksReached = async (count: number): Promise<void> => {
    const deadline = Date.now() + 5000
    while (checks < count) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} health checks`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  n.startWatchdog(() => {
    checks++
    return healthy
  })
  await checksReached(3)
  await new Promise((r) => setImmediate(r)) // let the last fake helper "exit"
  const healthyPings = calls.filter((a) => a.includes('WATCHDOG=1')).length
  assert.ok(healthyPings >= 2, `expected keep-alives while healthy, got ${healthyPings}`)
  healthy = false
  const before = calls.length
  await checksReached(checks + 4)
  assert.equal(calls.length, before, 'no keep-alive while unhealthy')
  healthy = true
  await checksReached(checks + 2)
  assert.ok(calls.length > before, 'keep-alives resume once healthy again')
  await n.stop()
  const afterStop = calls.length
  const checksAtStop = checks
  await new Promise((r) => setTimeout(r, 50)) // bounded "nothing more happens" window (aedes checkNoPacket)
  assert.equal(checks, checksAtStop, 'stop() clears the timer')
  assert.equal(calls.length, afterStop)
})

test('never throws and gives up quietly when systemd-notify is missing', async () => {
  const warnings: string[] = []
  const logger = { debug() {}, warn: (_o: object, msg: string) => void warnings.push(msg) }
  const n = createNotifier({
    env: { NOTIFY_SOCKET: '/nonexistent/sock' },
    command: '/nonexistent/systemd-notify',
    logger,
  })
  n.ready()
  n.status('a')
  n.status('b')
  await n.stop(5000)
  assert.deepEqual(warnings, ['sd_notify helper failed'])
})

test(
  'sends READY=1 with MAINPID, STATUS and STOPPING=1 through systemd-notify, in call order',
  { skip: realHelperSkip },
  async (t) => {
    const sock = await startFakeNotifySocket(t)
    const n = createNotifier({ env: { NOTIFY_SOCKET: sock.path, PATH: '/usr/bin:/bin' }, pid: 4242 })
    n.ready('listening on 127.0.0.1:1883')
    n.status('forwarding')
    n.stopping()
    await n.stop(10_000)
    const ready = await sock.waitFor('READY=1', (d) => d.fields.READY === '1', 5000)
    assert.equal(ready.fields.MAINPID, '4242')
    assert.equal(ready.fields.STATUS, 'listening on 127.0.0.1:1883')
    await sock.waitFor('STOPPING=1', (d) => d.fields.STOPPING === '1', 5000)
    const order = sock.received.map((d) =>
      d.fields.READY ? 'ready' : d.fields.STOPPING ? 'stopping' : `status:${d.fields.STATUS}`,
    )
    assert.deepEqual(order, ['ready', 'status:forwarding', 'stopping'])
  },
)

// The blocker: runs the real notifier with a 100 ms keep-alive interval and, on
// "block <ms>" from stdin, busy-loops its event loop for that long (bounded).
const BLOCKER_MJS = `
import { createInterface } from 'node:readline'
import { createNotifier } from ${JSON.stringify(SD_NOTIFY_MODULE)}
const n = createNotifier({ env: process.env })
n.startWatchdog(() => true)
console.log(JSON.stringify({ started: Date.now(), intervalMs: n.watchdogIntervalMs }))
createInterface({ input: process.stdin }).on('line', (line) => {
  const ms = Math.min(Number(line.split(' ')[1]), 5000)
  console.log(JSON.stringify({ blockStart: Date.now() }))
  const end = Date.now() + ms
  while (Date.now() < end) {}
  console.log(JSON.stringify({ blockEnd: Date.now() }))
})
process.stdin.on('end', () => process.exit(0))
`

test(
  'stops sending WATCHDOG=1 while the event loop is blocked, and resumes after',
  { skip: realHelperSkip },
  async (t) => {
    const sock = await startFakeNotifySocket(t)
    const dir = tempDir(t)
    writeFileSync(join(dir, 'blocker.mjs'), BLOCKER_MJS)
    const child = spawn(process.execPath, ['--import', 'tsx', join(dir, 'blocker.mjs')], {
      env: { ...process.env, NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '200000' },
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    killOnExit(t, child)
    const lines: Array<Record<string, number>> = []
    const lineWaiters = new Set<() => void>()
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(JSON.parse(line) as Record<string, number>)
      for (const w of lineWaiters) w()
    })
    const childSays = (key: string, timeoutMs: number): Promise<number> =>
      withTimeout(
        new Promise<number>((resolve) => {
          const check = (): void => {
            const hit = lines.find((l) => l[key] !== undefined)
            if (hit !== undefined) {
              lineWaiters.delete(check)
              resolve(hit[key]!)
            }
          }
          lineWaiters.add(check)
          check()
        }),
        timeoutMs,
        `the blocker to report ${key}`,
      )

    await childSays('started', 15_000)
    const isWatchdog = (d: Datagram): boolean => d.fields.WATCHDOG === '1'
    // Keep-alives flow: wait until three have arrived.
    await sock.waitFor('three keep-alives', () => sock.received.filter(isWatchdog).length >= 3, 5000)

    child.stdin.write('block 2000\n')
    const blockStart = await childSays('blockStart', 5000)
    const blockEnd = await childSays('blockEnd', 10_000)
    assert.ok(blockEnd - blockStart >= 2000)
    // After the loop is free again, keep-alives resume.
    const resumed = await sock.waitFor('a keep-alive after the block', (d) => isWatchdog(d) && d.t > blockEnd, 5000)
    assert.ok(resumed.t > blockEnd)
    // During the 2 s block, at 100 ms a keep-alive would have gone out ~20 times. At most one
    // may land inside the window: the helper that was already in flight when the block began.
    const during = sock.received.filter((d) => isWatchdog(d) && d.t > blockStart && d.t < blockEnd)
    assert.ok(during.length <= 1, `expected no keep-alives while blocked, got ${during.length}`)
    child.stdin.end()
  },
)
