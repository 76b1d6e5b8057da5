// A FAKE systemd notify socket: an AF_UNIX SOCK_DGRAM socket bound by a small
// python3 process (Node has no datagram unix sockets) that prints each
// datagram as a JSON line {t: epoch ms, msg}; it plays PID 1. BARRIER=1
// datagrams (systemd-notify's own "wait until processed") are filtered out,
// and the barrier pipe they carry is closed so that systemd-notify returns.
import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Scope } from './scope.js'
import { tmpDir } from './tmp-dir.js'
import { withTimeout } from './wait.js'

const RECEIVER_PY = String.raw`
import array, json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"listening": sys.argv[1]}), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
    print(json.dumps({"t": time.time() * 1000, "msg": msg.decode("utf-8", "replace")}), flush=True)
`

export const hasPython = (): boolean => spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status === 0

export interface Datagram {
  /** Receive time, epoch ms. */
  t: number
  /** KEY=VALUE lines of the datagram. */
  fields: Record<string, string>
}

export interface FakeNotifySocket {
  readonly path: string
  readonly received: Datagram[]
  /** The first datagram at index >= `from` matching `pred`; rejects after `timeoutMs`. */
  waitFor(what: string, pred: (d: Datagram) => boolean, timeoutMs: number, from?: number): Promise<Datagram>
}

function parseFields(msg: string): Record<string, string> {
  const fields: Record<string, string> = {}
  for (const line of msg.split('\n')) {
    const eq = line.indexOf('=')
    if (eq > 0) fields[line.slice(0, eq)] = line.slice(eq + 1)
  }
  return fields
}

export async function startFakeNotifySocket(t: Scope): Promise<FakeNotifySocket> {
  const dir = tmpDir(t, 'sd-notify-test-')
  const path = join(dir, 'notify.sock')
  writeFileSync(join(dir, 'receiver.py'), RECEIVER_PY)
  const child = spawn('python3', ['-u', join(dir, 'receiver.py'), path], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const received: Datagram[] = []
  const waiters = new Set<() => void>()
  let listening: () => void = () => undefined
  const isListening = new Promise<void>((resolve) => (listening = resolve))
  createInterface({ input: child.stdout }).on('line', (line) => {
    const obj = JSON.parse(line) as { listening?: string; t?: number; msg?: string }
    if (obj.listening !== undefined) return listening()
    const fields = parseFields(obj.msg ?? '')
    if (fields['BARRIER'] === '1') return
    received.push({ t: obj.t ?? 0, fields })
    for (const w of waiters) w()
  })
  await withTimeout(isListening, 5000, 'the fake notify socket to be bound')

  const waitFor = (what: string, pred: (d: Datagram) => boolean, timeoutMs: number, from = 0): Promise<Datagram> => {
    let onMessage: () => void = () => undefined
    return withTimeout(
      new Promise<Datagram>((resolve) => {
        onMessage = () => {
          const hit = received.slice(from).find(pred)
          if (hit === undefined) return
          waiters.delete(onMessage)
          resolve(hit)
        }
        waiters.add(onMessage)
        onMessage()
      }),
      timeoutMs,
      `${what} on the fake notify socket (got ${JSON.stringify(received.map((d) => d.fields))})`,
    ).finally(() => waiters.delete(onMessage))
  }
  return { path, received, waitFor }
}
