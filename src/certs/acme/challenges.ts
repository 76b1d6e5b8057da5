// The three ways to prove control of an identifier from inside a plant
// segment: http-01 and tls-alpn-01 served by the agent itself, dns-01 through
// the operator's hook command. A responder listens only while an order is
// pending (open() before the challenges, close() after).
import { execFile } from 'node:child_process'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import {
  createServer as createTlsServer,
  createSecureContext,
  type SecureContext,
  type Server as TlsServer,
} from 'node:tls'
import type { AddressInfo } from 'node:net'
import * as acme from 'acme-client'
import { AcmeError } from './errors.js'

export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01'

/** What acme-client hands to challengeCreateFn / challengeRemoveFn. */
export interface ChallengeTask {
  readonly identifier: string
  readonly token: string
  /** The key authorization; for dns-01 already the TXT value (digest). */
  readonly keyAuthorization: string
  readonly authz: acme.Authorization
}

export interface ChallengeResponder {
  readonly type: ChallengeType
  open(): Promise<void>
  present(task: ChallengeTask): Promise<void>
  cleanup(task: ChallengeTask): Promise<void>
  close(): Promise<void>
}

/** http-01: GET /.well-known/acme-challenge/<token> answered from memory. */
export class Http01Responder implements ChallengeResponder {
  readonly type = 'http-01'
  readonly #host: string
  readonly #port: number
  readonly #tokens = new Map<string, string>()
  #server: HttpServer | undefined

  constructor(o: { host: string; port: number }) {
    this.#host = o.host
    this.#port = o.port
  }

  get port(): number | undefined {
    return (this.#server?.address() as AddressInfo | null)?.port
  }

  async open(): Promise<void> {
    if (this.#server !== undefined) return
    const server = createHttpServer((req, res) => {
      const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')
      const body = m === null ? undefined : this.#tokens.get(m[1] as string)
      if (req.method !== 'GET' || body === undefined) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body)
    })
    this.#server = server
    await listen(server, this.#host, this.#port, 'http-01')
  }

  async present(t: ChallengeTask): Promise<void> {
    this.#tokens.set(t.token, t.keyAuthorization)
  }

  async cleanup(t: ChallengeTask): Promise<void> {
    this.#tokens.delete(t.token)
  }

  async close(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    this.#tokens.clear()
    if (s !== undefined) await closeServer(s)
  }
}

/**
 * tls-alpn-01 (RFC 8737): a self-signed certificate with the acmeIdentifier
 * extension, per SNI name, ALPN acme-tls/1 only.
 */
export class TlsAlpn01Responder implements ChallengeResponder {
  readonly type = 'tls-alpn-01'
  readonly #host: string
  readonly #port: number
  readonly #contexts = new Map<string, SecureContext>()
  #server: TlsServer | undefined

  constructor(o: { host: string; port: number }) {
    this.#host = o.host
    this.#port = o.port
  }

  async open(): Promise<void> {
    if (this.#server !== undefined) return
    const server = createTlsServer({
      ALPNProtocols: ['acme-tls/1'],
      SNICallback: (name, cb) => {
        const ctx = this.#contexts.get(name.toLowerCase())
        if (ctx === undefined) cb(new Error(`no challenge for ${name}`))
        else cb(null, ctx)
      },
    })
    // The validation server closes the connection after the handshake.
    server.on('secureConnection', (socket) => socket.end())
    server.on('tlsClientError', () => undefined)
    this.#server = server
    await listen(server, this.#host, this.#port, 'tls-alpn-01')
  }

  async present(t: ChallengeTask): Promise<void> {
    const [key, cert] = await acme.crypto.createAlpnCertificate(t.authz, t.keyAuthorization)
    this.#contexts.set(t.identifier.toLowerCase(), createSecureContext({ key, cert }))
  }

  async cleanup(t: ChallengeTask): Promise<void> {
    this.#contexts.delete(t.identifier.toLowerCase())
  }

  async close(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    this.#contexts.clear()
    if (s !== undefined) await closeServer(s)
  }
}

/**
 * dns-01 through the operator's hook: `<command> present <name> <value>` and
 * `<command> cleanup <name> <value>`, name = _acme-challenge.<identifier>.
 * `present` must return once the record is published (exit 0); no shell.
 */
export class Dns01HookResponder implements ChallengeResponder {
  readonly type = 'dns-01'
  readonly #command: string
  readonly #timeoutMs: number

  constructor(o: { command: string; timeoutMs: number }) {
    this.#command = o.command
    this.#timeoutMs = o.timeoutMs
  }

  async open(): Promise<void> {}

  present(t: ChallengeTask): Promise<void> {
    return this.#run('present', t)
  }

  cleanup(t: ChallengeTask): Promise<void> {
    return this.#run('cleanup', t)
  }

  async close(): Promise<void> {}

  #run(action: 'present' | 'cleanup', t: ChallengeTask): Promise<void> {
    const name = `_acme-challenge.${t.identifier.replace(/^\*\./, '')}`
    return new Promise<void>((resolve, reject) => {
      execFile(
        this.#command,
        [action, name, t.keyAuthorization],
        { timeout: this.#timeoutMs, killSignal: 'SIGKILL' },
        (err, _stdout, stderr) => {
          if (err === null) return resolve()
          const why = err.killed ? `timed out after ${this.#timeoutMs} ms` : `exit ${String(err.code ?? err.signal)}`
          const detail = stderr.trim().slice(0, 500)
          reject(
            new AcmeError(
              'EDGE_ERR_ACME_CHALLENGE_FAILED',
              `dns-01 hook ${action} ${name} failed: ${why}${detail === '' ? '' : `: ${detail}`}`,
              { cause: err },
            ),
          )
        },
      )
    })
  }
}

function listen(server: HttpServer | TlsServer, host: string, port: number, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(
        new AcmeError(
          'EDGE_ERR_ACME_CHALLENGE_FAILED',
          `cannot listen for ${what} on ${host}:${port}: ${err.message}`,
          { cause: err },
        ),
      )
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

function closeServer(server: HttpServer | TlsServer): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    if ('closeAllConnections' in server) server.closeAllConnections()
  })
}
