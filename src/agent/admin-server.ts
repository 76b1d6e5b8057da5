// The admin endpoint: loopback HTTP serving /healthz, /status and /metrics.
// It has no authentication, which is why the config refuses a non-loopback
// host. Read-only, but for POST /reload, which makes the agent read its own
// config file again (what the request could change is nothing the file's
// owner did not write; the same as SIGHUP).
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'

export interface AdminHandlers {
  /** true when every component is up and healthy. */
  healthy(): { ok: boolean; detail: Record<string, unknown> }
  status(): unknown
  metrics(): string
  /** POST /certs/renew-gateway: renew the gateway certificate now; resolves with the outcome. */
  renewGateway?(): Promise<unknown>
  /** Re-reads and applies the config; absent when the agent was built without one (tests). */
  reload?: () => Promise<{ ok: boolean } & Record<string, unknown>>
}

/** The admin endpoint could not listen (port in use, address missing). */
export class AdminServerError extends Error {
  readonly code = 'EDGE_ERR_ADMIN_LISTEN_FAILED'
  override readonly name = 'AdminServerError'
}

export interface AdminServerOptions {
  readonly host: string
  readonly port: number
  readonly logger: Logger
  readonly handlers: AdminHandlers
}

export class AdminServer {
  readonly name = 'admin'
  readonly #opts: AdminServerOptions
  #server: Server | undefined
  #port = 0

  constructor(opts: AdminServerOptions) {
    this.#opts = opts
  }

  get port(): number {
    return this.#port
  }

  async start(): Promise<void> {
    if (this.#server) return
    const { handlers, logger } = this.#opts
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://admin')
      if (url.pathname === '/certs/renew-gateway') {
        renewGateway(req.method, handlers, res, logger)
        return
      }
      if (url.pathname === '/reload') {
        if (req.method !== 'POST' || handlers.reload === undefined) {
          res.writeHead(405, { allow: handlers.reload === undefined ? '' : 'POST' }).end()
          return
        }
        handlers.reload().then(
          (r) => sendJson(res, r.ok ? 200 : 422, r),
          (err: unknown) => {
            logger.error({ err }, 'reload failed')
            sendJson(res, 500, { ok: false, error: err instanceof Error ? err.message : String(err) })
          },
        )
        return
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end()
        return
      }
      try {
        switch (url.pathname) {
          case '/healthz': {
            const h = handlers.healthy()
            sendJson(res, h.ok ? 200 : 503, { status: h.ok ? 'ok' : 'unhealthy', ...h.detail })
            return
          }
          case '/status':
            sendJson(res, 200, handlers.status())
            return
          case '/metrics':
            res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(handlers.metrics())
            return
          default:
            sendJson(res, 404, { error: 'not found', endpoints: ['/healthz', '/status', '/metrics'] })
        }
      } catch (err) {
        logger.error({ err, path: url.pathname }, 'admin request failed')
        sendJson(res, 500, { error: 'internal error' })
      }
    })
    server.keepAliveTimeout = 5_000
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const { host, port } = this.#opts
        const why =
          err.code === 'EADDRINUSE' ? 'address in use (another agent or program holds it)' : (err.code ?? err.message)
        reject(
          new AdminServerError(
            `admin endpoint http://${host}:${port}: ${why}; change admin.port or set admin.enabled: false`,
            { cause: err },
          ),
        )
      })
      server.listen(this.#opts.port, this.#opts.host, () => {
        server.removeAllListeners('error')
        resolve()
      })
    })
    server.on('error', (err) => logger.error({ err }, 'admin server error'))
    this.#server = server
    this.#port = (server.address() as AddressInfo).port
    logger.info({ host: this.#opts.host, port: this.#port }, 'admin endpoint listening')
  }

  async stop(): Promise<void> {
    const server = this.#server
    if (!server) return
    this.#server = undefined
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}

function sendJson(res: import('node:http').ServerResponse, code: number, body: unknown): void {
  res
    .writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
    .end(JSON.stringify(body) + '\n')
}

function renewGateway(
  method: string | undefined,
  handlers: AdminHandlers,
  res: import('node:http').ServerResponse,
  logger: Logger,
): void {
  if (method !== 'POST') {
    res.writeHead(405, { allow: 'POST' }).end()
    return
  }
  if (handlers.renewGateway === undefined) {
    sendJson(res, 404, { error: 'no gateway certificate: certs.acme is not configured' })
    return
  }
  handlers.renewGateway().then(
    (out) => sendJson(res, 200, out),
    (err: unknown) => {
      logger.error({ err }, 'admin request failed')
      sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) })
    },
  )
}
