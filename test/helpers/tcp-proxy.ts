// A TCP proxy that a test can cut (thin-edge's Proxy idea, in node:net): every
// connection to `port` is piped to the target; cut() resets the connections
// open now, block() also refuses new ones until unblock().
import { connect, createServer, type Socket } from 'node:net'
import { once } from 'node:events'
import type { Scope } from './scope.js'
import { resetSocket } from './reset-socket.js'

export interface TcpProxy {
  readonly port: number
  readonly url: string
  /** Connections accepted so far. */
  readonly accepted: () => number
  /** Client→target bytes of each connection so far (at most the first 1 MiB each), oldest first. */
  readonly recorded: () => Buffer[]
  /** Resets every open connection (both sides see an error / close). */
  cut(): void
  /** Cut, and refuse new connections until unblock(). */
  block(): void
  unblock(): void
  close(): Promise<void>
}

export async function startProxy(t: Scope, targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const open = new Set<Socket>()
  let blocked = false
  let accepted = 0
  const recordings: Buffer[][] = []
  const server = createServer((client) => {
    if (blocked) {
      resetSocket(client)
      return
    }
    accepted++
    const chunks: Buffer[] = []
    recordings.push(chunks)
    let size = 0
    client.on('data', (b: Buffer) => {
      if (size < 1_048_576) chunks.push(b)
      size += b.length
    })
    const upstream = connect({ host: targetHost, port: targetPort })
    for (const s of [client, upstream]) {
      s.setNoDelay(true)
      open.add(s)
      s.on('error', () => undefined)
      s.on('close', () => {
        open.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const cut = (): void => {
    for (const s of [...open]) resetSocket(s)
  }
  const proxy: TcpProxy = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    accepted: () => accepted,
    recorded: () => recordings.map((c) => Buffer.concat(c)),
    cut,
    block() {
      blocked = true
      cut()
    },
    unblock() {
      blocked = false
    },
    async close() {
      cut()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  t.after(() => proxy.close())
  return proxy
}
