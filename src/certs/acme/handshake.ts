// Tries a candidate client certificate against an upstream before it is
// promoted: a real TLS handshake, then an MQTT CONNECT under a throwaway
// client id. With TLS 1.3 a server refuses a client certificate only after
// the client's handshake is done, so the answer to CONNECT (any CONNACK) is
// what proves the certificate was accepted; the throwaway session never
// takes over the bridge's own.
import { connect } from 'node:tls'
import { randomBytes } from 'node:crypto'

export interface HandshakeTarget {
  readonly host: string
  readonly port: number
  readonly ca?: string | Buffer | undefined
  /** SNI and name checked; undefined: host. */
  readonly serverName?: string | undefined
}

export interface HandshakeResult {
  readonly ok: boolean
  readonly error?: string | undefined
}

export function tryClientCertificate(
  t: HandshakeTarget,
  material: { cert: string; key: string },
  timeoutMs: number,
): Promise<HandshakeResult> {
  return new Promise<HandshakeResult>((resolve) => {
    const servername = t.serverName ?? t.host
    const ip = /^[\d.]+$/.test(servername) || servername.includes(':')
    const socket = connect({
      host: t.host,
      port: t.port,
      cert: material.cert,
      key: material.key,
      ...(t.ca === undefined ? {} : { ca: t.ca }),
      ...(ip ? {} : { servername }),
      checkServerIdentity: ip ? () => undefined : undefined,
      rejectUnauthorized: true,
    })
    let done = false
    const finish = (r: HandshakeResult): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.removeAllListeners()
      socket.on('error', () => undefined)
      socket.destroy()
      resolve(r)
    }
    const timer = setTimeout(() => finish({ ok: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs)
    socket.once('secureConnect', () =>
      socket.write(connectPacket(`edge-agent-certcheck-${randomBytes(6).toString('hex')}`)),
    )
    socket.once('data', () => finish({ ok: true }))
    socket.once('error', (err) => finish({ ok: false, error: err.message }))
    socket.once('close', () =>
      finish({ ok: false, error: 'connection closed by the upstream before CONNACK (certificate refused?)' }),
    )
  })
}

/** MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, no credentials. */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8')
  const varHeader = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x0a])
  const payload = Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id])
  const remaining = varHeader.length + payload.length
  return Buffer.concat([Buffer.from([0x10, remaining]), varHeader, payload])
}
