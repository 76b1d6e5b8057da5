// Opens the byte stream to an upstream: mqtt (TCP), mqtts (TLS), ws, wss.
// Only ever outbound: a lower Purdue level never listens for the upper one.
// TLS material is read from files at every connection attempt, so a
// rotated client certificate is picked up by the next reconnect.
import { readFile } from 'node:fs/promises'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import type { Duplex } from 'node:stream'
import { BridgeError } from './errors.js'

export interface TlsFiles {
  /** PEM bundle of the CAs to trust; default: Node's bundled roots. */
  readonly caFile?: string | undefined
  /** Client certificate (PEM) presented to the upstream. */
  readonly certFile?: string | undefined
  /** Private key of certFile (PEM). */
  readonly keyFile?: string | undefined
  /** SNI / name checked in the server certificate; default: the URL's host. */
  readonly serverName?: string | undefined
}

/** In-memory TLS material (e.g. the gateway's own certificate from src/certs), preferred over files. */
export interface TlsMaterial {
  readonly ca?: string | Buffer | undefined
  readonly cert?: string | Buffer | undefined
  readonly key?: string | Buffer | undefined
}

export interface TransportOptions {
  readonly url: URL
  readonly connectTimeoutMs: number
  readonly tls?: TlsFiles | undefined
  readonly material?: (() => TlsMaterial | undefined) | undefined
  readonly signal?: AbortSignal | undefined
}

export function defaultPort(protocol: string): number {
  switch (protocol) {
    case 'mqtts:':
      return 8883
    case 'ws:':
      return 80
    case 'wss:':
      return 443
    default:
      return 1883
  }
}

export function hostPort(url: URL): { host: string; port: number } {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  return { host, port: url.port === '' ? defaultPort(url.protocol) : Number(url.port) }
}

async function tlsOptions(opts: TransportOptions): Promise<ConnectionOptions> {
  const { host } = hostPort(opts.url)
  const files = opts.tls ?? {}
  const read = async (path: string | undefined, what: string): Promise<Buffer | undefined> => {
    if (path === undefined) return undefined
    try {
      return await readFile(path)
    } catch (err) {
      throw new BridgeError('EDGE_ERR_BRIDGE_TLS_FILES', `cannot read ${what} ${path}`, { cause: err })
    }
  }
  const material = opts.material?.()
  const ca = material?.ca ?? (await read(files.caFile, 'CA file'))
  const cert = material?.cert ?? (await read(files.certFile, 'certificate file'))
  const key = material?.key ?? (await read(files.keyFile, 'key file'))
  const servername = files.serverName ?? host
  return {
    host,
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    // SNI must not be an IP address (RFC 6066 §3); the check still applies.
    ...(isIpLiteral(servername) ? {} : { servername }),
    rejectUnauthorized: true,
  }
}

function isIpLiteral(h: string): boolean {
  return /^[\d.]+$/.test(h) || h.includes(':')
}

/** Opens the stream; resolves once the transport (TCP, TLS handshake, WebSocket upgrade) is up. */
export async function openTransport(opts: TransportOptions): Promise<Duplex> {
  const { url } = opts
  const { host, port } = hostPort(url)
  switch (url.protocol) {
    case 'mqtt:':
      return settle(netConnect({ host, port, noDelay: true }), 'connect', opts)
    case 'mqtts:': {
      const o = await tlsOptions(opts)
      return settle(tlsConnect({ ...o, port }), 'secureConnect', opts)
    }
    case 'ws:':
    case 'wss:': {
      const { WebSocket, createWebSocketStream } = await import('ws')
      const o = url.protocol === 'wss:' ? await tlsOptions(opts) : {}
      const ws = new WebSocket(url, ['mqtt'], {
        ...o,
        handshakeTimeout: opts.connectTimeoutMs,
        perMessageDeflate: false,
      })
      await new Promise<void>((resolve, reject) => {
        const abort = (): void => {
          ws.terminate()
          reject(new BridgeError('EDGE_ERR_BRIDGE_STOPPED', 'connect aborted'))
        }
        opts.signal?.addEventListener('abort', abort, { once: true })
        ws.once('open', () => {
          opts.signal?.removeEventListener('abort', abort)
          resolve()
        })
        ws.once('error', (err) => {
          opts.signal?.removeEventListener('abort', abort)
          reject(
            new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', `websocket connect failed: ${err.message}`, {
              cause: err,
            }),
          )
        })
      })
      const stream = createWebSocketStream(ws)
      return stream
    }
    default:
      throw new BridgeError('EDGE_ERR_BRIDGE_RULE_INVALID', `unsupported URL scheme ${url.protocol}`, { path: ['url'] })
  }
}

function settle(socket: Socket, event: 'connect' | 'secureConnect', opts: TransportOptions): Promise<Duplex> {
  return new Promise<Duplex>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`no connection within ${opts.connectTimeoutMs} ms`)),
      opts.connectTimeoutMs,
    )
    const onAbort = (): void => fail(new BridgeError('EDGE_ERR_BRIDGE_STOPPED', 'connect aborted'))
    const cleanup = (): void => {
      clearTimeout(timer)
      socket.off('error', fail)
      opts.signal?.removeEventListener('abort', onAbort)
    }
    function fail(err: Error): void {
      cleanup()
      socket.destroy()
      reject(
        err instanceof BridgeError
          ? err
          : new BridgeError('EDGE_ERR_BRIDGE_CONNECTION_LOST', err.message, { cause: err }),
      )
    }
    socket.once('error', fail)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    socket.once(event, () => {
      cleanup()
      socket.setNoDelay(true)
      resolve(socket)
    })
  })
}

/**
 * Cheap reachability check while waiting to reconnect: a bare TCP connect,
 * closed at once. Lets the bridge reconnect within a probe interval of the
 * upstream coming back instead of waiting out a long backoff delay.
 */
export function probe(url: URL, timeoutMs: number): Promise<boolean> {
  const { host, port } = hostPort(url)
  return new Promise<boolean>((resolve) => {
    const s = netConnect({ host, port })
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      s.removeAllListeners()
      s.on('error', () => undefined)
      s.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
}
