// The admin endpoint: loopback HTTP serving /healthz, /status and /metrics.
// It has no authentication, which is why the config refuses a non-loopback
// host. Read-only: nothing here changes the agent.
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
      server.once('error', reject)
      server.listen(this.#opts.port, this.#opts.host, () => {
        server.off('error', reject)
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
  res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body) + '\n')
}

function renewGateway(method: string | undefined, handlers: AdminHandlers, res: import('node:http').ServerResponse, logger: Logger): void {
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
