// Bare aedes program: the baseline broker, aedes on net.createServer and nothing else.
//
// Spawned by bare-aedes.ts with `node --eval` (no loader), so its RSS is aedes + Node only.
// Writes `listening <port>` on stdout once bound; SIGTERM closes server and broker, exit 0.
//
// For the memory breakdown it can also run as a stripped-down server, to split the cost of
// one connection into its layers (EDGE_BENCH_SERVER_MODE):
//   aedes   (default) aedes.handle(socket)
//   parser  the socket plus one mqtt-packet parser; answers CONNECT with CONNACK, PINGREQ with PINGRESP
//   net     the socket only; answers the first bytes with a raw CONNACK and discards the rest
//   none    a listening server that never accepts anything useful: Node's own floor
// Levers (benchmark variants only):
//   EDGE_BENCH_AEDES_OPTS='{…}'      JSON merged into Aedes.createBroker() options
//   EDGE_BENCH_NODELAY=1             socket.setNoDelay(true) on every accepted connection
//   EDGE_BENCH_NO_NUMBER_CACHE=1     mqtt-packet writeToStream.cacheNumbers = false
import { createServer, type Socket } from 'node:net'

const port = Number(process.env.EDGE_BENCH_PORT ?? '0')
const host = process.env.EDGE_BENCH_HOST ?? '127.0.0.1'
const mode = process.env.EDGE_BENCH_SERVER_MODE ?? 'aedes'
const noDelay = process.env.EDGE_BENCH_NODELAY === '1'

let onConnection: (socket: Socket) => void
let closeBroker: (done: () => void) => void = (done) => done()

if (process.env.EDGE_BENCH_NO_NUMBER_CACHE === '1') {
  const { default: mqttPacket } = await import('mqtt-packet')
  mqttPacket.writeToStream.cacheNumbers = false
}

if (mode === 'aedes') {
  const { Aedes } = await import('aedes')
  const aedesOpts = JSON.parse(process.env.EDGE_BENCH_AEDES_OPTS ?? '{}') as Record<string, unknown>
  const broker = await Aedes.createBroker(aedesOpts)
  broker.on('clientError', () => undefined)
  broker.on('connectionError', () => undefined)
  onConnection = (socket) => {
    if (noDelay) socket.setNoDelay(true)
    broker.handle(socket)
  }
  closeBroker = (done) => broker.close(done)
} else if (mode === 'parser') {
  const { default: mqttPacket } = await import('mqtt-packet')
  onConnection = (socket) => {
    if (noDelay) socket.setNoDelay(true)
    const parser = mqttPacket.parser()
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connect')
        mqttPacket.writeToStream({ cmd: 'connack', returnCode: 0, sessionPresent: false }, socket)
      else if (packet.cmd === 'pingreq') mqttPacket.writeToStream({ cmd: 'pingresp' }, socket)
    })
    parser.on('error', () => socket.destroy())
    socket.on('data', (chunk: Buffer) => parser.parse(chunk))
    socket.on('error', () => undefined)
  }
} else if (mode === 'net') {
  const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00])
  const PINGRESP = Buffer.from([0xd0, 0x00])
  onConnection = (socket) => {
    if (noDelay) socket.setNoDelay(true)
    let acked = false
    socket.on('data', (chunk: Buffer) => {
      if (!acked) {
        acked = true
        socket.write(CONNACK)
      } else if (chunk[0] === 0xc0) socket.write(PINGRESP)
    })
    socket.on('error', () => undefined)
  }
} else if (mode === 'none') {
  onConnection = (socket) => socket.destroy()
} else {
  console.error(`bare aedes: unknown EDGE_BENCH_SERVER_MODE '${mode}'`)
  process.exit(2)
}

const server = createServer(onConnection)
server.on('error', (err) => {
  console.error(`bare aedes: ${err.message}`)
  process.exit(1)
})
server.listen(port, host, () => {
  const addr = server.address()
  process.stdout.write(`listening ${typeof addr === 'object' && addr !== null ? addr.port : port}\n`)
})

let stopping = false
process.on('SIGTERM', () => {
  if (stopping) return
  stopping = true
  server.close()
  closeBroker(() => process.exit(0))
  // connections in net/parser/none mode keep the server open; exit regardless
  if (mode !== 'aedes') process.exit(0)
})
