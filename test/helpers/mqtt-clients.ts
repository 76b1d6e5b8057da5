// Real MQTT clients for integration tests: mqtt.js, the mosquitto_* command
// line clients, and a raw TCP socket for bytes no client library would send.
import { connect as netConnect, type Socket } from 'node:net'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { Scope } from './scope.js'
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt'
import { withTimeout } from './wait.js'

/** Connects with mqtt.js (no auto-reconnect), closed after the test. */
export async function client(t: Scope, url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await withTimeout(
    mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts }),
    10_000,
    `mqtt connect to ${url}`,
  )
  c.on('error', () => undefined)
  t.after(() => c.endAsync(true).catch(() => undefined))
  return c
}

/**
 * Connects with mqtt.js and resolves with the client and the CONNACK it got (session present, MQTT 5
 * properties), closed after the test. `onClient` runs before the CONNACK can arrive, for listeners that must
 * not miss what follows it in the same read.
 */
export async function clientWithConnack(
  t: Scope,
  url: string,
  opts: IClientOptions,
  onClient?: (c: MqttClient) => void,
): Promise<[MqttClient, IConnackPacket]> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts })
  c.on('error', () => undefined)
  onClient?.(c)
  t.after(() => c.endAsync(true).catch(() => undefined))
  const connack = await withTimeout(
    new Promise<IConnackPacket>((resolve, reject) => {
      c.once('connect', resolve)
      c.once('error', reject)
    }),
    10_000,
    `CONNACK from ${url}`,
  )
  return [c, connack]
}

/** Connection attempt expected to fail: resolves with the error mqtt.js reports. */
export async function refusedConnect(url: string, opts: IClientOptions = {}): Promise<Error & { code?: number }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts })
  try {
    return await withTimeout(
      new Promise<Error & { code?: number }>((resolve, reject) => {
        c.once('connect', () => reject(new Error('connection was accepted')))
        c.once('error', (err) => resolve(err as Error & { code?: number }))
        c.once('close', () => resolve(Object.assign(new Error('closed before CONNACK'), { code: -1 })))
      }),
      10_000,
      'the connection to be refused',
    )
  } finally {
    c.end(true)
  }
}

export interface RawConnection {
  readonly socket: Socket
  /** Every byte received so far. */
  received(): Buffer
  /** Resolves once the server closed the connection (or reset it). */
  readonly closed: Promise<void>
  /** Resolves once at least n bytes arrived. */
  waitForBytes(n: number, ms?: number): Promise<Buffer>
}

export async function rawConnection(t: Scope, port: number): Promise<RawConnection> {
  const socket = netConnect({ host: '127.0.0.1', port })
  await withTimeout(once(socket, 'connect'), 5_000, 'raw TCP connect')
  const chunks: Buffer[] = []
  const listeners: (() => void)[] = []
  socket.on('data', (d: Buffer) => {
    chunks.push(d)
    for (const l of listeners.splice(0)) l()
  })
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  t.after(() => socket.destroy())
  const received = () => Buffer.concat(chunks)
  return {
    socket,
    received,
    closed,
    waitForBytes(n, ms = 5_000) {
      return withTimeout(
        new Promise<Buffer>((resolve, reject) => {
          const check = () => {
            if (received().length >= n) resolve(received())
            else if (socket.destroyed) reject(new Error(`closed after ${received().length} bytes`))
            else listeners.push(check)
          }
          socket.once('close', check)
          check()
        }),
        ms,
        `${n} bytes from the broker`,
      )
    },
  }
}

/** Runs a mosquitto_* client to completion. */
export async function mosquittoClient(
  bin: 'mosquitto_pub' | 'mosquitto_sub',
  args: string[],
  ms = 15_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  try {
    const [code] = (await withTimeout(once(proc, 'close'), ms, `${bin} ${args.join(' ')}`)) as [number | null]
    return { code, stdout, stderr }
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  }
}

// ---- byte builders for hand-made packets ----------------------------------

export function remainingLength(n: number): Buffer {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Buffer.from(out)
}

export function mqttString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s
  const len = Buffer.alloc(2)
  len.writeUInt16BE(b.length)
  return Buffer.concat([len, b])
}

export function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body])
}

export interface RawConnectOptions {
  protocolName?: string
  level?: number
  flags?: number
  keepalive?: number
  clientId?: string | Buffer
  will?: { topic: string | Buffer; payload: Buffer }
  username?: string | Buffer
  password?: Buffer
}

/** CONNECT; flags are derived from the fields unless given explicitly. */
export function connectPacket(o: RawConnectOptions = {}): Buffer {
  let flags = o.flags ?? 0x02 // clean session
  if (o.flags === undefined) {
    if (o.will) flags |= 0x04
    if (o.username !== undefined) flags |= 0x80
    if (o.password !== undefined) flags |= 0x40
  }
  const ka = Buffer.alloc(2)
  ka.writeUInt16BE(o.keepalive ?? 60)
  const parts = [
    mqttString(o.protocolName ?? 'MQTT'),
    Buffer.from([o.level ?? 4, flags]),
    ka,
    mqttString(o.clientId ?? 'raw-client'),
  ]
  if (o.will) parts.push(mqttString(o.will.topic), mqttString(o.will.payload))
  if (o.username !== undefined) parts.push(mqttString(o.username))
  if (o.password !== undefined) parts.push(mqttString(o.password))
  return packet(0x10, Buffer.concat(parts))
}

export function publishPacket(topic: string | Buffer, payload: Buffer, qos = 0, messageId = 1, flags = 0): Buffer {
  const id = Buffer.alloc(2)
  id.writeUInt16BE(messageId)
  const body = Buffer.concat([mqttString(topic), ...(qos > 0 ? [id] : []), payload])
  return packet(0x30 | (qos << 1) | flags, body)
}

export const CONNACK_ACCEPTED = Buffer.from([0x20, 0x02, 0x00, 0x00])
