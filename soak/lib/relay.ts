// The link to the upstream, under the soak's control: a TCP relay on loopback
// with three modes. 'pass' pipes every connection to the upstream; 'refuse'
// closes the listening socket, so connects fail with ECONNREFUSED (a backhaul
// that is down); 'blackhole' accepts TCP and never answers nor forwards (a link
// that half works). Changing mode resets the connections open now.
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { resetSocket } from '../../test/helpers/reset-socket.js'

export type RelayMode = 'pass' | 'refuse' | 'blackhole'

export class Relay {
  readonly #open = new Set<Socket>()
  #server: Server | undefined
  #mode: RelayMode = 'refuse'
  #port = 0
  #accepted = 0

  constructor(
    private readonly targetPort: number,
    private readonly targetHost = '127.0.0.1',
  ) {}

  get port(): number {
    return this.#port
  }

  get mode(): RelayMode {
    return this.#mode
  }

  get accepted(): number {
    return this.#accepted
  }

  /** Binds a free port once (in 'pass' mode), so the port stays the same for the run. */
  async start(): Promise<void> {
    await this.#listen(0)
    this.#mode = 'pass'
  }

  async set(mode: RelayMode): Promise<void> {
    if (mode === this.#mode) return
    this.#mode = mode
    for (const s of [...this.#open]) resetSocket(s)
    if (mode === 'refuse') await this.#close()
    else if (this.#server === undefined) await this.#listen(this.#port)
  }

  async stop(): Promise<void> {
    for (const s of [...this.#open]) resetSocket(s)
    await this.#close()
  }

  async #listen(port: number): Promise<void> {
    const server = createServer((client) => this.#accept(client))
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    const a = server.address()
    this.#port = typeof a === 'object' && a !== null ? a.port : 0
    this.#server = server
  }

  async #close(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()))
  }

  #accept(client: Socket): void {
    this.#accepted++
    this.#track(client)
    if (this.#mode === 'blackhole') {
      client.on('data', () => undefined)
      return
    }
    const upstream = connect({ host: this.targetHost, port: this.targetPort })
    this.#track(upstream)
    const both = [client, upstream]
    for (const s of both) s.on('close', () => both.forEach((x) => x.destroy()))
    client.pipe(upstream)
    upstream.pipe(client)
  }

  #track(s: Socket): void {
    s.setNoDelay(true)
    this.#open.add(s)
    s.on('error', () => undefined)
    s.on('close', () => this.#open.delete(s))
  }
}
