// Client driver program: opens N idle MQTT 3.1.1 (or 5) connections to a broker over raw TCP.
//
// Runs in its own process (spawned by client-driver.ts with `node --eval`), so the
// clients' memory never counts towards the broker's RSS. Raw sockets instead of
// mqtt.js keep the driver light: one CONNECT (clean session, keepalive from env),
// wait for CONNACK, then a PINGREQ once per keepalive period (as an idle device
// does), spread over time so the broker sees a steady trickle rather than bursts.
//
// Protocol with the parent over IPC: the driver sends one `connected` message when
// every connection has either a CONNACK or a failure, then waits for `close`, sends
// DISCONNECT on every socket, reports `closed` and exits. It also exits if the parent
// goes away. Input comes from environment variables (see below), not argv.
import { connect, type Socket } from 'node:net'
import type { DriverToParent, ParentToDriver } from './client-driver.js'

const port = Number(process.env.EDGE_BENCH_TARGET_PORT)
const host = process.env.EDGE_BENCH_TARGET_HOST ?? '127.0.0.1'
const total = Number(process.env.EDGE_BENCH_CLIENTS ?? '2000')
const concurrency = Number(process.env.EDGE_BENCH_CONCURRENCY ?? '100')
const keepaliveSec = Number(process.env.EDGE_BENCH_KEEPALIVE_SEC ?? '60')
const idPrefix = process.env.EDGE_BENCH_ID_PREFIX ?? `bench-${process.pid}-`
const connackTimeoutMs = Number(process.env.EDGE_BENCH_CONNACK_TIMEOUT_MS ?? '30000')
/** 4 = MQTT 3.1.1, 5 = MQTT 5 (CONNECT with empty properties). */
const protocolLevel = process.env.EDGE_BENCH_PROTOCOL === '5' ? 5 : 4

function send(msg: DriverToParent): void {
  process.send?.(msg)
}

if (process.send === undefined) {
  console.error('client driver needs an IPC channel')
  process.exit(2)
}
if (!Number.isInteger(port) || port <= 0 || !Number.isInteger(total) || total < 0) {
  send({ type: 'fatal', error: `bad EDGE_BENCH_TARGET_PORT/EDGE_BENCH_CLIENTS: ${port}/${total}` })
  process.exit(2)
}

/**
 * CONNECT: protocol name 'MQTT', level 4 or 5, flags = clean session (Clean Start), given keepalive and
 * client id; MQTT 5 adds an empty property list.
 */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8')
  const variable = Buffer.from([
    0x00,
    0x04,
    0x4d,
    0x51,
    0x54,
    0x54,
    protocolLevel,
    0x02,
    (keepaliveSec >> 8) & 0xff,
    keepaliveSec & 0xff,
    ...(protocolLevel === 5 ? [0x00] : []),
  ])
  const payloadLen = Buffer.from([(id.length >> 8) & 0xff, id.length & 0xff])
  const remaining = variable.length + payloadLen.length + id.length
  if (remaining > 127) throw new Error('client id too long for the one-byte remaining length used here')
  return Buffer.concat([Buffer.from([0x10, remaining]), variable, payloadLen, id])
}

const PINGREQ = Buffer.from([0xc0, 0x00])
const DISCONNECT = Buffer.from([0xe0, 0x00])

const sockets: Array<Socket | undefined> = new Array<Socket | undefined>(total)
let next = 0
let inFlight = 0
let connected = 0
let failed = 0
let lost = 0
let firstError: string | undefined
let reported = false
let closing = false
const t0 = performance.now()

function finishOne(ok: boolean, err?: string): void {
  inFlight--
  if (ok) connected++
  else {
    failed++
    firstError ??= err
  }
  if (connected + failed === total && !reported) {
    reported = true
    const msg: DriverToParent = { type: 'connected', connected, failed, connectMs: performance.now() - t0 }
    if (firstError !== undefined) msg.firstError = firstError
    send(msg)
  }
  pump()
}

function open(i: number): void {
  inFlight++
  const s = connect({ port, host })
  s.setNoDelay(true)
  let acked = false
  let done = false
  let head = Buffer.alloc(0)
  const timer = setTimeout(() => fail('no CONNACK in time'), connackTimeoutMs)
  function fail(why: string): void {
    clearTimeout(timer)
    s.destroy()
    if (!done) {
      done = true
      finishOne(false, why)
    }
  }
  s.once('connect', () => s.write(connectPacket(`${idPrefix}${i}`)))
  s.on('data', (chunk: Buffer) => {
    if (acked) return // PINGRESPs; nothing else is expected on an idle connection
    head = Buffer.concat([head, chunk])
    if (head.length < 4) return
    // MQTT 5's CONNACK carries properties (remaining length > 2, below 128 here); its reason code sits where
    // 3.1.1's return code does.
    const size = protocolLevel === 5 ? (head[1] ?? 0) : 2
    if (head[0] !== 0x20 || (protocolLevel === 4 && head[1] !== 0x02) || size > 127) {
      return fail(`unexpected packet 0x${(head[0] ?? 0).toString(16)}`)
    }
    if (head.length < 2 + size) return
    if (head[3] !== 0) return fail(`CONNACK return code ${head[3]}`)
    acked = true
    done = true
    clearTimeout(timer)
    sockets[i] = s
    finishOne(true)
  })
  s.on('error', (err) => {
    if (!done) fail(err.message)
  })
  s.on('close', () => {
    if (!done) fail('closed before CONNACK')
    else if (acked && !closing) {
      lost++
      sockets[i] = undefined
    }
  })
}

function pump(): void {
  while (inFlight < concurrency && next < total) open(next++)
}

// One ticker pings 1/keepalive of the sockets each second: every socket once per keepalive period.
const ticker = setInterval(() => {
  const slot = Math.floor((performance.now() - t0) / 1000) % keepaliveSec
  for (let i = slot; i < total; i += keepaliveSec) sockets[i]?.write(PINGREQ)
}, 1000)

async function closeAll(): Promise<void> {
  closing = true
  clearInterval(ticker)
  const closes: Array<Promise<void>> = []
  for (const s of sockets) {
    if (s === undefined || s.destroyed) continue
    closes.push(new Promise<void>((resolve) => s.once('close', () => resolve())))
    s.end(DISCONNECT)
  }
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref())
  await Promise.race([Promise.all(closes), deadline])
  for (const s of sockets) s?.destroy()
  send({ type: 'closed', lost })
}

process.on('message', (msg: ParentToDriver) => {
  if (msg.type === 'close') {
    void closeAll().then(() => process.disconnect())
  } else if (msg.type === 'status') {
    send({ type: 'status', open: sockets.filter((s) => s !== undefined && !s.destroyed).length, lost })
  }
})
process.on('disconnect', () => {
  clearInterval(ticker)
  for (const s of sockets) s?.destroy()
})

if (total === 0) {
  reported = true
  send({ type: 'connected', connected: 0, failed: 0, connectMs: 0 })
}
pump()
