// Free TCP ports on the loopback interface.
//
// The port is found by binding to port 0 and closing again, so another process
// could in principle take it before the broker binds it; brokers that fail to
// bind report it and the run fails loudly rather than measuring the wrong thing.
import { createServer } from 'node:net'

/** A TCP port that was free on `host` a moment ago. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))))
    })
  })
}
