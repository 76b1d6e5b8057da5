// Connection adapter of the packet guard: puts a PacketGuard between a
// connection and aedes, and closes the connection on a violation.
import type { Duplex } from 'node:stream'
import type { GuardViolation, PacketGuard } from './packet-guard.js'
import { MQTT5_CONNECT } from './guard-connect.js'

export interface GuardConnectionOptions {
  /**
   * After a CONNACK has been written and `end()` called, destroy the connection
   * if it has not finished within this many milliseconds (a peer that does not
   * read, or a WebSocket close handshake the peer never answers). Default 1000.
   */
  readonly closeTimeoutMs?: number
  /**
   * V5-STAND-DOWN (h/v5broker; replaced by the MQTT 5 packet guard at merge):
   * true = an MQTT 5 CONNECT stands the guard down for the connection (aedes 2
   * checks MQTT 5 itself, maximumPacketSize bounds the packets); false = it is
   * refused with an MQTT 5 CONNACK 0x84 (Unsupported Protocol Version);
   * undefined = refused with CONNACK 0x01 like any unsupported level.
   */
  readonly mqtt5?: boolean
}

interface GuardedState {
  readonly guard: PacketGuard
  readonly read: Duplex['read']
  readonly onViolation: (violation: GuardViolation) => void
  readonly closeTimeoutMs: number
  readonly mqtt5: boolean | undefined
}

const kGuarded = Symbol('edge-agent.packetGuard')
type GuardedConnection = Duplex & { [kGuarded]?: GuardedState }

/**
 * Puts `guard` between `conn` and whoever calls `conn.read()` (aedes calls
 * `conn.read(null)` on each 'readable'; see aedes lib/client.js). Install it
 * before `broker.handle(conn)`.
 *
 * Why wrap `read` rather than pipe through a Transform: a Transform is two more
 * stream states with their own buffers (up to a highWaterMark each way) and
 * listeners per connection, and it turns one read into a read, a push and a
 * second read. With thousands of mostly idle devices that is real memory; the
 * wrapper adds one small record per connection, shares a single `read`
 * function across all of them, and hands aedes the very Buffer the socket
 * produced (or a zero-copy subarray of it). It works for anything whose
 * bytes come out through `read()`: net.Socket, tls.TLSSocket (their own `read`
 * is kept and called) and the Duplex from ws's `createWebSocketStream`.
 * It does not guard 'data' listeners, which Node emits from inside the original
 * `read` with the unguarded chunk: aedes uses none, and a connection already
 * flowing is refused.
 *
 * On a violation the wrapped read returns the bytes before the invalid packet
 * (or null), calls `onViolation` (which must not throw; it runs while the
 * connection can still report its remote address), then closes: if the
 * violation carries a CONNACK return code it writes `20 02 00 <code>`, ends the
 * connection and destroys it once that has flushed ('finish') or after
 * `closeTimeoutMs`; otherwise it destroys at once. It stops reading in the
 * meantime, so a peer that keeps sending meets TCP back-pressure instead of
 * more buffering.
 */
export function guardConnection(
  conn: Duplex,
  guard: PacketGuard,
  onViolation: (violation: GuardViolation) => void,
  options: GuardConnectionOptions = {},
): void {
  const c = conn as GuardedConnection
  if (c[kGuarded] !== undefined) throw new TypeError('connection is already guarded')
  if (c.readableObjectMode || c.readableEncoding !== null) {
    throw new TypeError('connection must yield Buffers: not in object mode, no encoding set')
  }
  if (c.readableFlowing === true) throw new TypeError('connection is already flowing; its data would bypass the guard')
  c[kGuarded] = {
    guard,

    read: c.read,
    onViolation,
    closeTimeoutMs: options.closeTimeoutMs ?? 1000,
    mqtt5: options.mqtt5,
  }
  c.read = guardedRead
}

/** The guard installed on `conn` by guardConnection, e.g. to call `authenticated()` from aedes hooks. */
export function connectionGuard(conn: Duplex): PacketGuard | undefined {
  return (conn as GuardedConnection)[kGuarded]?.guard
}

function guardedRead(this: GuardedConnection, size?: number): Buffer | null {
  const state = this[kGuarded]
  if (state === undefined) return null
  // closed: leave the rest unread so the socket stops pulling from the kernel
  if (state.guard.violation !== undefined) return null
  const data: unknown = state.read.call(this, size)
  if (data === null) return null
  // guardConnection refused object mode and encodings, so this is a Buffer
  const chunk = data as Buffer
  const result = state.guard.feed(chunk)
  if (result.violation === undefined) return chunk
  if (result.violation.detail === MQTT5_CONNECT && state.mqtt5 === true) {
    // V5-STAND-DOWN: the bytes before this chunk went through already; the rest is aedes' alone
    this.read = state.read
    return chunk
  }
  try {
    state.onViolation(result.violation)
  } finally {
    closeAfterViolation(this, state, result.violation)
  }
  return result.pass === 0 ? null : chunk.subarray(0, result.pass)
}

function closeAfterViolation(conn: Duplex, state: GuardedState, violation: GuardViolation): void {
  // an EPIPE from the CONNACK write must not become an unhandled 'error'
  conn.on('error', noop)
  const v5 = violation.detail === MQTT5_CONNECT && state.mqtt5 === false
  const code = v5 ? 0x84 : violation.connackReturnCode
  if (code === undefined || !conn.writable) {
    conn.destroy()
    return
  }
  // V5-STAND-DOWN: a refused MQTT 5 CONNECT gets an MQTT 5 CONNACK (reason code, empty properties)
  conn.write(Buffer.from(v5 ? [0x20, 0x03, 0x00, 0x84, 0x00] : [0x20, 0x02, 0x00, code]))
  conn.end()
  const timer = setTimeout(destroy, state.closeTimeoutMs, conn)
  timer.unref()
  conn.once('finish', () => {
    clearTimeout(timer)
    conn.destroy()
  })
}

function destroy(conn: Duplex): void {
  conn.destroy()
}

function noop(): void {}
