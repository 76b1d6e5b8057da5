// Node-RED 4 inside the agent's process. The `node-red` package is imported
// only in start(), so an agent with nodeRed.enabled false never loads it. Its
// editor and admin API listen on their own HTTP server (loopback by default);
// state lives in <dataDir>/node-red (state.ts); flows reach the local broker
// through the edge nodes' narrow API (edge-api.ts), never a TCP hop.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { loadAddonModule } from './addon.js'
import { createEdgeApi, type EdgeCounters, type EdgeLink } from './edge-api.js'
import { NodeRedError } from './errors.js'
import { buildSettings } from './settings.js'
import { NodeRedState } from './state.js'

export interface NodeRedOptions {
  readonly host: string
  readonly port: number
  readonly httpNodeRoot: string
  readonly editor: boolean
  readonly logLevel: string
  readonly maxPublishRatePerSec: number
  readonly maxPayloadBytes: number
  readonly dataDir: string
  readonly link: EdgeLink
  readonly logger: Logger
}

export interface NodeRedStatus {
  readonly url: string | null
  readonly users: number
  readonly edge: Readonly<EdgeCounters>
}

type Handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void

/** The part of node-red's module API the agent uses. */
interface RedModule {
  init(server: Server, settings: Record<string, unknown>): void
  start(): Promise<void>
  stop(): Promise<void>
  readonly httpAdmin: Handler
  readonly httpNode: Handler
}

export interface Bcrypt {
  hash(password: string, rounds: number): Promise<string>
  compare(password: string, hash: string): Promise<boolean>
}

/** Where the CLI finds the running Node-RED: <dataDir>/node-red/cli.json (0600). */
export interface CliEndpoint {
  readonly url: string
  readonly token: string
}

export class NodeRed {
  readonly name = 'node-red'
  readonly #o: NodeRedOptions
  readonly #log: Logger
  readonly #state: NodeRedState
  readonly #counters: EdgeCounters
  readonly #api: ReturnType<typeof createEdgeApi>['api']
  #red: RedModule | undefined
  #server: Server | undefined
  #url: string | null = null
  #users = 0
  #stopping: Promise<void> | undefined

  constructor(o: NodeRedOptions) {
    this.#o = o
    this.#log = o.logger.child({ component: 'node-red' })
    this.#state = new NodeRedState(o.dataDir)
    const { api, counters } = createEdgeApi({
      link: o.link,
      maxRatePerSec: o.maxPublishRatePerSec,
      maxPayloadBytes: o.maxPayloadBytes,
      logger: this.#log,
    })
    this.#api = api
    this.#counters = counters
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#red !== undefined) return
    const red = await loadAddonModule<RedModule>('node-red')
    signal.throwIfAborted()
    await this.#state.ensureDir()
    const [secret, users] = await Promise.all([this.#state.credentialSecret(), this.#state.users()])
    const token = this.#state.newCliToken()
    this.#users = users.length
    const bcrypt = await loadAddonModule<Bcrypt>('bcryptjs')
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.#route(red, req, res)
    const server = createServer(handler)
    this.#server = server
    const settings = buildSettings(
      {
        userDir: this.#state.dir,
        nodesDir: join(import.meta.dirname, 'nodes'),
        credentialSecret: secret,
        httpNodeRoot: this.#o.httpNodeRoot,
        editor: this.#o.editor,
        logLevel: this.#o.logLevel,
        logger: this.#log,
        edgeApi: this.#api,
        users: () => this.#state.users(),
        verifyPassword: (password, hash) => bcrypt.compare(password, hash),
        cliToken: token,
      },
      users.length > 0,
    )
    try {
      red.init(server, settings)
      this.#red = red
      await red.start()
      signal.throwIfAborted()
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(this.#o.port, this.#o.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (err) {
      await this.stop()
      if (err instanceof NodeRedError) throw err
      throw new NodeRedError(
        'EDGE_ERR_NODERED_START_FAILED',
        `node-red did not start: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      )
    }
    const port = (server.address() as AddressInfo).port
    this.#url = `http://${urlHost(this.#o.host)}:${port}`
    const endpoint: CliEndpoint = { url: this.#url, token }
    await writeFile(this.#state.endpointFile, JSON.stringify(endpoint) + '\n', { mode: 0o600 })
    this.#log.info(
      {
        url: this.#url,
        host: this.#o.host,
        port,
        users: users.length,
        editor: this.#o.editor && users.length > 0,
        httpNodeRoot: this.#o.httpNodeRoot || null,
      },
      'node-red started',
    )
    if (users.length === 0 && this.#o.editor)
      this.#log.warn({ fix: 'edge-agent nodered passwd USER' }, 'node-red editor off: no admin user')
  }

  #route(red: RedModule, req: IncomingMessage, res: ServerResponse): void {
    const notFound = (err?: unknown): void => {
      if (err !== undefined) this.#log.warn({ err, url: req.url }, 'node-red http request failed')
      if (res.headersSent) return void res.end()
      res.statusCode = err === undefined ? 404 : 500
      res.end()
    }
    const root = this.#o.httpNodeRoot
    const url = req.url ?? '/'
    if (root !== '' && (url === root || url.startsWith(`${root}/`) || url.startsWith(`${root}?`))) {
      req.url = url.slice(root.length) || '/'
      if (req.url.startsWith('?')) req.url = `/${req.url}`
      red.httpNode(req, res, notFound)
      return
    }
    red.httpAdmin(req, res, notFound)
  }

  status(): NodeRedStatus {
    return { url: this.#url, users: this.#users, edge: { ...this.#counters } }
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    const red = this.#red
    const server = this.#server
    if (red !== undefined) {
      try {
        await red.stop()
      } catch (err) {
        this.#log.warn({ err }, 'node-red stop failed')
      }
    }
    if (server !== undefined) {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
    await rm(this.#state.endpointFile, { force: true })
    this.#url = null
  }
}

function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1'
  if (host === '::') return '[::1]'
  return host.includes(':') ? `[${host}]` : host
}
